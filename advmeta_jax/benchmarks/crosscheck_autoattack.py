r"""Cross-checks `advmeta_jax.attacks`' AutoAttack against torchattacks.

Trains a small CNN on the digits train split (no BatchNorm, so every
example's logits depend on that example only and both libraries' "attack the
remaining points" bookkeeping means the same thing), copies its weights into
a PyTorch module, and measures the robust accuracy of APGD-CE, APGD-T, FAB-T,
Square and the standard AutoAttack in both libraries on the same held-out
images:

  pip install "torch==2.13.0+cpu" && pip install --no-deps torchattacks
  python -m launch.crosscheck_autoattack --eps=24/255 --num_examples=200
  python -m launch.crosscheck_autoattack --norm=l2 --eps=1.5 \
      --num_examples=200      # the L2 attacks against torchattacks' L2

(ε = 24/255: this CNN keeps about 40% accuracy there, so the attacks are
compared where they differ; at 8/255 it keeps 90%. With --norm=l2 every
attack on both sides is its L2 version and --eps an L2 radius.)

Defaults are AutoAttack's standard settings (100 iterations, 5000 Square
queries, all N−1 target classes). torchattacks' own `AutoAttack` defaults to
10 iterations and a rescaled Square schedule; this script sets its members to
the reference's standard values before running it. Prints a table and, with
--out, writes it as JSON. `tests/test_autoattack.py` runs a small version when
torch and torchattacks import.
"""

import json
import time
from typing import Dict, Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from advmeta_jax import attacks
from advmeta_jax import datasets

ATTACK_NAMES = ("apgd-ce", "apgd-t", "fab-t", "square", "square-shared",
                "autoattack")
# torchattacks has one Square: it samples as the reference ("shared").
_TORCH_NAME = {"square-shared": "square"}

# --- the model, in JAX ------------------------------------------------------


def init_small_cnn(key, *, num_classes: int = 5, channels: int = 1,
                   image_size: int = 16, filters=(8, 16)) -> Dict:
  """conv3×3(f0)-ReLU-pool2, conv3×3(f1)-ReLU-pool2, dense; Glorot init."""
  k = jax.random.split(key, 3)
  glorot = jax.nn.initializers.glorot_uniform()
  side = image_size // 4
  return {
      "conv0": glorot(k[0], (3, 3, channels, filters[0])),
      "conv1": glorot(k[1], (3, 3, filters[0], filters[1])),
      "dense": glorot(k[2], (side * side * filters[1], num_classes)),
      "bias": jnp.zeros((num_classes,)),
  }


def small_cnn_logits(params, x):
  """Logits of NHWC images in [0, 1]; examples do not interact."""
  def block(h, kernel):
    h = jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO",
                                                        "NHWC"))
    h = jax.nn.relu(h)
    n, hh, ww, c = h.shape
    return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
  h = block(block(x, params["conv0"]), params["conv1"])
  return h.reshape(h.shape[0], -1) @ params["dense"] + params["bias"]


def train_small_cnn(images, labels, *, steps: int = 300, seed: int = 0,
                    adv_eps: float = 0.0, adv_steps: int = 5):
  """Adam (3e-3, batch 64); with `adv_eps` > 0, PGD adversarial training
  (Madry et al.: `adv_steps` steps of adv_eps/4 from a random start)."""
  params = init_small_cnn(jax.random.key(seed),
                          num_classes=int(labels.max()) + 1,
                          channels=images.shape[-1],
                          image_size=images.shape[1])
  optimizer = optax.adam(3e-3)
  x_all, y_all = jnp.asarray(images), jnp.asarray(labels)

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        small_cnn_logits(p, x), y).mean()

  @jax.jit
  def fit(params, key):
    def step(carry, key):
      params, opt_state = carry
      k_batch, k_attack = jax.random.split(key)
      idx = jax.random.choice(k_batch, x_all.shape[0], (64,), replace=False)
      x, y = x_all[idx], y_all[idx]
      if adv_eps > 0:
        x = jax.lax.stop_gradient(attacks.pgd(
            lambda z: small_cnn_logits(params, z), x, y, eps=adv_eps,
            step_size=adv_eps / 4, num_steps=adv_steps, key=k_attack))
      grads = jax.grad(loss)(params, x, y)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                  jax.random.split(key, steps))
    return params

  return fit(params, jax.random.key(seed + 1))


def digits_problem(*, num_examples: int, train_steps: int, seed: int = 0,
                   adv_eps: float = 0.0):
  """(params, x, y): a small CNN trained on the digits train split but for
  `num_examples` held-out images, which it returns."""
  split = datasets.load("digits", "train")
  images = split.images.astype(np.float32) / 255.0
  labels = split.labels.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(labels))
  held_out, train = order[:num_examples], order[num_examples:]
  params = train_small_cnn(images[train], labels[train], steps=train_steps,
                           seed=seed, adv_eps=adv_eps)
  return params, jnp.asarray(images[held_out]), jnp.asarray(labels[held_out])


# --- the two sides ----------------------------------------------------------


def jax_robust_accuracies(params, x, y, *, eps: float, seed: int = 0,
                          num_steps: int = 100, num_queries: int = 5000,
                          norm: str = "Linf") -> Dict[str, float]:
  """Robust accuracy of each attack run alone, and of the ensemble (the
  ensemble's stage i uses `jax.random.split(key, 4)[i]`, as the single
  attacks here), all in `norm`."""
  key = jax.random.key(seed)
  k = jax.random.split(key, 4)
  common = dict(eps=eps, norm=norm)
  runs = {
      "apgd-ce": lambda f, x, y: attacks.apgd(f, x, y, key=k[0],
                                              num_steps=num_steps, **common),
      "apgd-t": lambda f, x, y: attacks.apgd_t(f, x, y, key=k[1],
                                               num_steps=num_steps, **common),
      "fab-t": lambda f, x, y: attacks.fab(f, x, y, key=k[2],
                                           num_steps=num_steps, **common),
      "square": lambda f, x, y: attacks.square(f, x, y, key=k[3],
                                               num_queries=num_queries,
                                               **common),
      "square-shared": lambda f, x, y: attacks.square(
          f, x, y, key=k[3], num_queries=num_queries, shared_squares=True,
          **common),
      "autoattack": lambda f, x, y: attacks.autoattack(
          f, x, y, key=key, num_steps=num_steps, num_queries=num_queries,
          **common),
  }

  def accuracy(run):
    # Weights and images are arguments, not constants folded by XLA.
    @jax.jit
    def robust(params, x, y):
      logits_fn = lambda z: small_cnn_logits(params, z)
      x_adv = run(logits_fn, x, y)
      return jnp.mean(jnp.argmax(logits_fn(x_adv), -1) == y)
    return float(robust(params, x, y))

  return {name: accuracy(run) for name, run in runs.items()}


def torch_model(params):
  """The same CNN as a `torch.nn.Module` on NCHW images."""
  import torch  # pylint: disable=g-import-not-at-top
  f = torch.nn.functional

  def tensor(a, perm=None):
    a = np.asarray(a, np.float32)
    return torch.nn.Parameter(torch.tensor(np.ascontiguousarray(
        a if perm is None else np.transpose(a, perm))))

  class SmallCNN(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.conv0 = tensor(params["conv0"], (3, 2, 0, 1))   # HWIO -> OIHW
      self.conv1 = tensor(params["conv1"], (3, 2, 0, 1))
      self.dense = tensor(params["dense"], (1, 0))
      self.bias = tensor(params["bias"])

    def forward(self, x):
      for kernel in (self.conv0, self.conv1):
        x = f.max_pool2d(f.relu(f.conv2d(x, kernel, padding=1)), 2)
      x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)   # NHWC order
      return f.linear(x, self.dense, self.bias)

  return SmallCNN().eval()


def torchattacks_standard(model, *, eps: float, num_classes: int,
                          seed: int = 0, num_steps: int = 100,
                          num_queries: int = 5000, norm: str = "Linf"):
  """torchattacks' `AutoAttack` "standard" with the reference's settings:
  its members default to 10 iterations and a rescaled Square schedule, so
  they are set to `num_steps` iterations and `num_queries` queries without
  rescaling."""
  import torchattacks  # pylint: disable=g-import-not-at-top
  ensemble = torchattacks.AutoAttack(model, norm=norm, eps=eps,
                                     version="standard",
                                     n_classes=num_classes, seed=seed)
  members = ensemble._autoattack.attacks  # pylint: disable=protected-access
  for member in members:
    if hasattr(member, "steps"):
      member.steps = num_steps
  members[-1].n_queries = num_queries
  members[-1].rescale_schedule = False
  return ensemble


def torchattacks_robust_accuracies(model, x, y, *, eps: float,
                                   num_classes: int, seed: int = 0,
                                   num_steps: int = 100,
                                   num_queries: int = 5000,
                                   norm: str = "Linf") -> Dict[str, float]:
  """The same attacks with torchattacks (NCHW tensors), standard settings,
  in `norm` ("Linf" or "L2")."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchattacks  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  images = torch.tensor(np.transpose(np.asarray(x), (0, 3, 1, 2)).copy())
  labels = torch.tensor(np.asarray(y), dtype=torch.long)
  common = dict(norm=norm, eps=eps, seed=seed)
  square = lambda: torchattacks.Square(model, n_queries=num_queries,
                                       p_init=0.8, resc_schedule=False,
                                       n_restarts=1, **common)
  apgd = lambda: torchattacks.APGD(model, steps=num_steps, loss="ce",
                                   n_restarts=1, **common)
  apgdt = lambda: torchattacks.APGDT(model, steps=num_steps, n_restarts=1,
                                     n_classes=num_classes, **common)
  fabt = lambda: torchattacks.FAB(model, steps=num_steps, n_restarts=1,
                                  multi_targeted=True, n_classes=num_classes,
                                  **common)
  ensemble = torchattacks_standard(model, eps=eps, num_classes=num_classes,
                                   seed=seed, num_steps=num_steps,
                                   num_queries=num_queries, norm=norm)
  runs = {"apgd-ce": apgd(), "apgd-t": apgdt(), "fab-t": fabt(),
          "square": square(), "autoattack": ensemble}
  out = {}
  for name, attack in runs.items():
    adv = attack(images, labels)
    with torch.no_grad():
      out[name] = float((model(adv).argmax(1) == labels).float().mean())
  return out


def crosscheck(*, eps: float = 24 / 255, num_examples: int = 200,
               train_steps: int = 300, adv_eps: float = 0.0, seed: int = 0,
               num_steps: int = 100, num_queries: int = 5000,
               norm: str = "Linf", out: Optional[str] = None) -> Dict:
  """Runs both sides on one trained model; returns the numbers and timings.

  Returns:
    {"clean", "logits_max_abs_diff", "jax", "torchattacks", "seconds",
     "settings"}: `jax` maps each of `ATTACK_NAMES` to a robust accuracy,
    `torchattacks` the same but "square-shared" (its one Square samples as
    the reference, "shared").
  """
  import torch  # pylint: disable=g-import-not-at-top
  params, x, y = digits_problem(num_examples=num_examples,
                                train_steps=train_steps, seed=seed,
                                adv_eps=adv_eps)
  model = torch_model(params)
  with torch.no_grad():
    torch_logits = model(torch.tensor(
        np.transpose(np.asarray(x), (0, 3, 1, 2)).copy())).numpy()
  jax_logits = np.asarray(small_cnn_logits(params, x))
  num_classes = jax_logits.shape[-1]
  settings = dict(eps=eps, num_steps=num_steps, num_queries=num_queries,
                  norm=attacks.canonical_norm(norm))
  t0 = time.time()
  ours = jax_robust_accuracies(params, x, y, seed=seed, **settings)
  t1 = time.time()
  theirs = torchattacks_robust_accuracies(model, x, y, seed=seed,
                                          num_classes=num_classes, **settings)
  t2 = time.time()
  result = {
      "clean": attacks.attack_accuracy(lambda z: small_cnn_logits(params, z),
                                       x, y),
      "logits_max_abs_diff": float(np.max(np.abs(jax_logits - torch_logits))),
      "jax": ours, "torchattacks": theirs,
      "seconds": {"jax": t1 - t0, "torchattacks": t2 - t1},
      "settings": dict(settings, num_examples=num_examples,
                       train_steps=train_steps, adv_eps=adv_eps, seed=seed),
  }
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=2)
  return result


def format_table(result: Dict) -> str:
  settings = result["settings"]
  lines = [f"{settings.get('norm', 'Linf')}, eps {settings['eps']:.4g}; "
           f"clean accuracy {result['clean']:.3f}; max |logits JAX − torch| "
           f"{result['logits_max_abs_diff']:.2e}",
           "| attack | advmeta_jax | torchattacks | difference |",
           "|---|---|---|---|"]
  for name in ATTACK_NAMES:
    a = result["jax"][name]
    b = result["torchattacks"][_TORCH_NAME.get(name, name)]
    lines.append(f"| {name} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
  s = result["seconds"]
  lines.append(f"time: advmeta_jax {s['jax']:.1f} s (with compilation), "
               f"torchattacks {s['torchattacks']:.1f} s")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """The script's flags (defined when run, not on import: tests import this
  module next to others that define --eps)."""
  flags.DEFINE_enum("norm", "linf", ["linf", "l2"], "Threat model of every "
                    "attack, on both sides.")
  flags.DEFINE_string("eps", "24/255", "The budget: an L-inf eps, or with "
                      "--norm=l2 an L2 radius (e.g. 1.5).")
  flags.DEFINE_integer("num_examples", 200, "Held-out images attacked.")
  flags.DEFINE_integer("train_steps", 300, "Adam steps of the small CNN.")
  flags.DEFINE_string("adv_eps", "0", "PGD adversarial training budget (0: "
                      "standard training).")
  flags.DEFINE_integer("seed", 0, "Seed of the split, training and attacks.")
  flags.DEFINE_integer("num_steps", 100, "APGD and FAB iterations.")
  flags.DEFINE_integer("num_queries", 5000, "Square queries.")
  flags.DEFINE_string("out", None, "Write the numbers as JSON here.")


def main(argv):
  del argv
  norm = attacks.canonical_norm(FLAGS.norm)
  print(format_table(crosscheck(
      eps=attacks.parse_eps(FLAGS.eps, "--eps", norm=norm), norm=norm,
      num_examples=FLAGS.num_examples,
      train_steps=FLAGS.train_steps,
      adv_eps=attacks.parse_eps(FLAGS.adv_eps, "--adv_eps"), seed=FLAGS.seed,
      num_steps=FLAGS.num_steps, num_queries=FLAGS.num_queries,
      out=FLAGS.out)))


if __name__ == "__main__":
  define_flags()
  app.run(main)
