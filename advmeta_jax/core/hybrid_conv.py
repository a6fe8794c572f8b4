"""conv4's 3×3 convolution with every derivative in a form XLA's CPU runs fast.

`conv3x3_hybrid(x, kernel)` computes what `lax.conv_general_dilated` with
SAME padding computes, but chooses, for the convolution and for each of its
derivatives, the formulation that XLA's CPU backend runs fastest on conv4's
shapes (measured, docs/performance.md, "The hybrid convolution"):

* the output, and the input gradient (a convolution of the output gradient
  with the flipped kernel): `lax.conv`, which XLA hands to its fast
  convolution kernels (YNNPACK) in NHWC/HWIO. A layer with fewer than 8 input
  channels (conv0 on RGB) computes its output as patches·matmul instead, in
  cache-sized chunks, where `lax.conv` is slower;
* the kernel gradient Σ_{n,h,w} x[n, h+dy, w+dx, c]·g[n, h, w, f]: the
  patches of the input times the output gradient, one matmul per chunk of
  images whose patches fit in cache (`_CHUNK_BYTES`). Left to autodiff, XLA
  computes it as a convolution with `f01b_i01o->01bf` dimension labels,
  which its CPU backend runs in a slow generic loop inside `lax.scan` /
  `lax.map` bodies (the inner loop, the rounds of tasks) — up to 50× slower
  than the same convolution outside a loop.

Both are `jax.custom_vjp` functions whose backward passes are made of the
two of them (the kernel gradient's own derivatives are convolutions of the
same kind), so gradients of any order — second-order MAML differentiates
the inner gradient — stay in this closed set. Both also carry a
`jax.custom_batching.custom_vmap` rule: images batched over tasks with a
shared kernel fold into the image axis (one convolution); per-task kernels
(the inner loop under `vmap` over tasks) run one task at a time in a
`lax.map`, instead of the grouped convolution XLA's CPU backend is slow at.

Forward-mode differentiation (`jax.jvp`) of these functions is not
supported (custom VJPs); reverse mode of any order is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

_DIMS = ("NHWC", "HWIO", "NHWC")
# Patch bytes per chunk of images in the kernel gradient (and in the matmul
# forward of few-channel layers). Measured on a 2-core AMD EPYC
# (docs/performance.md, "The hybrid convolution"): on conv4's shapes with 75
# images, chunks of 1.5-6 MiB of patches run the kernel gradient up to 6×
# faster than one matmul over all images (42×42×32: 141 → 25 ms).
_CHUNK_BYTES = 6 * 2**20
# Below this many input channels the output is computed as patches·matmul.
_FEW_CHANNELS = 8


def _patches(x: Array) -> Array:
  """`[N, H, W, 9·C]`: the 3×3 SAME neighbourhoods, channel (dy·3+dx)·C+c."""
  n, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate(
      [xp[:, dy:dy + h, dx:dx + w, :] for dy in range(3) for dx in range(3)],
      axis=-1)


def _num_chunks(x: Array) -> int:
  """The fewest chunks (a divisor of N) whose patches fit `_CHUNK_BYTES`."""
  n, h, w, c = x.shape
  per_image = 9 * h * w * c * x.dtype.itemsize
  for m in range(1, n + 1):
    if n % m == 0 and (n // m) * per_image <= _CHUNK_BYTES:
      return m
  return n


def _in_chunks(fn, *arrays: Array) -> Array:
  """`fn` over chunks of the leading (image) axis of `arrays`, in a
  `lax.map`; the chunk count from the first array."""
  m = _num_chunks(arrays[0])
  if m == 1:
    return fn(*arrays)
  n = arrays[0].shape[0]
  split = [a.reshape(m, n // m, *a.shape[1:]) for a in arrays]
  return lax.map(lambda a: fn(*a), tuple(split))


def _flip(kernel: Array) -> Array:
  """The kernel of the input gradient: spatially flipped, I and O swapped."""
  return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def _conv_value(x: Array, kernel: Array) -> Array:
  if x.shape[-1] < _FEW_CHANNELS:
    c = x.shape[-1]
    def matmul(xc):
      return jnp.matmul(_patches(xc), kernel.reshape(9 * c, -1),
                        preferred_element_type=jnp.float32)
    out = _in_chunks(matmul, x)
    return out.reshape(*x.shape[:3], kernel.shape[-1])
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding="SAME",
      dimension_numbers=_DIMS, preferred_element_type=jnp.float32)


def _kernel_grad_value(x: Array, g: Array) -> Array:
  c, f = x.shape[-1], g.shape[-1]
  def matmul(xc, gc):
    return jnp.einsum("nhwk,nhwf->kf", _patches(xc), gc,
                      preferred_element_type=jnp.float32)
  out = _in_chunks(matmul, x, g)
  if out.ndim == 3:
    out = out.sum(0)
  return out.reshape(3, 3, c, f)


def _map_pairs(fn, batched, a: Array, b: Array) -> Array:
  """`fn(a_i, b_i)` for each task i, one task at a time (`lax.map`)."""
  a_batched, b_batched = batched
  if a_batched and b_batched:
    return lax.map(lambda ab: fn(*ab), (a, b))
  if a_batched:
    return lax.map(lambda ai: fn(ai, b), a)
  return lax.map(lambda bi: fn(a, bi), b)


@jax.custom_vjp
@jax.custom_batching.custom_vmap
def _conv(x: Array, kernel: Array) -> Array:
  return _conv_value(x, kernel)


@_conv.def_vmap
def _conv_vmap(axis_size, in_batched, x, kernel):
  x_batched, kernel_batched = in_batched
  if x_batched and not kernel_batched:
    # Shared kernel: the tasks' images are one batch of images.
    out = _conv(x.reshape(-1, *x.shape[2:]), kernel)
    return out.reshape(axis_size, *x.shape[1:4], kernel.shape[-1]), True
  return _map_pairs(_conv, in_batched, x, kernel), True


@jax.custom_vjp
@jax.custom_batching.custom_vmap
def _kernel_grad(x: Array, g: Array) -> Array:
  return _kernel_grad_value(x, g)


@_kernel_grad.def_vmap
def _kernel_grad_vmap(axis_size, in_batched, x, g):
  del axis_size
  return _map_pairs(_kernel_grad, in_batched, x, g), True


def _conv_bwd(res, g):
  x, kernel = res
  g = g.astype(x.dtype)
  dx = _conv(g, _flip(kernel).astype(x.dtype))
  dkernel = _kernel_grad(x, g)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


def _kernel_grad_bwd(res, ct):
  # _kernel_grad is bilinear: its derivative in x is the input gradient of a
  # convolution of g with kernel ct, and in g the convolution of x with ct.
  x, g = res
  ct = ct.astype(x.dtype)
  dx = _conv(g, _flip(ct))
  dg = _conv(x, ct)
  return dx.astype(x.dtype), dg.astype(g.dtype)


def _saving_inputs(fn):
  """The forward rule of a bilinear `fn`: its value, its inputs saved."""
  return lambda a, b: (fn(a, b), (a, b))


_conv.defvjp(_saving_inputs(_conv), _conv_bwd)
_kernel_grad.defvjp(_saving_inputs(_kernel_grad), _kernel_grad_bwd)


def conv3x3_hybrid(x: Array, kernel: Array,
                   compute_dtype: str = "float32") -> Array:
  """3×3 SAME convolution, stride 1 (see the module docstring).

  Args:
    x: `[N, H, W, C]` inputs.
    kernel: `[3, 3, C, F]` weights (HWIO).
    compute_dtype: dtype of the convolutions' inputs; they accumulate in
      float32.

  Returns:
    `[N, H, W, F]` float32 outputs.
  """
  return _conv(x.astype(compute_dtype), kernel.astype(compute_dtype))
