"""The hybrid convolution computes lax.conv's function and its derivatives.

Each derivative of `conv3x3_hybrid` is written by hand (custom VJPs whose
backward passes are hybrid convolutions again) and batched by hand (custom
vmap rules), so each is compared here with `lax.conv` differentiated and
batched by JAX: values, first and second order, under `jit(vmap)` with
per-task and with shared kernels, inside a `lax.scan`, with the kernel
gradient split into several chunks and in one.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax.core import hybrid_conv
from advmeta_jax.core import models
from tests.conftest import optimizations_on

@pytest.fixture(scope="module", autouse=True)
def _optimized():
  """The whole module with XLA's full optimizations (tests/conftest.py)."""
  with optimizations_on():
    yield



def close(got, want, tol=1e-5):
  """Each leaf within `tol` of the reference, relative to its largest entry
  (float32 sums over the images and taps round differently per formulation).
  """
  chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    scale = float(jnp.abs(w).max())
    assert float(jnp.abs(g - w).max()) <= tol * scale, (
        float(jnp.abs(g - w).max()), scale)


def _inputs(channels, tasks=3, images=4, side=6, filters=5):
  kx, kw = jax.random.split(jax.random.key(channels))
  x = jax.random.normal(kx, (tasks, images, side, side, channels))
  w = jax.random.normal(kw, (tasks, 3, 3, channels, filters)) / (
      3 * channels ** 0.5)
  return x, w


def _second_order(conv):
  """One SGD step of the kernel on a loss of (x, w), then a loss at the
  adapted kernel: what second-order MAML differentiates."""
  def outer(x, w):
    inner = lambda w: jnp.sum(jnp.tanh(conv(x, w)) ** 2)
    adapted = w - 0.1 * jax.grad(inner)(w)
    return jnp.sum(jnp.sin(conv(x[::-1], adapted)))
  return outer


@pytest.fixture(params=["one chunk", "chunks"])
def chunking(request, monkeypatch):
  if request.param == "chunks":
    # Patches of one 6×6 image: 9·36·C·4 bytes; this splits 4 images into 2
    # or 4 chunks, the way 75 MiniImageNet images are split.
    monkeypatch.setattr(hybrid_conv, "_CHUNK_BYTES", 9 * 36 * 3 * 4 * 2)
  return request.param


@pytest.mark.parametrize("channels", [3, 8])   # matmul / lax.conv forward
def test_values_and_gradients_of_any_order_are_lax_convs(channels, chunking):
  del chunking
  x, w = _inputs(channels)
  x, w = x[0], w[0]
  close(models.conv3x3_hybrid(x, w), models.conv3x3_xla(x, w))
  for order in (_second_order, lambda c: lambda x, w: jnp.sum(c(x, w) ** 3)):
    want = jax.grad(order(models.conv3x3_xla), argnums=(0, 1))(x, w)
    got = jax.grad(order(models.conv3x3_hybrid), argnums=(0, 1))(x, w)
    close(got, want)
    close(jax.jit(jax.grad(order(models.conv3x3_hybrid),
                           argnums=(0, 1)))(x, w), want)


@pytest.mark.parametrize("per_task_kernels", [True, False])
def test_batched_over_tasks_as_a_loop_over_tasks(per_task_kernels, chunking):
  """Per-task kernels (MAML's inner loop) take the one-task-at-a-time rule,
  a shared kernel (an attack at θ, a metric learner) the folded one."""
  del chunking
  x, w = _inputs(3)
  w = w if per_task_kernels else w[0]
  axes = (0, 0 if per_task_kernels else None)
  kernel = lambda i: w[i] if per_task_kernels else w
  for fn in (_second_order, lambda c: lambda x, w: jnp.sum(c(x, w) ** 3)):
    grads = jax.grad(fn(models.conv3x3_hybrid), argnums=(0, 1))
    want = [jax.grad(fn(models.conv3x3_xla), argnums=(0, 1))(x[i], kernel(i))
            for i in range(x.shape[0])]
    got = jax.jit(jax.vmap(grads, in_axes=axes))(x, w)
    # Input gradients, and the kernel gradient of each task (of the shared
    # kernel: one per task under vmap).
    close(got[0], jnp.stack([g[0] for g in want]))
    close(got[1], jnp.stack([g[1] for g in want]))


def test_inside_a_scan_and_in_bfloat16():
  x, w = _inputs(8)
  x, w = x[0], w[0]
  def steps(conv):
    def fn(x, w):
      body = lambda w, _: (w - 0.05 * jax.grad(
          lambda w: jnp.sum(jnp.tanh(conv(x, w)) ** 2))(w), None)
      return jnp.sum(conv(x, jax.lax.scan(body, w, None, length=3)[0]))
    return fn
  close(jax.jit(jax.grad(steps(models.conv3x3_hybrid), argnums=(0, 1)))(x, w),
        jax.grad(steps(models.conv3x3_xla), argnums=(0, 1))(x, w))
  bf16 = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w, "bfloat16")))
  got = jax.grad(bf16(models.conv3x3_hybrid), argnums=(0, 1))(x, w)
  want = jax.grad(bf16(models.conv3x3_xla), argnums=(0, 1))(x, w)
  assert all(g.dtype == jnp.float32 for g in got)
  for g, v in zip(got, want):   # bfloat16 rounding, ~3 significant digits
    np.testing.assert_allclose(g, v, atol=0.02 * float(jnp.abs(v).max()))


@pytest.mark.parametrize("images,want", [(75, 25), (5, 5), (25, 25), (7, 7),
                                         (1, 1)])
def test_chunks_divide_the_images_and_fit_the_budget(images, want):
  # 42×42×32 float32 patches: 2.0 MiB per image, so 3 images per 6 MiB chunk.
  x = jax.ShapeDtypeStruct((images, 42, 42, 32), jnp.float32)
  m = hybrid_conv._num_chunks(x)
  assert m == want and images % m == 0
