"""The backbones in Flax Linen, with transductive BatchNorm: MAML's conv4,
and the others `--backbone` names (the registry `BACKBONE_REGISTRY`, at the
end of this module; docs/conventions.md, "Backbones"):

    conv4          below (F = --filters)
    conv4_strided  the TAFL authors' strided conv net (`StridedConv4`)
    conv4_64       conv4 with ProtoNet's 64 filters
    conv4_wide     R2-D2's 96-192-384-512 conv4 (`WideConv4`)
    resnet12       MetaOptNet's ResNet-12 (`ResNet12`), 12.4 M parameters

Each is built with a linear head "head" over the N classes or without it
(the embedding, D = `embedding_dim(...)`), and every learner sees it only as
`apply(params, x)` (`make_apply_fn`).

conv4 (Finn et al. 2017; Vinyals et al. 2016): four blocks of
3×3 convolution (F filters, SAME padding) → BatchNorm → ReLU → 2×2 max-pool,
then a linear head over the N classes of a task. F = 32 for
MiniImageNet/CIFAR-FS, 64 for Omniglot. The metric learners (ProtoNet,
Matching Networks) use the same network without the head
(`make_conv4_embedding`): it maps images to their flattened last feature map.

BatchNorm, in one place: it always normalises with the mean and variance of the
batch in front of it (the support set during adaptation, the query set when the
query is classified), per task under `jax.vmap`. There are no running averages,
exactly as in the reference MAML code; this is transductive. The learned scale
and offset are ordinary parameters and are adapted in the inner loop like every
other parameter. The convolutions have no bias: BatchNorm's offset follows
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


_GLOROT_UNIFORM = nn.initializers.glorot_uniform()
# PyTorch's `kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu")` with
# its default slope a = 0: N(0, 2 / (3·3·out channels)), MetaOptNet's ResNet-12.
KAIMING_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out",
                                                          "normal")


class Conv3x3(nn.Module):
  """3×3 SAME convolution without bias (see module docstring)."""
  features: int
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"
  kernel_init: Callable = _GLOROT_UNIFORM

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    conv = {"matmul": conv3x3_matmul, "xla": conv3x3_xla,
            "hybrid": conv3x3_hybrid}[self.conv_impl]
    return conv(x, kernel, self.compute_dtype)


class TransductiveBatchNorm(nn.Module):
  """BatchNorm over (N, H, W) with the statistics of the current batch only."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
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


# --- the wider backbones: R2-D2's conv4 and MetaOptNet's ResNet-12 ----------

LEAKY_RELU_SLOPE = 0.1   # R2-D2's and ResNet-12's leaky ReLU


def leaky_relu(x: Array) -> Array:
  """PyTorch's `LeakyReLU(0.1)`."""
  return jax.nn.leaky_relu(x, LEAKY_RELU_SLOPE)


def max_pool_2x2_stride1(x: Array) -> Array:
  """2×2 max-pool with stride 1, VALID (PyTorch's `MaxPool2d(2, stride=1)`):
  the side shrinks by one. Elementwise maxima of four shifted slices, for the
  reason `max_pool_2x2` gives."""
  return jnp.maximum(jnp.maximum(x[:, :-1, :-1], x[:, :-1, 1:]),
                     jnp.maximum(x[:, 1:, :-1], x[:, 1:, 1:]))


def scaled_channels(reference: Sequence[int], width: float) -> Tuple[int, ...]:
  """The channels of a fixed-width backbone at `width` × its reference
  channels (rounded, at least 1)."""
  return tuple(max(1, int(round(c * width))) for c in reference)


def dropout(key: Array, x: Array, rate) -> Array:
  """Inverted dropout (PyTorch's `F.dropout` in training mode): each
  element is zeroed with probability `rate`, the rest divided by 1 − rate."""
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def dropblock_keep_mask(seeds: Array, block_size: int) -> Array:
  """MetaOptNet's `DropBlock._compute_block_mask` (models/dropblock.py):
  every seed at (i, j) of the `[N, H − b + 1, W − b + 1, C]` seed map drops
  the b×b block of rows i..i+b−1 and columns j..j+b−1 of the `[N, H, W, C]`
  feature map. Returns the keep mask (1 kept, 0 dropped), `[N, H, W, C]`."""
  b = block_size
  padded = jnp.pad(seeds, ((0, 0), (b - 1, b - 1), (b - 1, b - 1), (0, 0)))
  dropped = jax.lax.reduce_window(padded, jnp.zeros((), seeds.dtype),
                                  jax.lax.max, (1, b, b, 1), (1, 1, 1, 1),
                                  "VALID")
  return 1.0 - dropped


def dropblock_gamma(drop_rate: float, block_size: int, feature_size: int,
                    step) -> Array:
  """MetaOptNet's seed probability γ (`BasicBlock.forward`): the drop rate
  rises linearly from 0 to `drop_rate` over the first 40,000 forward calls
  of the block (`num_batches_tracked`, counted from 1), and
  γ = (1 − keep) / b² · s² / (s − b + 1)² for an s×s feature map."""
  keep = jnp.maximum(1.0 - drop_rate / (20 * 2000) * step, 1.0 - drop_rate)
  return ((1.0 - keep) / block_size ** 2 * feature_size ** 2
          / (feature_size - block_size + 1) ** 2)


def drop_block(key: Array, x: Array, *, gamma, block_size: int) -> Array:
  """DropBlock (Ghiasi et al. 2018) as MetaOptNet's `DropBlock.forward` in
  training mode: Bernoulli(γ) seeds on the `[N, H − b + 1, W − b + 1, C]`
  positions where a whole block fits, their blocks dropped
  (`dropblock_keep_mask`), the rest rescaled by (elements / kept elements)
  of the whole batch. Where every element is dropped the reference divides
  by zero; here the count is floored at 1 (the output is then 0)."""
  n, h, w, c = x.shape
  b = min(block_size, h, w)
  seeds = jax.random.bernoulli(key, gamma, (n, h - b + 1, w - b + 1, c))
  mask = dropblock_keep_mask(seeds.astype(x.dtype), b)
  return mask * x * (mask.size / jnp.maximum(jnp.sum(mask), 1.0))


class WideConv4(nn.Module):
  """R2-D2's conv4 (Bertinetto et al. 2019; their code bertinetto/r2d2,
  `fewshots/models/load_model.py`, `RRFeatures` with
  `parameters = [96, 192, 384, 512]`): four blocks of 3×3 convolution
  (padding 1) → BatchNorm → 2×2 max-pool → leaky ReLU 0.1, the pools of
  blocks 1-3 with stride 2 and the pool of block 4 with stride 1; the
  embedding concatenates block 3's output max-pooled 2×2 with stride 1
  (their `pool3`) and block 4's output, both flattened: on 84×84 images
  9·9·384 + 9·9·512 = 72,576 features (their `out_dim` 31104+41472), on
  32×32 3·3·384 + 3·3·512 = 8,064.

  Where it differs from that code: the convolutions have no bias (BatchNorm
  with the batch's statistics removes it; its gradient is 0), weights are
  Glorot-uniform as conv4's, and the dropout after blocks 3 and 4 (their
  `--model.drop`, 0.1 on MiniImageNet, 0.4 on CIFAR-FS) runs only when
  `__call__` gets a `key` (the learners' `apply(params, x)` gives none, so
  they train without it; `drop_rate` defaults to 0).

  Attributes: `num_classes` as `Conv4`; `channels` the four widths;
  `drop_rate` the dropout rate after blocks 3 and 4.
  """
  num_classes: Optional[int]
  channels: Tuple[int, ...] = (96, 192, 384, 512)
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, key: Optional[Array] = None):
    keys = [None] * 4 if key is None else list(jax.random.split(key, 4))
    for i, c in enumerate(self.channels):
      x = Conv3x3(c, self.conv_impl, self.compute_dtype, name=f"conv{i}")(x)
      x = TransductiveBatchNorm(name=f"bn{i}")(x)
      x = max_pool_2x2(x) if i < 3 else max_pool_2x2_stride1(x)
      x = leaky_relu(x)
      if i >= 2 and self.drop_rate > 0 and keys[i] is not None:
        x = dropout(keys[i], x, self.drop_rate)
      if i == 2:
        block3 = max_pool_2x2_stride1(x)
    features = jnp.concatenate([block3.reshape(x.shape[0], -1),
                                x.reshape(x.shape[0], -1)], axis=1)
    return _head(self.num_classes, features)


class ResidualBlock(nn.Module):
  """MetaOptNet's `BasicBlock` (models/ResNet12_embedding.py): three 3×3
  convolutions without bias, each followed by BatchNorm, the first two by a
  leaky ReLU 0.1; the shortcut a 1×1 convolution without bias and BatchNorm;
  their sum through a leaky ReLU and a 2×2 max-pool with stride 2."""
  features: int
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    conv = lambda i: Conv3x3(self.features, self.conv_impl,
                             self.compute_dtype, KAIMING_NORMAL_FAN_OUT,
                             name=f"conv{i}")
    out = x
    for i in range(3):
      out = TransductiveBatchNorm(name=f"bn{i}")(conv(i)(out))
      if i < 2:
        out = leaky_relu(out)
    kernel = self.param("shortcut_kernel", KAIMING_NORMAL_FAN_OUT,
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    shortcut = jnp.matmul(x.astype(self.compute_dtype),
                          kernel[0, 0].astype(self.compute_dtype),
                          preferred_element_type=jnp.float32)
    shortcut = TransductiveBatchNorm(name="shortcut_bn")(shortcut)
    return max_pool_2x2(leaky_relu(out + shortcut))


class ResNet12(nn.Module):
  """MetaOptNet's ResNet-12 (Lee et al. 2019; kjunelee/MetaOptNet,
  models/ResNet12_embedding.py, `resnet12(avg_pool=False, ...)`): four
  `ResidualBlock`s of 64, 160, 320 and 640 channels, the last feature map
  flattened (5·5·640 = 16,000 features on 84×84 images, 2·2·640 = 2,560 on
  32×32); 12,424,320 parameters (MetaOptNet's count; BatchNorm's running
  averages are buffers there, not parameters). Weights as there: PyTorch's
  `kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu")`, BatchNorm
  scale 1 and offset 0.

  Regularization as there, when `__call__` gets a `key`: dropout at
  `drop_rate` after blocks 1 and 2, DropBlock after blocks 3 and 4 with
  blocks of `dropblock_size` (5 on MiniImageNet and tieredImageNet, 2 on
  CIFAR-FS and FC100; MetaOptNet trains with `drop_rate` 0.1) and its linear
  schedule (`dropblock_gamma`, at forward call `step`). The learners'
  `apply(params, x)` passes no key, so they run it as MetaOptNet's `eval()`
  does, without either, and `drop_rate` defaults to 0 (docs/conventions.md).

  Attributes: `num_classes` as `Conv4`; `channels` the four widths.
  """
  num_classes: Optional[int]
  channels: Tuple[int, ...] = (64, 160, 320, 640)
  conv_impl: str = "matmul"
  compute_dtype: str = "float32"
  drop_rate: float = 0.0
  dropblock_size: int = 5

  @nn.compact
  def __call__(self, x, *, key: Optional[Array] = None, step=1):
    keys = [None] * 4 if key is None else list(jax.random.split(key, 4))
    for i, c in enumerate(self.channels):
      x = ResidualBlock(c, self.conv_impl, self.compute_dtype,
                        name=f"block{i}")(x)
      if self.drop_rate > 0 and keys[i] is not None:
        if i < 2:
          x = dropout(keys[i], x, self.drop_rate)
        else:
          gamma = dropblock_gamma(self.drop_rate, self.dropblock_size,
                                  x.shape[1], step)
          x = drop_block(keys[i], x, gamma=gamma,
                         block_size=self.dropblock_size)
    return _head(self.num_classes, x.reshape(x.shape[0], -1))


def _head(num_classes: Optional[int], features: Array) -> Array:
  """The linear head "head" over `num_classes` (ANIL adapts it alone), or
  the features themselves when `num_classes` is None."""
  if num_classes is None:
    return features
  return nn.Dense(num_classes, kernel_init=_GLOROT_UNIFORM,
                  name="head")(features)


def resnet12_num_params(*, channels: Sequence[int] = (64, 160, 320, 640),
                        in_channels: int = 3) -> int:
  """ResNet-12's parameter count by hand: per block of c_in → c channels,
  three 3×3 convolutions 9·c_in·c + 2·9·c², three BatchNorms 3·2c, the
  shortcut's 1×1 convolution c_in·c and its BatchNorm 2c."""
  total, c_in = 0, in_channels
  for c in channels:
    total += 9 * c_in * c + 2 * 9 * c * c + 3 * 2 * c + c_in * c + 2 * c
    c_in = c
  return total


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
  """
  name: str
  description: str
  build: Callable[..., nn.Module]
  embedding_dim: Callable[[int, int, float], int]
  uses_filters: bool
  reference: str


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
WIDE_CONV4_CHANNELS = (96, 192, 384, 512)
RESNET12_CHANNELS = (64, 160, 320, 640)


def _wide_conv4_dim(image_size: int, channels: Sequence[int]) -> int:
  side = image_size // 2 // 2 // 2 - 1      # three pools, then stride-1 pools
  return side * side * (channels[2] + channels[3])


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
    "evan69/MAML-Def-Repo maml/models/conv_net.py (MMAML's ConvModel)"))
register_backbone(Backbone(
    "conv4_64", "conv4 with 64 filters whatever --filters says (x "
    "--backbone_width): ProtoNet's and MetaOptNet's ProtoNetEmbedding.",
    lambda n, f, w, impl, dt: Conv4(
        n, scaled_channels((CONV4_64_FILTERS,), w)[0], impl, dt),
    lambda f, s, w: feature_map_size(s) ** 2 * scaled_channels(
        (CONV4_64_FILTERS,), w)[0], False,
    "Snell et al. 2017; kjunelee/MetaOptNet models/protonet_embedding.py"))
register_backbone(Backbone(
    "conv4_wide", "R2-D2's conv4: 4 x (3x3 conv, BatchNorm, 2x2 max-pool, "
    "leaky ReLU 0.1) with 96-192-384-512 channels (x --backbone_width), the "
    "last pool of stride 1, blocks 3 and 4 concatenated.",
    lambda n, f, w, impl, dt: WideConv4(
        n, scaled_channels(WIDE_CONV4_CHANNELS, w), impl, dt),
    lambda f, s, w: _wide_conv4_dim(s, scaled_channels(WIDE_CONV4_CHANNELS,
                                                       w)), False,
    "bertinetto/r2d2 fewshots/models/load_model.py (RRFeatures)"))
register_backbone(Backbone(
    "resnet12", "MetaOptNet's ResNet-12: 4 residual blocks of three 3x3 "
    "convs (BatchNorm, leaky ReLU 0.1, 1x1-conv shortcut, 2x2 max-pool) with "
    "64-160-320-640 channels (x --backbone_width), flattened.",
    lambda n, f, w, impl, dt: ResNet12(
        n, scaled_channels(RESNET12_CHANNELS, w), impl, dt),
    lambda f, s, w: (feature_map_size(s) ** 2
                     * scaled_channels(RESNET12_CHANNELS, w)[-1]), False,
    "kjunelee/MetaOptNet models/ResNet12_embedding.py"))

# The names registered here (`backbone_names()` also lists later ones).
BACKBONES = backbone_names()


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
