"""TAFL Table 1's adversaries and model against the code the TAFL authors
ran: our C&W-L2, PGD and MI-FGSM at `tafl_table1`'s settings against
advertorch's `CarliniWagnerL2Attack`, `LinfPGDAttack(rand_init=False)` and
`MomentumIterativeAttack`, and the strided conv4 against a PyTorch
transcription of the MMAML `ConvModel`, on the same weights and inputs.

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
from advmeta_jax import experiments
from advmeta_jax.core import models

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


def test_tafl_table1_pgd_and_mi_fgsm_match_advertorch():
  """The PGD and MI-FGSM of `tafl_table1` against advertorch's, as the TAFL
  code builds them (`get_adversary`: eps, nb_iter, advertorch's defaults
  otherwise), on a 5-class linear model where the gradient's sign changes
  along the way."""
  rng = np.random.default_rng(1)
  n, side, classes = 16, 5, 5
  w = rng.normal(size=(side * side, classes)).astype(np.float32)
  x = rng.uniform(size=(n, side, side, 1)).astype(np.float32)
  y = rng.integers(0, classes, n)
  pgd, mi, _, _ = experiments.get("tafl_table1").test_attacks()
  logits = lambda z: z.reshape(z.shape[0], -1) @ w
  wt = torch.from_numpy(w)
  model = lambda z: z.reshape(z.shape[0], -1) @ wt
  theirs = {
      "pgd": advertorch_attacks.LinfPGDAttack(
          model, eps=0.05, nb_iter=10, rand_init=False),
      "mi_fgsm": advertorch_attacks.MomentumIterativeAttack(
          model, eps=0.05, nb_iter=10)}
  for spec in (pgd, mi):
    ours = np.asarray(spec.build()(logits, jnp.asarray(x), jnp.asarray(y)))
    ref = theirs[spec.name].perturb(torch.from_numpy(x),
                                    torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6, err_msg=spec.name)
    assert np.abs(ours - x).max() == pytest.approx(0.05, abs=1e-6)


def test_strided_conv4_matches_the_mmaml_conv_model_in_pytorch():
  """`backbone="conv4_strided"` against the forward pass of MMAML's
  `ConvModel(use_max_pool=False)` (`maml/models/conv_net.py`: F.conv2d of
  stride 2 and padding 1 with bias, F.batch_norm in training mode without
  weight, ReLU, the mean over positions, F.linear), on the same weights."""
  f = torch.nn.functional
  model = models.make_conv4(num_classes=5, filters=4, image_size=84,
                            conv_impl="xla", backbone="conv4_strided")
  import jax  # pylint: disable=g-import-not-at-top
  params = models.init_params(model, jax.random.key(0), (84, 84, 3))
  params = jax.tree.map(lambda p: p + 0.05, params)
  x = np.random.default_rng(2).uniform(size=(10, 84, 84, 3)).astype(
      np.float32)
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
  h = torch.from_numpy(x).permute(0, 3, 1, 2)
  for i in range(4):
    kernel = torch.from_numpy(np.array(params[f"conv{i}"]["kernel"]))
    h = f.conv2d(h, kernel.permute(3, 2, 0, 1),
                 torch.from_numpy(np.array(params[f"conv{i}"]["bias"])),
                 stride=2, padding=1)
    h = f.relu(f.batch_norm(h, torch.zeros(h.shape[1]),
                            torch.ones(h.shape[1]), training=True))
  assert h.shape[-2:] == (6, 6)
  theirs = f.linear(h.mean(dim=(2, 3)),
                    torch.from_numpy(np.array(params["head"]["kernel"])).T,
                    torch.from_numpy(np.array(params["head"]["bias"])))
  np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-5)
