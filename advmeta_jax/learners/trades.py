"""The TRADES objective of R-MAML, and its attack: signed steps on the KL.

R-MAML ("On Fast Adversarial Robustness Adaptation in Model-Agnostic
Meta-Learning", Wang et al., ICLR 2021, arXiv:2102.10454) puts a TRADES
robustness term ("Theoretically Principled Trade-off between Robustness and
Accuracy", Zhang et al. 2019, arXiv:1901.08573) in the meta-update only: the
inner loop adapts to the clean support, and the per-task meta-loss is

    L(θ', Q) + λ · (1/|X|) Σ_{x ∈ X} KL(f_θ'(x) ‖ f_θ'(A(x))),
    A(X) ≈ argmax_{‖x' − x‖∞ ≤ ε, x' ∈ [0,1]} Σ KL(f_θ'(X) ‖ f_θ'(x')),

with θ' = adapt(θ, S) (after the last inner step), f the class
probabilities, the KL summed over the classes, and X the images the term
covers (`--trades_kl_on`): "support_query" (the default) is the support and
the query as one batch, as R-MAML's code (wangren09/MetaAdv, `MetaFT.py`,
`Meta.forward`) builds it; "query" the query alone, as its paper writes the
regularizer. L(θ', Q) is the cross-entropy of the clean query alone. λ is
`--trades_lambda` (default 3, that code's MiniImageNet `beta`; 0: the clean
loss). It fits every adaptation: `--learner=maml --robust=trades`,
`--learner=r2d2 --robust=trades`, ...

The attack A is `kl_pgd`, R-MAML's code's fast attack: the perturbation δ
starts uniform in [−ε, ε], each step is δ ← clip(δ + a·sign(∇_δ Σ KL), −ε, ε)
with the gradient taken at x' = clip(x + δ, 0, 1), and the result is
clip(x + δ, 0, 1). By default (objective's `AttackDefaults`) it is that
code's: ε = 2/255, one step of a = 1.25·ε (`--train_eps`,
`--train_step_size`, `--train_attack_steps` change them; the training attack
must be PGD). As for every training attack, its result and the state it
attacked are `stop_gradient`ed (`objectives.attack_images`); the
meta-gradient flows through both f_θ'(X) and f_θ'(A(X)) in the KL, as in
TRADES.

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


def kl_pgd(logits_fn: Callable[[Array], Array], x: Array, *, eps, step_size,
           num_steps: int, key: Array) -> Array:
  """Signed steps on a perturbation δ that maximize Σ_n KL(f(x_n) ‖ f(x'_n))
  (TRADES' inner problem), as R-MAML's code takes them.

  δ⁰ ~ U(−ε, ε); δ^{t+1} = clip(δ^t + a·sign(∇_δ Σ KL(p ‖ f(x'(δ^t)))), −ε, ε)
  with x'(δ) = clip(x + δ, 0, 1) and p = softmax(logits_fn(x)) held fixed.
  Returns x'(δ^T), `stop_gradient`ed. Where x + δ leaves [0, 1] the clip
  stops the gradient, so that pixel does not step (the code's in-place clamp
  does the same); inside [0, 1] this is PGD on x' with projection onto the
  ε-ball ∩ [0, 1].

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
  image = lambda delta: jnp.clip(x + delta, 0.0, 1.0)
  grad = jax.grad(lambda d: jnp.sum(kl_per_example(clean,
                                                   logits_fn(image(d)))))

  def step(_, delta):
    delta = delta + step_size * jnp.sign(grad(delta)).astype(x.dtype)
    return jnp.clip(delta, -eps, eps)

  delta = eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  delta = jax.lax.fori_loop(0, num_steps, step, delta)
  return jax.lax.stop_gradient(image(delta))


def kl_attack(attack) -> Callable[..., Array]:
  """`kl_pgd` with the ε, step size and steps of the training `attack`
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


# The images the KL term covers (`--trades_kl_on`).
KL_SETS = ("support_query", "query")


def trades_loss(adaptation: Adaptation, params, task: Task, key: Array, *,
                attack, config):
  """R-MAML's TRADES meta-loss of one task (module docstring).

  Returns:
    `(L(θ', Q) + λ·KL, {"query_accuracy", "adv_query_accuracy",
    "clean_query_loss", "trades_kl"[, "support_loss"]})`; the accuracies are
    the query's (the attacked one from the attacked batch).
  """
  attack_fn = kl_attack(attack)
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  query_logits = adaptation.logits(state, task.query_images)
  clean_loss = losses.cross_entropy(query_logits, task.query_labels)
  if config.trades_kl_on == "support_query":
    images = jnp.concatenate([task.support_images, task.query_images])
    labels = jnp.concatenate([task.support_labels, task.query_labels])
  else:
    images, labels = task.query_images, task.query_labels
  x_adv = objectives.attack_images(attack_fn, adaptation.logits, state,
                                   images, labels, key)
  clean_logits = adaptation.logits(state, images)
  adv_logits = adaptation.logits(state, x_adv)
  kl = kl_per_example(clean_logits, adv_logits).mean()
  n_query = task.query_images.shape[0]
  return clean_loss + config.trades_lambda * kl, {
      "query_accuracy": losses.accuracy(query_logits, task.query_labels),
      "adv_query_accuracy": losses.accuracy(adv_logits[-n_query:],
                                            task.query_labels),
      "clean_query_loss": jax.lax.stop_gradient(clean_loss),
      "trades_kl": jax.lax.stop_gradient(kl),
      **support_metrics(curve)}


# R-MAML's code (MetaFT.py, MiniImageNet): eps = 2/255, one signed step of
# 1.25·eps from a uniform start.
OBJECTIVE = objectives.register(objectives.Objective(
    "trades", trades_loss, default_attack=("pgd", "2/255"),
    attack_defaults=objectives.AttackDefaults(steps=1, step_size=None,
                                              step_of_eps=1.25),
    robust=True, check_attack=check_attack))
