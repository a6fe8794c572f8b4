"""Our C&W-L2 at TAFL Table 1's reference settings against advertorch's
`CarliniWagnerL2Attack`, on the same weights and inputs.

Optional: skipped unless torch and advertorch are installed
(`pip install "torch==2.13.0+cpu"` and `pip install --no-deps advertorch`).
A linear model (no BatchNorm, so no batch coupling) makes the two algorithms
comparable example by example.
"""

import importlib
import sys
import types

import numpy as np
import pytest

import jax.numpy as jnp

from advmeta_jax import attacks

torch = pytest.importorskip("torch")
# advertorch 0.2.3 imports a helper that current torch no longer has (only
# its FAB module uses it) and torchvision's transforms (only its functional
# module uses them; torchvision does not import with the CPU torch here).
_gradcheck = importlib.import_module("torch.autograd.gradcheck")
if not hasattr(_gradcheck, "zero_gradients"):
  _gradcheck.zero_gradients = lambda x: None
try:
  import torchvision  # pylint: disable=g-import-not-at-top,unused-import
except Exception:  # pylint: disable=broad-except
  _stub = types.ModuleType("torchvision")
  _stub.transforms = types.ModuleType("torchvision.transforms")
  _stub.transforms.ToPILImage = _stub.transforms.ToTensor = object
  sys.modules["torchvision"] = _stub
  sys.modules["torchvision.transforms"] = _stub.transforms
advertorch_attacks = pytest.importorskip("advertorch.attacks",
                                         exc_type=ImportError)

REFERENCE = dict(c=1e-3, num_steps=10, binary_search_steps=9,
                 learning_rate=0.01, confidence=0.0, abort_early=True,
                 batch_consistent=False)


def test_reference_cw_matches_advertorch():
  rng = np.random.default_rng(0)
  n, side, classes = 24, 6, 5
  w = rng.normal(size=(side * side, classes)).astype(np.float32)
  b = rng.normal(size=(classes,)).astype(np.float32)
  x = rng.uniform(size=(n, side, side, 1)).astype(np.float32)
  y = np.argmax(x.reshape(n, -1) @ w + b, -1)

  ours = attacks.carlini_wagner_l2(
      lambda z: z.reshape(z.shape[0], -1) @ w + b, jnp.asarray(x),
      jnp.asarray(y), **REFERENCE)
  ours = np.asarray(ours)

  wt, bt = torch.from_numpy(w), torch.from_numpy(b)
  attack = advertorch_attacks.CarliniWagnerL2Attack(
      lambda z: z.reshape(z.shape[0], -1) @ wt + bt, num_classes=classes,
      confidence=0, learning_rate=0.01, binary_search_steps=9,
      max_iterations=10, abort_early=True, initial_const=1e-3)
  theirs = attack.perturb(torch.from_numpy(x), torch.from_numpy(y)).numpy()

  def fooled(z):
    return np.argmax(z.reshape(n, -1) @ w + b, -1) != y

  ours_l2 = np.sqrt(((ours - x) ** 2).reshape(n, -1).sum(-1))
  theirs_l2 = np.sqrt(((theirs - x) ** 2).reshape(n, -1).sum(-1))
  # Measured: the same 6 of 24 examples fooled, L2 norms within 7.4e-5.
  np.testing.assert_array_equal(fooled(ours), fooled(theirs))
  both = fooled(ours)
  assert both.any()
  np.testing.assert_allclose(ours_l2[both], theirs_l2[both], rtol=1e-3)
