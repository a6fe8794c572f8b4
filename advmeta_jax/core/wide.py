"""The wider backbones: R2-D2's conv4 (`WideConv4`, Bertinetto et al.'s
`RRFeatures`) and MetaOptNet's ResNet-12 (`ResNet12`), with their dropout and
DropBlock (off unless called with a key), registered as `--backbone`
`conv4_wide` and `resnet12` (`models.register_backbone`)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from advmeta_jax.core.models import Backbone
from advmeta_jax.core.models import Conv3x3
from advmeta_jax.core.models import GLOROT_UNIFORM
from advmeta_jax.core.models import KAIMING_NORMAL_FAN_OUT
from advmeta_jax.core.models import max_pool_2x2
from advmeta_jax.core.models import TransductiveBatchNorm
from advmeta_jax.core.models import register_backbone
from advmeta_jax.core.models import scaled_channels
from advmeta_jax.core.models import feature_map_size

Array = jax.Array


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
  return nn.Dense(num_classes, kernel_init=GLOROT_UNIFORM,
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


WIDE_CONV4_CHANNELS = (96, 192, 384, 512)
RESNET12_CHANNELS = (64, 160, 320, 640)


def _wide_conv4_dim(image_size: int, channels: Sequence[int]) -> int:
  side = image_size // 2 // 2 // 2 - 1      # three pools, then stride-1 pools
  return side * side * (channels[2] + channels[3])


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
