"""The TRADES objective of R-MAML, and its attack: PGD on the KL term.

R-MAML (Wang, Xu, Liu, Chen, Chen, Chang & Wang, ICLR 2021, "On Fast
Adversarial Robustness Adaptation in Model-Agnostic Meta-Learning") puts a
TRADES robustness term (Zhang et al. 2019) in the meta-update only: the inner
loop adapts to the clean support, and the per-task meta-loss is

    L(θ', Q) + λ · KL(f_θ'(Q) ‖ f_θ'(A(Q))),
    A(Q) = argmax_{‖x' − x_q‖∞ ≤ ε, x' ∈ [0,1]} KL(f_θ'(Q) ‖ f_θ'(x')),

with θ' = adapt(θ, S), f the class probabilities and the KL summed over the
classes and averaged over the queries. λ is `--trades_lambda` (0: the clean
loss). It fits every adaptation: `--learner=maml --robust=trades`,
`--learner=r2d2 --robust=trades`, ...

The attack A is `kl_pgd`: L∞ PGD with the conventions of `attacks.pgd` (a
uniform random start in the ε-ball, which the KL needs: its gradient is 0 at
x' = x; signed steps; projection onto the ε-ball ∩ [0, 1]) that ascends the
KL to the clean prediction instead of the cross-entropy of the labels. Its ε,
step size and steps are those of the configured training attack, which must
be PGD (`--train_eps`, `--train_step_size`, `--train_attack_steps`; default
8/255, 2/255, 7). As for every training attack, its result and the state it
attacked are `stop_gradient`ed (`objectives.attack_images`); the meta-gradient
flows through both f_θ'(Q) and f_θ'(A(Q)) in the KL, as in TRADES.

Importing this module registers the objective "trades" (learners.py does).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp

from advmeta_jax.core import losses
from advmeta_jax.learners import objectives
from advmeta_jax.learners.adaptations import Adaptation
from advmeta_jax.learners.adaptations import support_metrics
from advmeta_jax.core.episodes import Task
from advmeta_jax.errors import ConfigError

Array = jax.Array


def kl_per_example(clean_logits: Array, adv_logits: Array) -> Array:
  """KL(softmax(clean) ‖ softmax(adv)) of each example, `[N]`."""
  log_p = jax.nn.log_softmax(clean_logits, axis=-1)
  log_q = jax.nn.log_softmax(adv_logits, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def _project(x_adv: Array, x: Array, eps: Array) -> Array:
  return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def kl_pgd(logits_fn: Callable[[Array], Array], x: Array, *, eps, step_size,
           num_steps: int, key: Array) -> Array:
  """L∞ PGD that maximizes Σ_n KL(f(x_n) ‖ f(x'_n)) (TRADES' inner problem).

  x⁰ = Π(x + U(−ε, ε)); x^{t+1} = Π(x^t + a·sign(∇ Σ KL(p ‖ f(x^t)))), with
  p = softmax(logits_fn(x)) held fixed and Π the projection onto the ε-ball
  around x intersected with [0, 1]. Returns the last iterate,
  `stop_gradient`ed.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images in [0, 1].
    eps: ε, the L∞ budget.
    step_size: a > 0.
    num_steps: T >= 0 (a Python int).
    key: PRNG key of the random start.
  """
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)
  clean = jax.lax.stop_gradient(logits_fn(x))
  grad = jax.grad(lambda z: jnp.sum(kl_per_example(clean, logits_fn(z))))

  def step(_, x_adv):
    return _project(x_adv + step_size * jnp.sign(grad(x_adv)).astype(x.dtype),
                    x, eps)

  noise = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  x_adv = jax.lax.fori_loop(0, num_steps, step, _project(x + eps * noise, x,
                                                          eps))
  return jax.lax.stop_gradient(x_adv)


def kl_attack(attack) -> Callable[..., Array]:
  """The KL-PGD with the ε, step size and steps of the training `attack`
  (built by `attacks.make_attack("pgd", ...)`), as a training attack
  `(logits_fn, x, y, *, key) -> x_adv` (the labels are not used).

  Raises:
    ConfigError: `attack` is not a PGD attack with those hyperparameters.
  """
  hparams = check_attack(attack)

  def attack_fn(logits_fn, x, y, *, key):
    del y
    return kl_pgd(logits_fn, x, eps=hparams["eps"],
                  step_size=hparams["step_size"],
                  num_steps=int(hparams["num_steps"]), key=key)
  return attack_fn


def check_attack(attack) -> Dict[str, float]:
  """The `{eps, step_size, num_steps}` of a PGD training attack; refuses
  another attack (TRADES ascends the KL by PGD with its budget)."""
  objectives.require_attack(attack, "objective 'trades'")
  hparams: Optional[Dict] = getattr(attack, "hparams", None)
  name = getattr(attack, "__name__", repr(attack))
  if (name != "pgd_attack" or hparams is None
      or not {"eps", "step_size", "num_steps"} <= set(hparams)):
    raise ConfigError(
        f"objective 'trades' runs PGD on its KL term with the training "
        f"attack's eps, step size and steps, so the training attack must be "
        f"pgd (attacks.make_attack('pgd', ...) or --train_attack=pgd); got "
        f"{name}.")
  return hparams


def trades_loss(adaptation: Adaptation, params, task: Task, key: Array, *,
                attack, config):
  """R-MAML's TRADES meta-loss of one task (module docstring).

  Returns:
    `(L(θ', Q) + λ·KL, {"query_accuracy", "adv_query_accuracy",
    "clean_query_loss", "trades_kl"[, "support_loss"]})`.
  """
  attack_fn = kl_attack(attack)
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  xq_adv = objectives.attack_images(attack_fn, adaptation.logits, state,
                                    task.query_images, task.query_labels, key)
  clean_logits = adaptation.logits(state, task.query_images)
  adv_logits = adaptation.logits(state, xq_adv)
  clean_loss = losses.cross_entropy(clean_logits, task.query_labels)
  kl = kl_per_example(clean_logits, adv_logits).mean()
  return clean_loss + config.trades_lambda * kl, {
      "query_accuracy": losses.accuracy(clean_logits, task.query_labels),
      "adv_query_accuracy": losses.accuracy(adv_logits, task.query_labels),
      "clean_query_loss": jax.lax.stop_gradient(clean_loss),
      "trades_kl": jax.lax.stop_gradient(kl),
      **support_metrics(curve)}


OBJECTIVE = objectives.register(objectives.Objective(
    "trades", trades_loss, default_attack=("pgd", "8/255"), robust=True,
    check_attack=check_attack))
