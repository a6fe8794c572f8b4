"""The classifiers of the metric meta-learners, over an embedding of images.

Prototypical Networks (Snell et al. 2017, eqs. 1–2): the prototype of class k
is the mean of the support embeddings of that class, c_k = mean_{i: y_i = k}
f(x_i), and a query x is classified by p(y = k | x) = softmax_k(−‖f(x) − c_k‖²)
(squared Euclidean distance, the paper's choice).

Matching Networks (Vinyals et al. 2016, eqs. 1–2): ŷ = Σ_i a(x̂, x_i) y_i with
the attention a(x̂, x_i) = softmax_i(c(f(x̂), g(x_i))) over the support and c
the cosine similarity. Here f = g = the conv4 embedding: the full-context
embeddings (FCE, a bidirectional LSTM over the support and an attention LSTM
over the query) are not implemented. The class probabilities are returned as
logits `log p(y = k | x)` (computed stably as a log-sum-exp of the log
attention over the support images of class k), so the softmax cross-entropy
of these logits is exactly −log p(y | x) and every attack that takes a logits
function runs on them unchanged.

These are the "adaptation" of a metric learner: building the prototypes (or
the normalized support embeddings) from the support set is a differentiable
function of the embedding's parameters, so the meta-gradient flows through it,
and the gradient of a query attack flows through the query's embedding.

All functions are for ONE task, pure and un-jitted (compose them under
`jit`/`vmap`/`grad`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
# The log-probability of a class with no support image (a finite stand-in for
# log 0, so that no NaN appears in gradients of masked entries).
LOG_ZERO = -1e30


def class_prototypes(embeddings: Array, labels: Array, n_way: int) -> Array:
  """Per-class means of the support embeddings (ProtoNet's c_k, eq. 1).

  Args:
    embeddings: `[S, D]` support embeddings.
    labels: `[S]` integer labels in 0..n_way-1.
    n_way: N, the number of classes.

  Returns:
    `[N, D]` prototypes; a class without support images gets the zero vector.
  """
  onehot = jax.nn.one_hot(labels, n_way, dtype=embeddings.dtype)   # [S, N]
  counts = onehot.sum(axis=0)
  return (onehot.T @ embeddings) / jnp.maximum(counts, 1.0)[:, None]


def squared_distances(x: Array, centers: Array) -> Array:
  """`[Q, N]` squared Euclidean distances ‖x_q − c_n‖² (exact differences,
  not the expanded ‖x‖² − 2x·c + ‖c‖², which loses precision)."""
  return jnp.sum(jnp.square(x[:, None, :] - centers[None, :, :]), axis=-1)


def prototype_logits(query_embeddings: Array, prototypes: Array) -> Array:
  """ProtoNet's logits −‖f(x) − c_k‖² (eq. 2 before the softmax), `[Q, N]`."""
  return -squared_distances(query_embeddings, prototypes)


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """Rows of `x` scaled to unit L2 norm; a zero row stays zero with a finite
  gradient (the norm is floored at `eps` before the square root)."""
  sq_norm = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq_norm, eps * eps))


def cosine_similarities(query_embeddings: Array,
                        support_embeddings: Array) -> Array:
  """`[Q, S]` cosine similarities c(f(x̂), g(x_i))."""
  return l2_normalize(query_embeddings) @ l2_normalize(support_embeddings).T


def matching_attention(query_embeddings: Array,
                       support_embeddings: Array) -> Array:
  """Matching Networks' attention a(x̂, x_i) (eq. 2), `[Q, S]`: a softmax of
  the cosine similarities over the support, so each row sums to one."""
  return jax.nn.softmax(
      cosine_similarities(query_embeddings, support_embeddings), axis=-1)


def log_attention_mass(similarities: Array, support_labels: Array,
                       n_way: int) -> Array:
  """`[Q, N]` log p(y = k | x̂) = log Σ_{i: y_i = k} a(x̂, x_i), with the
  attention a a softmax of `similarities` `[Q, S]` over the support.

  Computed as a log-sum-exp of the log attention over each class's support
  images, so no probability is clipped or underflows; a class without
  support images gets `LOG_ZERO`. `exp` of the result sums to one per query.
  """
  log_attention = jax.nn.log_softmax(similarities, axis=-1)
  member = support_labels[None, :] == jnp.arange(n_way)[:, None]    # [N, S]
  masked = jnp.where(member[None], log_attention[:, None, :], LOG_ZERO)
  return jax.nn.logsumexp(masked, axis=-1)


def matching_log_probs(query_embeddings: Array, support_embeddings: Array,
                       support_labels: Array, n_way: int) -> Array:
  """Matching Networks' `[Q, N]` class log-probabilities (eq. 1) with the
  cosine attention of `matching_attention` (`log_attention_mass`)."""
  return log_attention_mass(
      cosine_similarities(query_embeddings, support_embeddings),
      support_labels, n_way)
