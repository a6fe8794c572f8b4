"""AutoAttack, L∞ and L2 (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks",
ICML, arXiv:2003.01690): `autoattack` and `autoattack_with_report`.

The standard run is APGD-CE, APGD-T, FAB-T and Square, each on the examples
that are still correctly classified; the result per example is the first
successful adversarial example (the worst case over the ensemble). The
package docstring (`advmeta_jax.attacks`) states the conventions.
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.fab import fab
from advmeta_jax.attacks.linf import LOSSES
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import accept_run
from advmeta_jax.attacks.linf import apgd_run
from advmeta_jax.attacks.linf import eot_loss_and_input_gradient
from advmeta_jax.attacks.linf import check_norm_and_eps
from advmeta_jax.attacks.linf import check_target_classes
from advmeta_jax.attacks.linf import hold_inactive
from advmeta_jax.attacks.linf import num_classes_of
from advmeta_jax.attacks.norms import per_example
from advmeta_jax.attacks.norms import apgd_start
from advmeta_jax.attacks.linf import apgd_t
from advmeta_jax.attacks.square import square
from advmeta_jax.errors import ConfigError

VERSIONS = ("standard", "plus", "rand")

# Stage names, as in the reference's `attacks_to_run`.
STANDARD_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
PLUS_STAGES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
RAND_STAGES = ("apgd-ce", "apgd-dlr")
_STAGES = {"standard": STANDARD_STAGES, "plus": PLUS_STAGES,
           "rand": RAND_STAGES}

Stage = Callable[[LogitsFn, Array, Array, Array], Array]


def stages(version: str) -> Tuple[str, ...]:
  """The attacks of a version, in the order they run."""
  if version not in VERSIONS:
    raise ConfigError(f"unknown AutoAttack version {version!r}; choose one "
                      f"of: {', '.join(VERSIONS)}.")
  return _STAGES[version]


def _keyed(logits_fn: Callable) -> Callable[[Array, Array], Array]:
  """`logits_fn` as `(x, key) -> logits`: a randomized model
  `logits_fn(x, key)` as it is, a deterministic `logits_fn(x)` (one
  parameter) ignoring the key."""
  try:
    params = list(inspect.signature(logits_fn).parameters.values())
  except (TypeError, ValueError):   # builtins, some wrapped callables
    return lambda z, k: logits_fn(z, k)
  if len(params) == 1 and params[0].kind in (
      inspect.Parameter.POSITIONAL_ONLY,
      inspect.Parameter.POSITIONAL_OR_KEYWORD):
    return lambda z, k: logits_fn(z)
  return lambda z, k: logits_fn(z, k)


def _apgd_restarts(loss: str, restarts: int, *, eps, num_steps: int,
                   norm: str, eot_iter: int = 1, keyed=None) -> Stage:
  """APGD (CE or DLR) with `restarts` random restarts on the examples not
  fooled yet (the reference's `APGDAttack.perturb`); with `keyed` (a
  randomized model `(x, key) -> logits`), each gradient is averaged over
  `eot_iter` draws of its randomness (EOT). The caller passes the keyed
  model with the examples of earlier stages held where `logits_fn` holds
  them (`keyed=` at the call), so that the gradient sees the batch that is
  scored."""
  def attack(logits_fn, x, y, key, keyed=keyed):
    eps_x = jnp.asarray(eps, x.dtype)
    robust = jnp.argmax(logits_fn(x), axis=-1) == y
    x_adv = x
    # One run uses `key` itself, so the stage equals `apgd(..., key=key)`.
    keys = [key] if restarts == 1 else list(jax.random.split(key, restarts))
    for k in keys:
      held = hold_inactive(logits_fn, robust, x_adv)
      gradient = None
      if keyed is not None:
        held_keyed = hold_inactive(keyed, robust, x_adv)
        eot_key = jax.random.fold_in(k, 1)
        gradient = lambda z, i, f=held_keyed, e=eot_key: (
            eot_loss_and_input_gradient(f, LOSSES[loss], z, y,
                                         jax.random.fold_in(e, i), eot_iter))
      x_run, fooled = apgd_run(held, LOSSES[loss], x, y,
                                apgd_start(norm, k, x, eps_x), eps=eps_x,
                                num_steps=num_steps,
                                loss_and_gradient=gradient, norm=norm)
      # APGD returns its point of highest loss where it failed: keep x there.
      x_run = jnp.where(per_example(fooled, x), x_run, x)
      x_adv, robust = accept_run(logits_fn, y, robust, x_adv, x_run)
    return x_adv
  return attack


def _stage_attacks(version: str, *, eps, num_steps: int, num_queries: int,
                   num_target_classes: int, norm: str, eot_iter: int = 1,
                   keyed=None) -> Dict[str, Stage]:
  restarts = 5 if version == "plus" else 1
  common = dict(eps=eps, num_steps=num_steps, norm=norm)
  eot = dict(eot_iter=eot_iter, keyed=keyed) if version == "rand" else {}
  return {
      "apgd-ce": _apgd_restarts("ce", restarts, **common, **eot),
      "apgd-dlr": _apgd_restarts("dlr", restarts, **common, **eot),
      "apgd-t": lambda f, x, y, k: apgd_t(
          f, x, y, key=k, num_target_classes=num_target_classes, **common),
      "fab-t": lambda f, x, y, k: fab(
          f, x, y, key=k, targeted=True, num_restarts=1,
          num_target_classes=num_target_classes, **common),
      "fab": lambda f, x, y, k: fab(
          f, x, y, key=k, targeted=False, num_restarts=restarts, **common),
      "square": lambda f, x, y, k: square(
          f, x, y, eps=eps, key=k, num_queries=num_queries, p_init=0.8,
          rescale_schedule=False, norm=norm),
  }


def autoattack_with_report(logits_fn: LogitsFn, x: Array, y: Array, *, eps,
                           key: Array, version: str = "standard",
                           num_steps: int = 100, num_queries: int = 5000,
                           num_target_classes: int = 9, eot_iter: int = 20,
                           norm: str = "Linf"
                           ) -> Tuple[Array, Dict[str, Dict[str, Array]]]:
  """AutoAttack with a report of robust accuracy after each attack.

  Versions (the reference's `set_version`; the same stages for L∞ and L2,
  `norm` selecting every member's L2 version: APGD's L2 step and
  projection, FAB's L2 projection, Square's L2 windows):
    "standard": APGD-CE (1 run), APGD-T (T = min(`num_target_classes`,
      classes − 1) targets, 1 run each), FAB-T (T targets, 1 run each),
      Square (`num_queries` queries, p_init = 0.8, unscaled schedule).
    "plus": APGD-CE and APGD-DLR (5 restarts each), FAB (untargeted, 5
      restarts), Square, APGD-T, FAB-T.
    "rand", for randomized models: APGD-CE and APGD-DLR (1 run each), every
      gradient averaged over `eot_iter` (20) draws of the model's randomness
      (EOT). `logits_fn` is then called as `logits_fn(x, key)` with a fresh
      key per draw (a deterministic `logits_fn(x)` is accepted too: every
      draw is the same); the ensemble's bookkeeping uses one fixed draw.
  `num_steps` is the iteration count of every APGD and FAB run (100 in the
  reference; smaller values only for tests and quick looks).

  Each attack runs on the examples still correctly classified (a mask: the
  batch keeps its static shape); the others are held in the attacked batch at
  their adversarial example (or at `x` if misclassified from the start), and
  a stage whose mask is empty is skipped (`lax.cond`; under `vmap` both
  branches run). An example counts as fooled when misclassified in the batch
  assembled after a run, and keeps the first adversarial example found. The
  returned batch holds those and `x` for the robust examples.

  Batch coupling (conv4's transductive BatchNorm): every run attacks the
  remaining examples jointly in one batch with the finished ones at their
  adversarial points, which is what the model sees. Logits of one example
  still depend on the others, so an example fooled at one stage can be
  classified correctly again once later stages move the rest of the batch
  (or once the robust ones are reset to `x` at the end): the report gives
  both the ensemble's bookkeeping (`robust`, `accuracy`, monotone, the
  reference's numbers) and the accuracy of the returned batch re-evaluated
  (`reevaluated`). Without batch coupling the two agree and every stage is
  the reference's algorithm on the remaining points.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits
      (at least 3 classes: APGD-T and APGD-DLR use the DLR loss).
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1], or the L2 radius.
    key: PRNG key; stage i uses `jax.random.split(key, len(stages))[i]`.
    version: "standard" or "plus".
    num_steps: APGD / FAB iterations per run (a Python int; 100).
    num_queries: Square's queries (a Python int; 5000).
    num_target_classes: targets of APGD-T and FAB-T before capping (9).
    eot_iter: EOT draws per gradient of the "rand" version (20; a Python
      int; unused by the others).
    norm: "Linf" or "L2" (any case).

  Returns:
    (x_adv, report): `report["robust"][name]` is the `[N]` mask of examples
    still robust after stage `name` ("clean" first, then `stages(version)`),
    `report["accuracy"][name]` its mean, and `report["reevaluated"]` the
    accuracy of `logits_fn` on the returned `x_adv`.

  Raises:
    ConfigError: a hyperparameter out of range, an unknown version, or
      fewer than 3 classes.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  names = stages(version)
  num_steps = check_steps(num_steps)
  num_queries = check_steps(num_queries, "num_queries")
  num_target_classes = check_target_classes(num_target_classes)
  eot_iter = check_steps(eot_iter, "eot_iter")
  if key is None:
    raise ConfigError("autoattack needs a PRNG key: pass "
                      "key=jax.random.key(...).")
  keyed = None
  if version == "rand":
    keyed = _keyed(logits_fn)
    draw = jax.random.fold_in(key, 0x5EED)   # the bookkeeping's one draw
    logits_fn = lambda z: keyed(z, draw)
  num_classes = num_classes_of(logits_fn, x)
  if num_classes < 3:
    raise ConfigError(f"autoattack needs at least 3 classes (APGD-T's DLR "
                      f"loss), the model has {num_classes}.")
  attacks = _stage_attacks(version, eps=eps, num_steps=num_steps,
                           num_queries=num_queries,
                           num_target_classes=num_target_classes,
                           norm=norm, eot_iter=eot_iter, keyed=keyed)
  robust = jnp.argmax(logits_fn(x), axis=-1) == y
  x_adv = x
  masks: Dict[str, Array] = {"clean": robust}
  for name, k in zip(names, jax.random.split(key, len(names))):
    def run(carry, attack=attacks[name], k=k):
      x_adv, robust = carry
      held = hold_inactive(logits_fn, robust, x_adv)
      extra = {}
      if keyed is not None:   # the EOT gradient's model, held as `held` is
        extra["keyed"] = hold_inactive(keyed, robust, x_adv)
      return accept_run(logits_fn, y, robust, x_adv,
                        attack(held, x, y, k, **extra))
    x_adv, robust = jax.lax.cond(jnp.any(robust), run, lambda c: c,
                                 (x_adv, robust))
    masks[name] = robust
  report = {
      "robust": masks,
      "accuracy": {name: jnp.mean(m.astype(jnp.float32))
                   for name, m in masks.items()},
      "reevaluated": jnp.mean(
          (jnp.argmax(logits_fn(x_adv), axis=-1) == y).astype(jnp.float32)),
  }
  return x_adv, report


def autoattack(logits_fn: LogitsFn, x: Array, y: Array, *, eps, key: Array,
               version: str = "standard", num_steps: int = 100,
               num_queries: int = 5000, num_target_classes: int = 9,
               eot_iter: int = 20, norm: str = "Linf") -> Array:
  """AutoAttack (Croce & Hein 2020), L∞ or L2: `autoattack_with_report`
  without the report, in the uniform attack signature.

  Returns:
    `x_adv`: per example the first successful adversarial example of
    APGD-CE, APGD-T, FAB-T, Square (standard version), or `x` where all
    failed.
  """
  x_adv, _ = autoattack_with_report(
      logits_fn, x, y, eps=eps, key=key, version=version,
      num_steps=num_steps, num_queries=num_queries,
      num_target_classes=num_target_classes, eot_iter=eot_iter, norm=norm)
  return x_adv


def version_of(stage_names) -> Tuple[str, ...]:
  """The stages, in the order they ran, of the version whose report has
  `stage_names` (plus and rand both run APGD-DLR; only plus runs Square)."""
  names = set(stage_names)
  version = ("standard" if "apgd-dlr" not in names
             else "plus" if "square" in names else "rand")
  return stages(version)


def robust_accuracies(report) -> Dict[str, float]:
  """`report["accuracy"]` as floats, "clean" first and then the stages in the
  order they ran (`jit` returns dicts with sorted keys)."""
  accuracy = report["accuracy"]
  order = ("clean",) + version_of(accuracy)
  return {name: float(accuracy[name]) for name in order}


__all__ = ["STANDARD_STAGES", "PLUS_STAGES", "RAND_STAGES", "VERSIONS",
           "autoattack", "autoattack_with_report", "robust_accuracies",
           "stages", "version_of"]
