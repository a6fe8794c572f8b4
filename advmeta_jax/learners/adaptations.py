"""Adaptations: how a learner turns a support set into a classifier.

An `Adaptation` is the learner as the objectives, the meta-test protocol and
the test-time attacks see it, so they run unchanged on gradient-based
learners (θ' = adapt(θ, S), MAML's inner loop) and on metric learners
(class prototypes or the attention over the support embeddings, built from S
in one function, with no inner loop).

Six kinds are registered (`KINDS`), each built from a model function and a
run's config (`Kind.build(apply_fn, config)`):

    gradient   MAML's SGD steps on the support loss (the backbone with its
               head)
    head       ANIL's SGD steps on the head only (the backbone with its head)
    prototype  Prototypical Networks (the backbone's embedding, no head)
    matching   Matching Networks (the backbone's embedding, no head); with
               --fce=adml or vinyals, full context embeddings (fce.py)
    ridge      R2-D2's closed-form ridge regression (the backbone's embedding
               and the head's learned scale (and offset); r2d2.py)
    svm        MetaOptNet's Crammer–Singer SVM, its dual QP solved and
               differentiated per task (the backbone's embedding and the
               head's learned scale; svm.py)

Every kind runs on every backbone (`--backbone`, models.BACKBONE_REGISTRY):
the model is built by `models.make_conv4` / `make_conv4_embedding` with the
run's backbone and seen only through `apply(params, x)`.

Who is attacked: a query attack targets the adapted classifier
(`Adaptation.logits` at the adapted state); a support attack targets the
classifier before adaptation (`Adaptation.initial_logits`, at the
meta-initialization θ). For a metric learner that is the classifier built
from the clean support: the attack perturbs the support images as inputs to
it, and does not differentiate through the building of the classifier (for
R2-D2, through the ridge solve).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax

from advmeta_jax.learners import maml
from advmeta_jax.core import models
from advmeta_jax.learners import heads
from advmeta_jax.learners import r2d2
from advmeta_jax.learners import svm
from advmeta_jax.errors import ConfigError

Array = jax.Array


class Adaptation(NamedTuple):
  """A learner's classifier built from a support set.

  Attributes:
    adapt: `(params, images, labels, *, num_steps, track_fn=None) ->
      (state, curve)`: the adapted classifier `state` from a support set, and
      `curve`, a dict of `[num_steps]` arrays holding `track_fn(state)` after
      each step (`{}` when `track_fn` is None or there are no steps).
      `num_steps` is the number of inner steps (ignored by learners without
      an inner loop, which return their single state's `track_fn` as a
      `[1]` curve). The gradient adaptation also takes `inner_lr=` (ADML's
      α1 on the adversarial support).
    logits: `(state, images) -> logits`: the adapted classifier. A query
      attack is an attack on `lambda x: logits(state, x)` (the adapted model).
    initial_logits: `(params, support_images, support_labels, images) ->
      logits`: the model before adaptation, the target of a support attack
      (the meta-initialization).
  """
  adapt: Callable[..., Tuple[Any, Dict[str, Array]]]
  logits: Callable[[Any, Array], Array]
  initial_logits: Callable[[Any, Array, Array, Array], Array]


@functools.lru_cache(maxsize=None)
def gradient_adaptation(apply_fn, *, inner_lr: float, first_order: bool = False,
                        remat: bool = False,
                        grad_clip: float = 0.0) -> Adaptation:
  """MAML's adaptation: SGD steps of size `inner_lr` on the support loss
  (each gradient element clipped to ±`grad_clip` when it is > 0).

  Cached on what it depends on (model, α, first-order, remat, clip), so every
  MAML-style learner of one architecture shares one `Adaptation` and its
  compiled meta-test functions.
  """
  default_lr = inner_lr

  def adapt(params, images, labels, *, num_steps, track_fn=None,
            inner_lr=None):
    return maml.adapt(apply_fn, params, images, labels,
                      inner_lr=default_lr if inner_lr is None else inner_lr,
                      num_steps=num_steps, first_order=first_order,
                      remat=remat, track_fn=track_fn, grad_clip=grad_clip)

  def initial_logits(params, support_images, support_labels, images):
    del support_images, support_labels
    return apply_fn(params, images)

  return Adaptation(adapt, apply_fn, initial_logits)


# The parameters ANIL adapts (every backbone's linear head "head",
# models.py); the rest is the body, fixed in the inner loop.
HEAD = "head"


@functools.lru_cache(maxsize=None)
def head_adaptation(apply_fn, *, inner_lr: float, first_order: bool = False,
                    remat: bool = False, grad_clip: float = 0.0) -> Adaptation:
  """ANIL's adaptation (Raghu et al. 2020, "Rapid Learning or Feature
  Reuse?"): MAML's SGD steps of size `inner_lr` on the support loss, taken
  on the head `params["head"]` only; the body (every other parameter) stays
  at θ. The meta-gradient reaches the body through the head's inner
  gradients (second-order, unless `first_order`) and through the query
  features. The adapted state is the full parameter dict with the adapted
  head, so `logits` is `apply_fn` as for MAML."""
  default_lr = inner_lr

  def adapt(params, images, labels, *, num_steps, track_fn=None,
            inner_lr=None):
    body = {k: v for k, v in params.items() if k != HEAD}
    whole = lambda head: {**body, HEAD: head}
    head, curve = maml.adapt(
        lambda head, x: apply_fn(whole(head), x), params[HEAD], images,
        labels, inner_lr=default_lr if inner_lr is None else inner_lr,
        num_steps=num_steps, first_order=first_order, remat=remat,
        track_fn=None if track_fn is None else lambda h: track_fn(whole(h)),
        grad_clip=grad_clip)
    return whole(head), curve

  def initial_logits(params, support_images, support_labels, images):
    del support_images, support_labels
    return apply_fn(params, images)

  return Adaptation(adapt, apply_fn, initial_logits)


class PrototypeState(NamedTuple):
  """ProtoNet adapted to a support set: the embedding's parameters and the
  `[N, D]` class prototypes."""
  params: Any
  prototypes: Array


class MatchingState(NamedTuple):
  """Matching Networks adapted to a support set: the embedding's parameters,
  the `[S, D]` support embeddings and their `[S]` labels."""
  params: Any
  support_embeddings: Array
  support_labels: Array


class SvmState(NamedTuple):
  """MetaOptNet's SVM adapted to a support set: the parameters (embedding
  and the head's scale), the `[S, D]` support embeddings and the `[S, N]`
  dual solution α."""
  params: Any
  support_embeddings: Array
  alpha: Array


class RidgeState(NamedTuple):
  """R2-D2 adapted to a support set: the parameters (embedding and the
  head's scalars) and the ridge-regression weights W (`[D, N]`, or
  `[D + 1, N]` with the bias row of the bertinetto head)."""
  params: Any
  weights: Array


def _metric_adaptation(build: Callable[[Any, Array, Array], Any],
                       logits: Callable[[Any, Array], Array]) -> Adaptation:
  """An `Adaptation` whose adaptation is one function of the support.

  There is no inner loop: `num_steps` is ignored and the curve is the single
  point `track_fn(state)` (`[1]` arrays). The classifier "before adaptation"
  (`initial_logits`, the target of a support attack) is the classifier built
  from the given clean support at the meta-parameters, which is the same as
  the adapted one: a metric learner has no other.
  """
  def adapt(params, images, labels, *, num_steps, track_fn=None):
    del num_steps
    state = build(params, images, labels)
    curve = ({} if track_fn is None
             else {k: v[None] for k, v in track_fn(state).items()})
    return state, curve

  def initial_logits(params, support_images, support_labels, images):
    return logits(build(params, support_images, support_labels), images)

  return Adaptation(adapt, logits, initial_logits)


@functools.lru_cache(maxsize=None)
def prototype_adaptation(embed, *, n_way: int) -> Adaptation:
  """Prototypical Networks (Snell et al. 2017): prototypes from the support,
  logits −‖f(x) − c_k‖² (heads.py). `embed` is the embedding f."""
  def build(params, images, labels):
    return PrototypeState(params, heads.class_prototypes(
        embed(params, images), labels, n_way))

  def logits(state, images):
    return heads.prototype_logits(embed(state.params, images),
                                   state.prototypes)

  return _metric_adaptation(build, logits)


@functools.lru_cache(maxsize=None)
def matching_adaptation(embed, *, n_way: int) -> Adaptation:
  """Matching Networks (Vinyals et al. 2016) without FCE: cosine attention
  over the support embeddings; logits log p(y = k | x) (heads.py). `embed`
  is the embedding f = g."""
  def build(params, images, labels):
    return MatchingState(params, embed(params, images), labels)

  def logits(state, images):
    return heads.matching_log_probs(embed(state.params, images),
                                     state.support_embeddings,
                                     state.support_labels, n_way)

  return _metric_adaptation(build, logits)


@functools.lru_cache(maxsize=None)
def ridge_adaptation(embed, *, n_way: int,
                     head: str = r2d2.DEFAULT_HEAD) -> Adaptation:
  """R2-D2 (Bertinetto et al. 2019): ridge regression from the support
  embeddings X to their one-hot labels Y in closed form (Woodbury form, an
  (N·K)×(N·K) solve), with the `head` of r2d2.py: "metaoptnet" (λ = 50,
  logits s·f(x)W) or "bertinetto" (a ones column, X and Y divided by √(N·K),
  λ = 50, logits s·(f(x)w + b) + c). `embed` is the embedding f of an
  `R2D2` model, whose parameters also hold s (and c)."""
  spec = r2d2.get_head(head)

  def build(params, images, labels):
    return RidgeState(params, r2d2.head_weights(
        spec, embed(params, images), jax.nn.one_hot(labels, n_way)))

  def logits(state, images):
    scale, bias = r2d2.scalars(state.params)
    return r2d2.head_logits(spec, embed(state.params, images), state.weights,
                            scale, bias)

  return _metric_adaptation(build, logits)


@functools.lru_cache(maxsize=None)
def svm_adaptation(embed, *, n_way: int) -> Adaptation:
  """MetaOptNet (Lee et al. 2019): a Crammer–Singer multi-class SVM fitted
  to the support embeddings through its dual QP (C = 0.1), solved and
  differentiated as svm.py says; logits s·Σ_i α_i^m ⟨f(x_i), f(x)⟩ with the
  learned scale s of an `R2D2` model's "ridge" scalars (MetaOptNet's
  `ClassificationHead` scale, from 1). `embed` is that model's embedding."""
  def build(params, images, labels):
    support = embed(params, images)
    return SvmState(params, support,
                    svm.crammer_singer_dual(support, labels, n_way))

  def logits(state, images):
    scale, _ = r2d2.scalars(state.params)
    return svm.svm_logits(embed(state.params, images),
                          state.support_embeddings, state.alpha, scale)

  return _metric_adaptation(build, logits)


@functools.lru_cache(maxsize=None)
def matching_fce_adaptation(embed, context_fn, *, n_way: int,
                            variant: str) -> Adaptation:
  """Matching Networks with full context embeddings (fce.py): the support
  and query embeddings pass through `context_fn` before the attention;
  `variant` "adml" uses the support-normalized similarity of the
  implementation ADML cites, "vinyals" the cosine."""
  from advmeta_jax.learners import fce  # pylint: disable=g-import-not-at-top  (flax LSTMs)
  similarity = (fce.support_normalized_similarities if variant == "adml"
                else fce.cosine_similarities)

  def build(params, images, labels):
    return MatchingState(params, embed(params, images), labels)

  def logits(state, images):
    support_ctx, query_ctx = context_fn(state.params, state.support_embeddings,
                                        embed(state.params, images))
    return heads.log_attention_mass(similarity(query_ctx, support_ctx),
                                     state.support_labels, n_way)

  return _metric_adaptation(build, logits)


def _matching(embed, config) -> Adaptation:
  if config.model.fce == "none":
    return matching_adaptation(embed, n_way=config.data.n_way)
  from advmeta_jax.learners import fce  # pylint: disable=g-import-not-at-top
  size = config.data.image_size or fce.default_image_size(config.data.dataset)
  return matching_fce_adaptation(
      embed, fce.make_context_fn(fce.model_for_config(config, size)),
      n_way=config.data.n_way, variant=config.model.fce)


def _conv4_kwargs(config, image_size: int) -> Dict[str, Any]:
  return dict(filters=config.model.filters,
              conv_impl=config.loop.conv_impl, image_size=image_size,
              compute_dtype=config.model.compute_dtype,
              backbone=config.model.backbone,
              width=config.model.backbone_width)


def _classifier_model(config, image_size: int):
  """The backbone with its linear head "head" over the N classes."""
  return models.make_conv4(num_classes=config.data.n_way,
                           **_conv4_kwargs(config, image_size))


def _embedding_model(config, image_size: int):
  """The backbone without its head: the embedding of a metric learner."""
  return models.make_conv4_embedding(**_conv4_kwargs(config, image_size))


def _matching_model(config, image_size: int):
  if config.model.fce == "none":
    return _embedding_model(config, image_size)
  from advmeta_jax.learners import fce  # pylint: disable=g-import-not-at-top
  return fce.model_for_config(config, image_size)


def _ridge_model(config, image_size: int):
  return r2d2.make_r2d2(head=config.meta.r2d2_head,
                        dataset=config.data.dataset,
                        **_conv4_kwargs(config, image_size))


def _svm_model(config, image_size: int):
  """The embedding and MetaOptNet's learned scale (from 1, no offset): the
  model of R2-D2's metaoptnet head."""
  return r2d2.make_r2d2(head=r2d2.DEFAULT_HEAD, dataset=config.data.dataset,
                        **_conv4_kwargs(config, image_size))


def _gradient(build_fn):
  return lambda apply_fn, config: build_fn(
      apply_fn, inner_lr=config.meta.inner_lr,
      first_order=config.meta.first_order, remat=config.loop.remat,
      grad_clip=config.meta.inner_grad_clip)


class Kind(NamedTuple):
  """A registered adaptation: its name, how a run's config builds its model
  and the adaptation over that model's function, and whether the model is
  conv4's embedding without a head (`metric`), and whether the adaptation
  leaves the body at θ (`fixed_body`). Both read the config with its
  `auto` speed settings resolved (config/autotune.py).

  Attributes:
    name: the registry name.
    build: `(apply_fn, config) -> Adaptation`.
    make_model: `(config, image_size) -> flax module` (conv4, its embedding,
      FCE Matching Networks or R2-D2's model).
    metric: the model outputs embeddings, not N logits.
    fixed_body: the adaptation never changes the body (every parameter but
      the head): a metric learner's (no inner loop) and ANIL's (an inner
      loop on the head only). Its BatchNorms see the support and the query
      once each, at θ, so `--batchnorm=running` applies (learners.registry
      `check_batchnorm`). False (the default, as for MAML): the inner loop
      moves the body.
  """
  name: str
  build: Callable[[Callable, Any], Adaptation]
  make_model: Callable[[Any, int], Any] = _classifier_model
  metric: bool = False
  fixed_body: bool = False


KINDS: Dict[str, Kind] = {
    "gradient": Kind("gradient", _gradient(gradient_adaptation)),
    "head": Kind("head", _gradient(head_adaptation), fixed_body=True),
    "prototype": Kind("prototype", lambda embed, config: prototype_adaptation(
        embed, n_way=config.data.n_way), _embedding_model, metric=True,
                      fixed_body=True),
    "matching": Kind("matching", _matching, _matching_model, metric=True,
                     fixed_body=True),
    "ridge": Kind("ridge", lambda embed, config: ridge_adaptation(
        embed, n_way=config.data.n_way, head=config.meta.r2d2_head),
                  _ridge_model, metric=True, fixed_body=True),
    "svm": Kind("svm", lambda embed, config: svm_adaptation(
        embed, n_way=config.data.n_way), _svm_model, metric=True,
                fixed_body=True),
}


def get(name: str) -> Kind:
  """The adaptation kind `name`; a clear error for unknown names."""
  if name not in KINDS:
    raise ConfigError(f"unknown adaptation {name!r}; choose one of: "
                      f"{', '.join(KINDS)}.")
  return KINDS[name]


def register(kind: Kind) -> Kind:
  """Adds an adaptation kind (a new way to build a classifier from a
  support set); returns it."""
  KINDS[kind.name] = kind
  return kind


def support_metrics(curve: Dict[str, Array]) -> Dict[str, Array]:
  """The support loss before adaptation, where the adaptation reports one
  (gradient learners; a metric learner has no support loss)."""
  if "support_loss" in curve:
    return {"support_loss": curve["support_loss"][0]}
  return {}

