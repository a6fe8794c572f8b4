"""The backbones in Flax Linen, with transductive BatchNorm: MAML's conv4,
and the others `--backbone` names (the registry `BACKBONE_REGISTRY`, at the
end of this module; docs/conventions.md, "Backbones"):

    conv4          below (F = --filters)
    conv4_strided  the TAFL authors' strided conv net (`StridedConv4`)
    conv4_64       conv4 with ProtoNet's 64 filters
    conv4_wide     R2-D2's 96-192-384-512 conv4 (`wide.WideConv4`)
    resnet12       MetaOptNet's ResNet-12 (`wide.ResNet12`), 12.4 M parameters
                   (both in wide.py, which registers them)

Each is built with a linear head "head" over the N classes or without it
(the embedding, D = `embedding_dim(...)`), and every learner sees it only as
`apply(params, x)` (`make_apply_fn`).

conv4 (Finn et al. 2017; Vinyals et al. 2016): four blocks of
3×3 convolution (F filters, SAME padding) → BatchNorm → ReLU → 2×2 max-pool,
then a linear head over the N classes of a task. F = 32 for
MiniImageNet/CIFAR-FS, 64 for Omniglot. The metric learners (ProtoNet,
Matching Networks) use the same network without the head
(`make_conv4_embedding`): it maps images to their flattened last feature map.

BatchNorm, in one place: it normalises with the mean and variance of the
batch in front of it (the support set during adaptation, the query set when the
query is classified), per task under `jax.vmap`, exactly as in the reference
MAML code; this is transductive. With `--batchnorm=running` the meta-test
normalises with running averages kept beside the parameters instead
(`TransductiveBatchNorm`, `make_batch_stats_fn`, `with_running_stats`;
docs/conventions.md). The learned scale
and offset are ordinary parameters: MAML's inner loop adapts them like every
other body parameter (ANIL's adapts only the head). The convolutions have no bias: BatchNorm's offset follows
them, so a bias would be a parameter with an exactly zero gradient.

Convolution is available in three formulations behind one API (`conv_impl`):
  "matmul": pad, gather the nine 3×3 shifts, one matmul with the [9·C, F]
      kernel. Under `jax.vmap` over tasks (per-task weights in the inner loop)
      this becomes a batched matmul. Measured on a 2-core CPU it is 8-13× faster
      than "xla" for a second-order MAML step (docs/performance.md).
  "xla": `lax.conv_general_dilated`. Under `vmap` with per-task weights XLA
      lowers it to a grouped convolution, slow on the CPU backend; inside a
      `while` loop (`lax.scan`, `lax.map`) XLA's CPU backend leaves its kernel
      gradient in a slow layout. The usual choice on a GPU or TPU.
  "hybrid": `hybrid_conv.conv3x3_hybrid`: `lax.conv` for the output and the
      input gradient, the kernel gradient as patches·matmul over cache-sized
      chunks of images, every derivative (of any order) one of these through
      custom VJPs, per-task kernels under `vmap` one task at a time. The
      fastest on the CPU (docs/performance.md, "The hybrid convolution").
All three compute the same function (tested).

`compute_dtype="bfloat16"` runs the convolutions with bfloat16 inputs and
float32 accumulation (parameters, BatchNorm, the head and the outputs stay
float32): half the memory for the saved patches and, on CPUs with AMX or
AVX-512 BF16 and on GPUs/TPUs, faster matmuls. It changes results at the
level of bfloat16 rounding (~3 significant digits).

Params are a plain pytree: `{"conv0": {"kernel"}, "bn0": {"scale", "bias"}, …,
"head": {"kernel", "bias"}}` (no "head" for the embedding).
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from advmeta_jax.errors import ConfigError
from advmeta_jax.core.hybrid_conv import conv3x3_hybrid
# `--batchnorm`, the running averages' names, start, update and merge
# (re-exported here beside the BatchNorm that uses them).
from advmeta_jax.core.batchnorm import BATCH_STATS
from advmeta_jax.core.batchnorm import BATCHNORM_MODES  # pylint: disable=unused-import
from advmeta_jax.core.batchnorm import init_running_stats  # pylint: disable=unused-import
from advmeta_jax.core.batchnorm import RUNNING_MEAN
from advmeta_jax.core.batchnorm import RUNNING_VAR
from advmeta_jax.core.batchnorm import update_running_stats  # pylint: disable=unused-import
from advmeta_jax.core.batchnorm import with_running_stats  # pylint: disable=unused-import

CONV_IMPLS = ("matmul", "xla", "hybrid")
COMPUTE_DTYPES = ("float32", "bfloat16")
Array = jax.Array


def conv3x3_matmul(x: Array, kernel: Array,
                   compute_dtype: str = "float32") -> Array:
  """3×3 SAME convolution, stride 1, as nine shifted slices and one matmul.

  Args:
    x: `[N, H, W, C]` inputs.
    kernel: `[3, 3, C, F]` weights (HWIO, as `lax.conv` with "NHWC", "HWIO").
    compute_dtype: dtype of the matmul's inputs; it accumulates in float32.

  Returns:
    `[N, H, W, F]` float32 outputs.
  """
  x, kernel = x.astype(compute_dtype), kernel.astype(compute_dtype)
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate(
      [xp[:, dy:dy + h, dx:dx + w, :] for dy in range(3) for dx in range(3)],
      axis=-1)  # [N, H, W, 9·C], channel index = (dy·3 + dx)·C + c
  return jnp.matmul(patches, kernel.reshape(9 * c, -1),
                    preferred_element_type=jnp.float32)


def conv3x3_xla(x: Array, kernel: Array,
                compute_dtype: str = "float32") -> Array:
  """3×3 SAME convolution, stride 1, with `lax.conv_general_dilated`."""
  return jax.lax.conv_general_dilated(
      x.astype(compute_dtype), kernel.astype(compute_dtype),
      window_strides=(1, 1), padding="SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=jnp.float32)


def max_pool_2x2(x: Array) -> Array:
  """2×2 max-pool, stride 2, VALID (odd trailing rows/columns are dropped).

  Written as the elementwise maximum of the four pixels of each window (a
  reshape, then `jnp.maximum`), so that its gradient and the gradient of its
  gradient (second-order MAML) are plain elementwise selects. Not as a
  `max` reduction over the window axes: on jax 0.10.2 XLA's algebraic
  simplifier miscompiles the jitted gradient of that reduction under `vmap`
  (input gradients of conv4 with kernels shared by the vmapped tasks, as in
  a batched attack or a metric learner's meta-gradient, came out 0.5-1.2
  off in relative terms; tests/test_models.py). At exact ties between
  positive pixels of a window the two spread the gradient differently (both
  are subgradients; after a ReLU, tied zeros get no gradient either way).
  """
  n, h, w, c = x.shape
  h2, w2 = h // 2, w // 2
  x = x[:, :2 * h2, :2 * w2, :].reshape(n, h2, 2, w2, 2, c)
  return jnp.maximum(jnp.maximum(x[:, :, 0, :, 0], x[:, :, 0, :, 1]),
                     jnp.maximum(x[:, :, 1, :, 0], x[:, :, 1, :, 1]))


GLOROT_UNIFORM = nn.initializers.glorot_uniform()
# PyTorch's `kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu")` with
# its default slope a = 0: N(0, 2 / (3·3·out channels)), MetaOptNet's ResNet-12.
KAIMING_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out",
                                                          "normal")


class Conv3x3(nn.Module):
  """3×3 SAME convolution without bias (see module docstring)."""
  features: int
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"
  kernel_init: Callable = GLOROT_UNIFORM

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    conv = {"matmul": conv3x3_matmul, "xla": conv3x3_xla,
            "hybrid": conv3x3_hybrid}[self.conv_impl]
    return conv(x, kernel, self.compute_dtype)


class TransductiveBatchNorm(nn.Module):
  """BatchNorm over (N, H, W) with the statistics of the current batch only,
  unless its parameters hold running averages (`RUNNING_MEAN`,
  `RUNNING_VAR`, put there by `with_running_stats` for the meta-test of a
  `--batchnorm=running` run): then it normalizes with them, as PyTorch's
  BatchNorm2d in `eval()` mode, and each image independently of the others.

  With the collection `BATCH_STATS` mutable (`make_batch_stats_fn`), a
  batch-statistics pass also writes the batch's mean and unbiased variance
  (what PyTorch's running variance averages) there, `stop_gradient`ed."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    if self.has_variable("params", RUNNING_MEAN):
      mean = self.get_variable("params", RUNNING_MEAN).astype(x.dtype)
      var = self.get_variable("params", RUNNING_VAR).astype(x.dtype)
    else:
      mean = jnp.mean(x, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
      if (self.is_mutable_collection(BATCH_STATS)
          and not self.is_initializing()):
        n = x.shape[0] * x.shape[1] * x.shape[2]
        self.put_variable(BATCH_STATS, "mean", jax.lax.stop_gradient(mean))
        self.put_variable(BATCH_STATS, "var", jax.lax.stop_gradient(
            var * (n / max(n - 1, 1))))
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    return y * scale.astype(x.dtype) + bias.astype(x.dtype)


class Conv4(nn.Module):
  """The MAML conv4 classifier, or the conv4 embedding without its head.

  Attributes:
    num_classes: N, the number of classes of a task (the head's outputs);
      None: no head, the model returns the `[batch, side·side·F]` flattened
      features (the embedding of the metric learners).
    filters: F, filters per convolution.
    conv_impl: "matmul" or "xla" (see module docstring).
    compute_dtype: "float32" or "bfloat16", the convolutions' input dtype.
  """
  num_classes: Optional[int]
  filters: int = 32
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"

  def embed(self, x):
    for i in range(4):
      x = Conv3x3(self.filters, self.conv_impl, self.compute_dtype,
                  name=f"conv{i}")(x)
      x = TransductiveBatchNorm(name=f"bn{i}")(x)
      x = nn.relu(x)
      x = max_pool_2x2(x)
    return x.reshape(x.shape[0], -1)

  @nn.compact
  def __call__(self, x):
    """Maps `[N, H, W, C]` images in [0, 1] to `[N, num_classes]` logits
    (to `[N, D]` features when `num_classes` is None)."""
    features = self.embed(x)
    if self.num_classes is None:
      return features
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform(),
                    name="head")(features)


def strided_conv3x3(x: Array, kernel: Array, conv_impl: str,
                    compute_dtype: str = "float32") -> Array:
  """3×3 convolution, stride 2, one pixel of zero padding on every side
  (PyTorch's `Conv2d(kernel_size=3, stride=2, padding=1)`): output side
  ⌊(side − 1)/2⌋ + 1. "xla" strides in `lax.conv`; "matmul" and "hybrid"
  take every other row and column of their stride-1 SAME output, which is
  the same function (output i is centred on input 2i either way)."""
  if conv_impl == "xla":
    return jax.lax.conv_general_dilated(
        x.astype(compute_dtype), kernel.astype(compute_dtype),
        window_strides=(2, 2), padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=jnp.float32)
  conv = {"matmul": conv3x3_matmul, "hybrid": conv3x3_hybrid}[conv_impl]
  return conv(x, kernel, compute_dtype)[:, ::2, ::2, :]


def batch_norm_no_affine(x: Array, epsilon: float = 1e-5) -> Array:
  """BatchNorm over (N, H, W) with the batch's statistics and no learned
  scale or offset (PyTorch's `BatchNorm2d(affine=False)` in training mode)."""
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
  return (x - mean) * jax.lax.rsqrt(var + epsilon)


class StridedConv4(nn.Module):
  """The strided conv4 of the MMAML code base, which the TAFL authors' code
  (evan69/MAML-Def-Repo, `maml/models/conv_net.py`, `--use-max-pool`
  False) trains: four blocks of 3×3 convolution with stride 2, padding 1
  and a bias, `filters·2^i` channels in block i (32/64/128/256 at F = 32),
  BatchNorm with the batch's statistics and no scale or offset, ReLU; the
  last feature map averaged over its positions; a linear head. Xavier-
  uniform weights, zero biases, as there.

  Attributes: as `Conv4`. Params: `{"conv0": {"kernel", "bias"}, …,
  "conv3", "head"}` (no BatchNorm parameters).
  """
  num_classes: Optional[int]
  filters: int = 32
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    for i in range(4):
      x = _StridedConv(self.filters * 2 ** i, self.conv_impl,
                       self.compute_dtype, name=f"conv{i}")(x)
      x = nn.relu(batch_norm_no_affine(x))
    features = jnp.mean(x, axis=(1, 2))
    if self.num_classes is None:
      return features
    return nn.Dense(self.num_classes,
                    kernel_init=nn.initializers.glorot_uniform(),
                    name="head")(features)


class _StridedConv(nn.Module):
  """`strided_conv3x3` with a bias (zero-initialised)."""
  features: int
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.glorot_uniform(),
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      jnp.float32)
    return strided_conv3x3(x, kernel, self.conv_impl,
                           self.compute_dtype) + bias


def scaled_channels(reference: Sequence[int], width: float) -> Tuple[int, ...]:
  """The channels of a fixed-width backbone at `width` × its reference
  channels (rounded, at least 1)."""
  return tuple(max(1, int(round(c * width))) for c in reference)


class ConvShape(NamedTuple):
  """One of conv4's convolutions: its index, the side of its (square) input
  and its input channels."""
  layer: int
  side: int
  channels: int


def conv4_layer_shapes(image_size: int, channels: int = 3,
                       filters: int = 32) -> List[ConvShape]:
  """The input of each of conv4's four convolutions, for square images of
  side `image_size` with `channels` channels: each block's 2×2 max-pool
  halves the side (rounding down) and the convolutions output `filters`
  channels."""
  shapes, side = [], image_size
  for layer in range(4):
    shapes.append(ConvShape(layer, side, channels if layer == 0 else filters))
    side //= 2
  return shapes


def feature_map_size(image_size: int) -> int:
  """Side of conv4's last feature map for square inputs of side `image_size`."""
  return conv4_layer_shapes(image_size)[-1].side // 2


# --- the backbone registry (`--backbone`) ------------------------------------

class Backbone(NamedTuple):
  """A backbone `--backbone` can name.

  Attributes:
    name: the registry name.
    description: one line for `--help` and the docs.
    build: `(num_classes, filters, width, conv_impl, compute_dtype) ->
      flax module`: the network with its linear head "head" over
      `num_classes`, or without it (the embedding) when `num_classes` is None.
    embedding_dim: `(filters, image_size, width) -> D`, the size of the
      embedding (the head's input) for square images of side `image_size`.
    uses_filters: its channels come from `--filters`; otherwise they are
      fixed by its reference code and `--backbone_width` scales them.
    reference: where its architecture comes from.
    running_stats: its BatchNorm can normalize with running averages at
      meta-test (`--batchnorm=running`; `TransductiveBatchNorm`).
  """
  name: str
  description: str
  build: Callable[..., nn.Module]
  embedding_dim: Callable[[int, int, float], int]
  uses_filters: bool
  reference: str
  running_stats: bool = True


BACKBONE_REGISTRY: Dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
  """Adds a backbone to `--backbone`'s choices; returns it."""
  BACKBONE_REGISTRY[backbone.name] = backbone
  return backbone


def backbone_names() -> Tuple[str, ...]:
  return tuple(BACKBONE_REGISTRY)


def get_backbone(name: str) -> Backbone:
  """The registered backbone `name`.

  Raises:
    ConfigError: an unknown name, with the known ones.
  """
  if name not in BACKBONE_REGISTRY:
    raise ConfigError(f"unknown backbone {name!r}; choose one of "
                      f"{', '.join(BACKBONE_REGISTRY)}.")
  return BACKBONE_REGISTRY[name]


CONV4_64_FILTERS = 64
register_backbone(Backbone(
    "conv4", "4 x (3x3 conv of F filters, BatchNorm, ReLU, 2x2 max-pool), "
    "flattened: the MAML model (F = --filters).",
    lambda n, f, w, impl, dt: Conv4(n, f, impl, dt),
    lambda f, s, w: feature_map_size(s) ** 2 * f, True,
    "Finn et al. 2017 (cbfinn/maml)"))
register_backbone(Backbone(
    "conv4_strided", "4 x (3x3 conv of stride 2 with bias, BatchNorm without "
    "scale or offset, ReLU) with F, 2F, 4F, 8F filters, averaged over "
    "positions: the TAFL authors' code.",
    lambda n, f, w, impl, dt: StridedConv4(n, f, impl, dt),
    lambda f, s, w: 8 * f, True,
    "evan69/MAML-Def-Repo maml/models/conv_net.py (MMAML's ConvModel)",
    running_stats=False))
register_backbone(Backbone(
    "conv4_64", "conv4 with 64 filters whatever --filters says (x "
    "--backbone_width): ProtoNet's and MetaOptNet's ProtoNetEmbedding.",
    lambda n, f, w, impl, dt: Conv4(
        n, scaled_channels((CONV4_64_FILTERS,), w)[0], impl, dt),
    lambda f, s, w: feature_map_size(s) ** 2 * scaled_channels(
        (CONV4_64_FILTERS,), w)[0], False,
    "Snell et al. 2017; kjunelee/MetaOptNet models/protonet_embedding.py"))


def make_conv4(*, num_classes: int, filters: int = 32,
               conv_impl: str = "matmul", image_size: int = 84,
               compute_dtype: str = "float32",
               backbone: str = "conv4", width: float = 1.0) -> nn.Module:
  """Builds the classifier of `backbone` (`BACKBONE_REGISTRY`; conv4 by
  default) with its linear head "head" over `num_classes`, after checking
  its hyperparameters. `filters` sets the channels of the backbones that
  use it (conv4, conv4_strided), `width` scales the reference channels of
  the others.

  Raises:
    ConfigError: a value that is not allowed, with what is allowed.
  """
  if num_classes < 2:
    raise ConfigError(f"num_classes (n_way) must be at least 2, got {num_classes}.")
  _check_trunk(filters, conv_impl, image_size, compute_dtype, backbone, width)
  return get_backbone(backbone).build(num_classes, filters, width, conv_impl,
                                      compute_dtype)


def make_conv4_embedding(*, filters: int = 32, conv_impl: str = "matmul",
                         image_size: int = 84,
                         compute_dtype: str = "float32",
                         backbone: str = "conv4",
                         width: float = 1.0) -> nn.Module:
  """`backbone` without its head: `[N, H, W, C]` images to `[N, D]`
  embeddings, D = `embedding_dim(filters, image_size, backbone, width)`
  (the metric learners' model).

  Raises:
    ConfigError: a value that is not allowed, with what is allowed.
  """
  _check_trunk(filters, conv_impl, image_size, compute_dtype, backbone, width)
  return get_backbone(backbone).build(None, filters, width, conv_impl,
                                      compute_dtype)


def embedding_dim(filters: int, image_size: int,
                  backbone: str = "conv4", width: float = 1.0) -> int:
  """D, the size of `backbone`'s embedding for square images of side
  `image_size` (conv4's flattened last feature map, the strided conv4's 8·F
  channel means, ...)."""
  return get_backbone(backbone).embedding_dim(filters, image_size, width)


def check_backbone_width(backbone: str, width) -> None:
  """Refuses a `--backbone_width` the backbone would ignore, or one that is
  not a positive number.

  Raises:
    ConfigError: naming the value and what is allowed.
  """
  spec = get_backbone(backbone)
  if (isinstance(width, bool) or not isinstance(width, (int, float))
      or not width > 0 or width == float("inf")):
    raise ConfigError(f"backbone_width must be a finite number > 0, got "
                      f"{width!r}.")
  if spec.uses_filters and width != 1:
    scaled = ", ".join(n for n, b in BACKBONE_REGISTRY.items()
                       if not b.uses_filters)
    raise ConfigError(
        f"backbone_width={width!r} scales the fixed-width backbones ({scaled})"
        f"; backbone={backbone!r} takes its channels from --filters: drop "
        "--backbone_width.")


def check_running_batchnorm(backbone: str) -> None:
  """Refuses `--batchnorm=running` for a backbone whose BatchNorm keeps no
  running averages.

  Raises:
    ConfigError: naming the backbones that keep them.
  """
  if not get_backbone(backbone).running_stats:
    able = ", ".join(n for n, b in BACKBONE_REGISTRY.items()
                     if b.running_stats)
    raise ConfigError(
        f"batchnorm='running' applies to the backbones {able}, not "
        f"{backbone!r} (BatchNorm without scale or offset, always of the "
        "batch's statistics): use batchnorm='batch'.")


def _check_trunk(filters: int, conv_impl: str, image_size: int,
                 compute_dtype: str = "float32",
                 backbone: str = "conv4", width: float = 1.0) -> None:
  check_backbone_width(backbone, width)
  if conv_impl not in CONV_IMPLS:
    raise ConfigError(f"unknown conv_impl {conv_impl!r}; choose one of "
                      f"{', '.join(CONV_IMPLS)}.")
  if compute_dtype not in COMPUTE_DTYPES:
    raise ConfigError(f"unknown compute_dtype {compute_dtype!r}; choose one "
                      f"of {', '.join(COMPUTE_DTYPES)}.")
  if filters < 1:
    raise ConfigError(f"filters must be a positive integer, got {filters}.")
  if backbone != "conv4_strided" and feature_map_size(image_size) < 1:
    raise ConfigError(
        f"image_size {image_size} is too small for {backbone}'s four 2x2 "
        "max-pools: it must be at least 16.")


def init_params(model: nn.Module, key: Array, image_shape: Sequence[int]):
  """Initial parameters of `model` for images of shape `[H, W, C]`."""
  x = jnp.zeros((2, *image_shape), jnp.float32)
  return model.init(key, x)["params"]


@functools.lru_cache(maxsize=None)
def make_apply_fn(model: nn.Module) -> Callable[[dict, Array], Array]:
  """Returns the pure function `(params, images) -> logits` of `model`.

  Equal models get the same function object, so jitted functions built on it
  (train steps, meta-test cases) are compiled once per process however many
  learners share the architecture.
  """
  def apply_fn(params, images):
    return model.apply({"params": params}, images)
  return apply_fn


@functools.lru_cache(maxsize=None)
def make_batch_stats_fn(model: nn.Module) -> Callable[[dict, Array], dict]:
  """Returns the pure function `(params, images) -> stats` of `model`: the
  statistics each BatchNorm normalizes `images` with in a training forward
  pass, `{module path...: {"mean": [C], "var": [C]}}` (the variance
  unbiased, as PyTorch's running variance averages it), `stop_gradient`ed.
  Equal models get the same function object (`make_apply_fn`)."""
  def stats_fn(params, images):
    _, variables = model.apply({"params": params}, images,
                               mutable=[BATCH_STATS])
    return variables[BATCH_STATS]
  return stats_fn


def num_params(params) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))


def conv4_num_params(*, num_classes: Optional[int], filters: int,
                     channels: int, image_size: int) -> int:
  """conv4's parameter count, computed by hand (used by the tests); no head
  when `num_classes` is None."""
  convs = 9 * channels * filters + 3 * 9 * filters * filters
  bns = 4 * 2 * filters
  if num_classes is None:
    return convs + bns
  head = embedding_dim(filters, image_size) * num_classes + num_classes
  return convs + bns + head


def conv4_forward_flops(*, image_size: int, channels: int, filters: int,
                        num_classes: int) -> int:
  """Multiply-add FLOPs (2 per MAC) of one image through conv4's convolutions
  and head; BatchNorm, ReLU and pooling (a few % more) are not counted."""
  flops = sum(2 * s.side * s.side * 9 * s.channels * filters
              for s in conv4_layer_shapes(image_size, channels, filters))
  side = feature_map_size(image_size)
  return flops + 2 * side * side * filters * num_classes
