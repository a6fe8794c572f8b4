"""MAML's inner loop: `adapt` a parameter pytree to a task's support set.

θ' = θ − α ∇θ L(θ, S), repeated `num_steps` times (Finn et al. 2017, eq. 1).
The loop is a `lax.scan`, so the step count is not unrolled into the graph.
Second-order by default: the meta-gradient flows through every inner step,
including through ∇θ L (Hessian-vector products). `first_order=True`
`stop_gradient`s the inner gradients (FOMAML). `remat=True` wraps each inner
step in `jax.checkpoint`: the meta-gradient then keeps only the parameters
between steps and recomputes each step's activations when it needs them, so
the memory of the inner loop no longer grows with the images × steps (one
extra forward and backward per step; the same function, tested).

`adapt` is one task; batch it with `jax.vmap` over a leading task axis. It is
not jitted, so callers compose it under their own `jit`/`vmap`/`grad`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import jax

from advmeta_jax.core.losses import accuracy
from advmeta_jax.core.losses import cross_entropy

Array = jax.Array
ApplyFn = Callable[[dict, Array], Array]


def sgd_step(params, grads, lr: float):
  """θ − lr·g over two matching pytrees."""
  return jax.tree.map(lambda p, g: p - lr * g.astype(p.dtype), params, grads)


def adapt(apply_fn: ApplyFn, params, images: Array, labels: Array, *,
          inner_lr: float, num_steps: int, first_order: bool = False,
          remat: bool = False, track_fn: Optional[Callable[[dict], Dict[str, Array]]] = None,
          grad_clip: float = 0.0) -> Tuple[dict, Dict[str, Array]]:
  """Adapts `params` to one task's support set by `num_steps` SGD steps.

  Args:
    apply_fn: `(params, images) -> logits`.
    params: the meta-initialisation θ (a pytree).
    images: support images `[S, H, W, C]`.
    labels: support labels `[S]`.
    inner_lr: α, the inner step size.
    num_steps: number of inner steps (0 returns `params`).
    first_order: stop the gradient through the inner gradients (FOMAML).
    remat: rematerialize each inner step in the backward pass
      (`jax.checkpoint`), trading compute for memory.
    track_fn: optional `adapted_params -> {name: scalar}` evaluated after every
      step (e.g. query loss and accuracy for the meta-test curves).
    grad_clip: c > 0 clips each element of the inner gradient to [−c, c]
      before the step (the TAFL authors' code, `--inner-loop-grad-clip 20`);
      0 leaves it unclipped.

  Returns:
    `(adapted_params, metrics)`, where `metrics` holds `[num_steps]` arrays:
    `support_loss` and `support_accuracy` *before* each step, plus whatever
    `track_fn` returns *after* each step.
  """
  def support_loss(p):
    logits = apply_fn(p, images)
    return cross_entropy(logits, labels), accuracy(logits, labels)

  def step(p, _):
    (loss, acc), grads = jax.value_and_grad(support_loss, has_aux=True)(p)
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    if grad_clip > 0:
      grads = jax.tree.map(lambda g: jax.numpy.clip(g, -grad_clip, grad_clip),
                           grads)
    p = sgd_step(p, grads, inner_lr)
    out = {"support_loss": loss, "support_accuracy": acc}
    if track_fn is not None:
      out.update(track_fn(p))
    return p, out

  if num_steps == 0:
    return params, {}
  return jax.lax.scan(jax.checkpoint(step) if remat else step, params, None,
                      length=num_steps)
