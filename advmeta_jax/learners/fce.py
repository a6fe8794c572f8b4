"""Full context embeddings (FCE) of Matching Networks, in Flax.

Matching Networks (Vinyals et al. 2016, "Matching Networks for One Shot
Learning", arXiv:1606.04080) classify a query by attention over the support
embeddings. Their FCE lets each embedding see the whole support set. Two
variants (`--fce`):

  adml     The implementation the ADML paper cites for its Matching Nets
           baseline (gitabcworld/MatchingNetworks): for each query, the
           conv4 embeddings of the support and of that one query form a
           sequence fed to a bidirectional LSTM (hidden 32 per direction,
           outputs concatenated); the LSTM outputs replace the embeddings.
           The similarity is the dot product divided by the norm of the
           support output only, so the query's norm acts as an inverse
           temperature (`support_normalized_similarities`).
  vinyals  The paper's FCE: g(x_i, S) = h→_i + h←_i + g'(x_i), a bidirectional
           LSTM over the support with a skip connection; f(x̂, S) = attLSTM
           (f'(x̂), g(S), K): K read steps of an LSTM whose input is
           [f'(x̂), r] with r the attention read of g(S) by the last hidden
           state, h_k = ĥ_k + f'(x̂). Similarity: cosine.

Both are trained with log-probabilities in the cross-entropy
(`heads.log_attention_mass`); the cited implementation applies
`F.cross_entropy` to the probabilities themselves, a bug not copied here.
Its LSTM starts from a random state drawn at every call; here it starts from
zeros (a deterministic function of the images, so attacks and the
meta-gradient see one function).

`FCEMatching` is the backbone's embedding (`--backbone`, conv4 by default)
plus the context module: `__call__` returns the embeddings (the `apply_fn` of the learner), and
`make_context_fn` gives `(params, support_emb [S, D], query_emb [Q, D]) ->
(support_ctx [Q, S, D'], query_ctx [Q, D'])`.
"""

from __future__ import annotations

import functools
from typing import Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from advmeta_jax.learners import heads
from advmeta_jax import datasets
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError

Array = jax.Array
FCE_VARIANTS = ("none", "adml", "vinyals")


class ADMLContext(nn.Module):
  """The bidirectional LSTM over support + one query (the ADML variant)."""
  hidden: int = 32

  @nn.compact
  def __call__(self, support: Array, queries: Array) -> Tuple[Array, Array]:
    s = support.shape[0]
    sequences = jnp.concatenate(
        [jnp.broadcast_to(support, (queries.shape[0], *support.shape)),
         queries[:, None]], axis=1)                        # [Q, S + 1, D]
    lstm = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
                            nn.RNN(nn.OptimizedLSTMCell(self.hidden)))
    out = lstm(sequences)                                  # [Q, S + 1, 2h]
    return out[:, :s], out[:, s]


class VinyalsContext(nn.Module):
  """g: bidirectional LSTM with skip connection; f: attention LSTM."""
  steps: int = 5

  @nn.compact
  def __call__(self, support: Array, queries: Array) -> Tuple[Array, Array]:
    d = support.shape[-1]
    g_lstm = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(d)),
                              nn.RNN(nn.OptimizedLSTMCell(d)),
                              merge_fn=lambda a, b: a + b)
    g = g_lstm(support[None])[0] + support                 # [S, D]
    cell = nn.OptimizedLSTMCell(d, name="attention_lstm")
    c = jnp.zeros_like(queries)
    h = jnp.zeros_like(queries)
    for _ in range(self.steps):
      read = jax.nn.softmax(h @ g.T, axis=-1) @ g           # [Q, D]
      (c, h_hat), _ = cell((c, h), jnp.concatenate([queries, read], -1))
      h = h_hat + queries
    return jnp.broadcast_to(g, (queries.shape[0], *g.shape)), h


class FCEMatching(nn.Module):
  """A backbone's embedding (conv4 by default) with Matching Networks' full
  context embeddings; the context module sizes itself from the embedding
  (`models.embedding_dim`), so every backbone fits."""
  variant: str = "adml"
  filters: int = 32
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"
  hidden: int = 32
  steps: int = 5
  backbone: str = "conv4"
  width: float = 1.0

  def setup(self):
    self.embedding = models.get_backbone(self.backbone).build(
        None, self.filters, self.width, self.conv_impl, self.compute_dtype)
    if self.variant == "adml":
      self.context = ADMLContext(self.hidden)
    else:
      self.context = VinyalsContext(self.steps)

  def __call__(self, x: Array) -> Array:
    """`[N, H, W, C]` images to `[N, D]` embeddings."""
    embeddings = self.embedding(x)
    if self.is_initializing():   # create the context module's parameters
      self.context(embeddings[:1], embeddings[:1])
    return embeddings

  def contextualize(self, support: Array, queries: Array):
    return self.context(support, queries)


def make_model(*, variant: str, filters: int, conv_impl: str, image_size: int,
               compute_dtype: str, hidden: int, steps: int,
               backbone: str = "conv4", width: float = 1.0) -> FCEMatching:
  """The FCE Matching Networks model on `backbone`'s embedding, after
  checking its hyperparameters."""
  if variant not in FCE_VARIANTS[1:]:
    raise ConfigError(f"unknown fce variant {variant!r}; choose one of: "
                      f"{', '.join(FCE_VARIANTS[1:])}.")
  models.make_conv4_embedding(filters=filters, conv_impl=conv_impl,
                              image_size=image_size,
                              compute_dtype=compute_dtype, backbone=backbone,
                              width=width)   # checks the trunk
  return FCEMatching(variant, filters, conv_impl, compute_dtype, hidden, steps,
                     backbone, width)


def model_for_config(config, image_size: int) -> FCEMatching:
  """The FCE model of a run's `config.Config` (`model.fce` not "none", its
  `auto` settings resolved) for images of `image_size`."""
  m = config.model
  return make_model(variant=m.fce, filters=m.filters,
                    conv_impl=config.loop.conv_impl,
                    image_size=image_size,
                    compute_dtype=m.compute_dtype, hidden=m.fce_hidden,
                    steps=m.fce_steps, backbone=m.backbone,
                    width=m.backbone_width)


def default_image_size(dataset: str) -> int:
  return datasets.info(dataset).default_image_size


@functools.lru_cache(maxsize=None)
def make_context_fn(model: FCEMatching) -> Callable[..., Tuple[Array, Array]]:
  """`(params, support_emb, query_emb) -> (support_ctx [Q, S, D'],
  query_ctx [Q, D'])` of `model` (one function object per model)."""
  def context_fn(params, support, queries):
    return model.apply({"params": params}, support, queries,
                       method=FCEMatching.contextualize)
  return context_fn


def support_normalized_similarities(query_ctx: Array,
                                    support_ctx: Array) -> Array:
  """`[Q, S]` ⟨f(x̂), g(x_i)⟩ / ‖g(x_i)‖: the cited implementation's
  "cosine", normalized by the support norm only (floored at 1e-10 squared
  norm, as there)."""
  sq_norm = jnp.sum(jnp.square(support_ctx), axis=-1)
  dots = jnp.einsum("qd,qsd->qs", query_ctx, support_ctx)
  return dots * jax.lax.rsqrt(jnp.maximum(sq_norm, 1e-10))


def cosine_similarities(query_ctx: Array, support_ctx: Array) -> Array:
  """`[Q, S]` cosine similarities, a support set per query."""
  return jnp.einsum("qd,qsd->qs", heads.l2_normalize(query_ctx),
                    heads.l2_normalize(support_ctx))
