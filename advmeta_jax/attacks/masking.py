"""Checks that reveal gradient masking: `check_attack_strength`.

The sanity checks of Carlini et al. 2019 ("On Evaluating Adversarial
Robustness", §5): PGD at least as strong as FGSM, more steps never weaker,
APGD at least as strong as PGD, a gradient-free attack (Square) no stronger
than PGD, accuracy non-increasing in ε and ~0 at a large ε. A failed
expectation is reported in a `StrengthReport`, not raised.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from advmeta_jax.attacks.checks import check_positive
from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import pgd_iterations
from advmeta_jax.attacks.linf import apgd
from advmeta_jax.attacks.norms import canonical_norm
from advmeta_jax.attacks.norms import l2_normalize
from advmeta_jax.attacks.norms import per_example
from advmeta_jax.attacks.norms import project
from advmeta_jax.attacks.square import square
from advmeta_jax.attacks.budgets import parse_eps
from advmeta_jax.errors import ConfigError

@dataclasses.dataclass(frozen=True)
class StrengthReport:
  """What `check_attack_strength` measured and which expectations failed.

  Attributes:
    accuracies: accuracy (in [0, 1]) per setting, e.g. "clean", "fgsm",
      "pgd5", "pgd20", "apgd20", "noise", "square1000".
    eps_sweep: `(ε, PGD accuracy)` pairs, ε increasing.
    findings: one sentence per failed expectation, with the numbers; empty when
      everything holds.
    tolerance: the slack used for every comparison.
  """
  accuracies: Dict[str, float]
  eps_sweep: Tuple[Tuple[float, float], ...]
  findings: Tuple[str, ...]
  tolerance: float

  @property
  def ok(self) -> bool:
    return not self.findings

  def __str__(self) -> str:
    lines = ["accuracies: " + ", ".join(
        f"{k} {v:.3f}" for k, v in self.accuracies.items())]
    lines.append("eps sweep: " + ", ".join(
        f"{e:.4f}: {a:.3f}" for e, a in self.eps_sweep))
    lines += [f"FAILED: {f}" for f in self.findings] or [
        "all orderings hold"]
    return "\n".join(lines)


def attack_accuracy(logits_fn: LogitsFn, x_adv: Array, y: Array) -> float:
  """Top-1 accuracy of `logits_fn` on the (adversarial) batch `x_adv`."""
  logits = logits_fn(x_adv)
  return float(jnp.mean(jnp.argmax(logits, axis=-1) == y))


def check_attack_strength(logits_fn: LogitsFn, x: Array, y: Array, *, eps,
                          key: Array, step_size=None,
                          pgd_steps: Tuple[int, int] = (5, 20),
                          eps_multipliers: Sequence[float] = (0.25, 0.5, 1.0,
                                                              2.0, 4.0),
                          large_eps: Optional[float] = None,
                          max_accuracy_at_large_eps: float = 0.05,
                          tolerance: float = 0.02,
                          square_queries: int = 1000,
                          norm: str = "Linf") -> StrengthReport:
  """Sanity checks that reveal gradient masking (Carlini et al. 2019, "On
  Evaluating Adversarial Robustness", §5 and the checklist of its appendix).

  Runs FGSM, PGD with `pgd_steps[0]` and `pgd_steps[1]` steps (same step size
  and random start), APGD-CE with `pgd_steps[1]` steps, the Square Attack
  with `square_queries` queries (1000 by default, schedule rescaled to that
  budget: about 1000 forward passes of the batch and no gradients, a small
  fraction of AutoAttack's 5000), random noise in the ε-ball, and PGD with
  the longer step count over ε × `eps_multipliers` and `large_eps` (step
  size scaled with ε). Expected, each up to `tolerance`:
    * every attack's accuracy ≤ clean accuracy, and PGD ≤ random noise;
    * PGD ≤ FGSM (an iterative attack beats a single step);
    * PGD with more steps ≤ PGD with fewer;
    * APGD ≤ PGD;
    * PGD ≤ Square: a gradient-free attack that beats the gradient-based
      one means the gradients do not point where the loss grows (masked,
      obfuscated, e.g. a quantized or `stop_gradient` input);
    * accuracy non-increasing as ε grows;
    * accuracy ≤ `max_accuracy_at_large_eps` at `large_eps` (an attack with
      a huge budget must win; if not, the gradients do not lead anywhere).
  The slack `tolerance` (default 2 percentage points) absorbs the noise of
  random starts and of transductive BatchNorm, which makes one example's
  logits depend on the perturbations of the others; on 100 examples 0.02 is
  two examples. A failed expectation is a finding, not an exception: report
  it next to the robust accuracy.

  With `norm="L2"` every attack is its L2 version (FGSM is then FGM, one
  normalized step of ε; the noise is `norms.l2_random_start`'s), ε is an
  L2 radius, the sweep is capped at √d instead of 1 and `large_eps`
  defaults to 0.5·√d (the L2 length of a 0.5 change of every value).

  This function runs the attacks itself and returns Python numbers; it is an
  evaluation driver, not meant to be traced. It compiles three times: once
  for APGD, once for Square and once for a PGD loop with traced ε, step size and step count, which
  serves the clean and noise accuracies (0 steps), FGSM (one step of size ε
  from x, identical to `fgsm`), both PGD runs (the same random start as
  `pgd(..., key=k)` for the first half of `jax.random.split(key)`) and the
  sweep.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: the ε under evaluation (a number or a string such as "8/255"; the
      L2 radius with `norm="L2"`).
    key: PRNG key (random starts).
    step_size: PGD step size at ε; default ε/4 (2/255 at ε = 8/255).
    pgd_steps: the (fewer, more) PGD step counts.
    eps_multipliers: the ε sweep, as multiples of ε (capped at 1).
    large_eps: the "unbounded" budget of the last sweep point (default 0.5;
      L2: 0.5·√d).
    max_accuracy_at_large_eps: what accuracy counts as ~0 there.
    tolerance: slack of every comparison, in accuracy units.
    square_queries: Square's query budget (0 skips the Square check).
    norm: "Linf" or "L2" (any case).

  Returns:
    A `StrengthReport`; `report.ok` when every expectation holds.

  Raises:
    ConfigError: ε = 0, bad step counts, or a longer PGD run that cannot cross
      the ball (`pgd_steps[1] * step_size < 2ε`), which would flag a weak
      attack rather than masking.
  """
  norm = canonical_norm(norm)
  diameter = math.sqrt(math.prod(jnp.shape(x)[1:])) if norm == "L2" else 1.0
  eps = parse_eps(eps, norm=norm)
  large_eps = parse_eps(0.5 * diameter if large_eps is None else large_eps,
                        "large_eps", norm=norm)
  few, many = (check_steps(s, "pgd_steps", minimum=1) for s in pgd_steps)
  square_queries = check_steps(square_queries, "square_queries")
  if few >= many:
    raise ConfigError(f"pgd_steps must be (fewer, more) steps, got "
                      f"{tuple(pgd_steps)}.")
  if eps == 0:
    raise ConfigError("check_attack_strength needs eps > 0.")
  step_size = eps / 4 if step_size is None else step_size
  check_positive(step_size, "step_size")
  if many * float(step_size) < 2 * eps:
    raise ConfigError(
        f"PGD with {many} steps of {float(step_size):g} cannot cross the "
        f"ε-ball (eps {eps:g}): the orderings would flag a weak attack, not "
        "masking. Use pgd_steps[1] * step_size >= 2 * eps.")
  ratio = float(step_size) / eps
  k_start, k_apgd = jax.random.split(key)

  x = jnp.asarray(x)
  y = jnp.asarray(y)
  if norm == "L2":   # a uniform direction at a radius U(0, 1)
    k_direction, k_radius = jax.random.split(k_start)
    noise = l2_normalize(jax.random.normal(k_direction, x.shape, x.dtype)) * (
        per_example(jax.random.uniform(k_radius, x.shape[:1], x.dtype), x))
  else:
    noise = jax.random.uniform(k_start, x.shape, x.dtype, -1.0, 1.0)
  no_noise = jnp.zeros_like(x)

  # One compiled function serves all but APGD (see the docstring).
  @jax.jit
  def pgd_accuracy(xs, ys, start_noise, e, a, steps):
    e = e.astype(xs.dtype)
    x_start = project(norm, xs + e * start_noise, xs, e)
    x_adv = pgd_iterations(logits_fn, xs, ys, x_start, eps=e, step_size=a,
                            num_steps=steps, norm=norm)
    return jnp.mean(jnp.argmax(logits_fn(x_adv), axis=-1) == ys)

  @jax.jit
  def square_accuracy(xs, ys, e):
    # Its own key (a fold of APGD's) leaves the other attacks' starts as
    # they were before this check existed.
    x_adv = square(logits_fn, xs, ys, eps=e, key=jax.random.fold_in(k_apgd, 1),
                   num_queries=square_queries, rescale_schedule=True,
                   norm=norm)
    return jnp.mean(jnp.argmax(logits_fn(x_adv), axis=-1) == ys)

  @jax.jit
  def apgd_accuracy(xs, ys, e):
    x_adv = apgd(logits_fn, xs, ys, eps=e, num_steps=many, key=k_apgd,
                 norm=norm)
    return jnp.mean(jnp.argmax(logits_fn(x_adv), axis=-1) == ys)

  def run(start_noise, e, a, steps) -> float:
    return float(pgd_accuracy(x, y, start_noise, jnp.float32(e),
                              jnp.float32(a), jnp.int32(steps)))

  accuracies = {
      "clean": run(no_noise, 0.0, 0.0, 0),
      "noise": run(noise, eps, 0.0, 0),
      "fgsm": run(no_noise, eps, eps, 1),
      f"pgd{few}": run(noise, eps, step_size, few),
      f"pgd{many}": run(noise, eps, step_size, many),
      f"apgd{many}": float(apgd_accuracy(x, y, jnp.float32(eps))),
  }
  if square_queries:
    accuracies[f"square{square_queries}"] = float(
        square_accuracy(x, y, jnp.float32(eps)))
  sweep_eps = sorted({min(diameter, eps * float(m)) for m in eps_multipliers}
                     | {large_eps})
  sweep = [(e, accuracies[f"pgd{many}"] if e == eps else
            run(noise, e, ratio * e, many)) for e in sweep_eps]

  findings: List[str] = []

  def expect_at_most(name_a, a, name_b, b, why):
    if a > b + tolerance:
      findings.append(f"{name_a} accuracy {a:.3f} > {name_b} accuracy "
                      f"{b:.3f} + tolerance {tolerance:.3f}: {why}.")

  clean = accuracies["clean"]
  for name, value in accuracies.items():
    if name not in ("clean", "noise"):
      expect_at_most(name, value, "clean", clean,
                     "an attack should never help the model")
  pgd_many = accuracies[f"pgd{many}"]
  expect_at_most(f"pgd{many}", pgd_many, "noise", accuracies["noise"],
                 "gradient steps should beat random noise in the ball")
  expect_at_most(f"pgd{many}", pgd_many, "fgsm", accuracies["fgsm"],
                 "an iterative attack should beat a single step")
  expect_at_most(f"pgd{many}", pgd_many, f"pgd{few}", accuracies[f"pgd{few}"],
                 "more steps should never weaken the attack")
  expect_at_most(f"apgd{many}", accuracies[f"apgd{many}"], f"pgd{many}",
                 pgd_many, "APGD should be at least as strong as PGD")
  if square_queries:
    expect_at_most(f"pgd{many}", pgd_many, f"square{square_queries}",
                   accuracies[f"square{square_queries}"],
                   "Square (gradient-free) should be no stronger than PGD; "
                   "the gradients may be masked")
  for (e0, a0), (e1, a1) in zip(sweep[:-1], sweep[1:]):
    expect_at_most(f"PGD at eps {e1:.4f}", a1, f"PGD at eps {e0:.4f}", a0,
                   "a larger budget should never weaken the attack")
  e_large, a_large = sweep[-1]
  if a_large > max_accuracy_at_large_eps:
    findings.append(
        f"PGD accuracy at eps {e_large:.4f} is {a_large:.3f} > "
        f"{max_accuracy_at_large_eps:.3f}: an attack with a huge budget should "
        "win; the gradients may be masked.")
  return StrengthReport(accuracies=accuracies, eps_sweep=tuple(sweep),
                        findings=tuple(findings), tolerance=tolerance)


__all__ = ["StrengthReport", "attack_accuracy", "check_attack_strength"]
