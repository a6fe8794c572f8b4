"""conv4: shapes, parameter count, the two convolution formulations, BatchNorm."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError


@pytest.mark.parametrize("size,channels,filters,side", [
    (84, 3, 32, 5), (32, 3, 32, 2), (28, 1, 64, 1), (16, 1, 8, 1)])
def test_output_shape_and_parameter_count(size, channels, filters, side):
  model = models.make_conv4(num_classes=5, filters=filters, image_size=size)
  params = jax.jit(lambda k: models.init_params(
      model, k, (size, size, channels)))(jax.random.key(0))
  # Hand count: 3x3 convs without bias, BN scale+offset, linear head.
  expected = (9 * channels * filters + 3 * 9 * filters * filters
              + 4 * 2 * filters + side * side * filters * 5 + 5)
  assert models.num_params(params) == expected
  assert models.conv4_num_params(num_classes=5, filters=filters,
                                 channels=channels, image_size=size) == expected
  assert params["head"]["kernel"].shape == (side * side * filters, 5)
  logits = jax.eval_shape(models.make_apply_fn(model), params,
                          jnp.zeros((7, size, size, channels)))
  assert logits.shape == (7, 5)


def test_matmul_and_xla_convolutions_compute_the_same_function():
  x = jax.random.uniform(jax.random.key(1), (6, 20, 20, 3))
  kernel = jax.random.normal(jax.random.key(2), (3, 3, 3, 8))
  np.testing.assert_allclose(models.conv3x3_matmul(x, kernel),
                             models.conv3x3_xla(x, kernel), atol=1e-5)
  fast = models.make_conv4(num_classes=5, filters=8, conv_impl="matmul")
  ref = models.make_conv4(num_classes=5, filters=8, conv_impl="xla")
  params = models.init_params(fast, jax.random.key(0), (20, 20, 3))
  loss = lambda m: lambda p: jnp.sum(jnp.sin(models.make_apply_fn(m)(p, x)))
  np.testing.assert_allclose(loss(fast)(params), loss(ref)(params), atol=1e-4)
  g_fast, g_ref = jax.grad(loss(fast))(params), jax.grad(loss(ref))(params)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_max_pool_matches_reduce_window_and_drops_odd_edges():
  x = jax.random.normal(jax.random.key(3), (2, 5, 7, 3))
  ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                              (1, 2, 2, 1), "VALID")
  np.testing.assert_array_equal(models.max_pool_2x2(x), ref)
  # Its gradient goes to each window's maximum.
  g = jax.grad(lambda x: jnp.sum(models.max_pool_2x2(x)))(x)
  assert float(g.sum()) == 2 * 2 * 3 * 3
  np.testing.assert_array_equal(jnp.where(g > 0, x, -jnp.inf)[:, :4, :6]
                                .reshape(2, 2, 2, 3, 2, 3).max((2, 4)), ref)


def _cross_entropy(logits, labels):
  return jnp.mean(jax.nn.logsumexp(logits, -1)
                  - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])


def test_jitted_gradients_under_vmap_are_those_of_a_loop_over_tasks(
    optimized):
  """The regression test of a miscompiled max-pool gradient (a `max`
  reduction over the window axes; XLA's algebraic simplifier, jax 0.10.2):
  under `jit(vmap)` over tasks, conv4's input gradients and the gradient of
  kernels shared by the tasks were 0.5-1.2 off (the batched attacks, the
  metric learners; both formulations), and with per-task kernels (MAML's
  inner loop) the second-order gradient through lax.conv was 0.3-0.5 off.
  Each is compared here with a loop over the tasks, where nothing is
  batched, with XLA's optimizations on (the `optimized` fixture)."""
  del optimized
  images = jax.random.uniform(jax.random.key(1), (2, 6, 16, 16, 3))
  labels = jnp.arange(6) % 3
  close = functools.partial(chex.assert_trees_all_close, rtol=1e-4,
                            atol=1e-6)
  loop = lambda fn: lambda p: (fn(p, images[0]) + fn(p, images[1])) / 2
  # The hybrid convolution's values and derivatives of any order under
  # jit(vmap) are checked against lax.conv in tests/test_hybrid_conv.py.
  for conv_impl in ("matmul", "xla"):
    model = models.make_conv4(num_classes=3, filters=4, conv_impl=conv_impl,
                              image_size=16)
    apply_fn = models.make_apply_fn(model)
    params = models.init_params(model, jax.random.key(0), (16, 16, 3))
    loss = lambda p, x, f=apply_fn: _cross_entropy(f(p, x), labels)
    batch = lambda fn: lambda p: jnp.mean(jax.vmap(fn, (None, 0))(p, images))
    if conv_impl != "xla":
      # Input gradients, kernels shared by the tasks (a batched attack).
      input_grad = jax.grad(loss, argnums=1)
      close(jax.jit(jax.vmap(input_grad, (None, 0)))(params, images),
            jnp.stack([input_grad(params, x) for x in images]))
      # The gradient of shared kernels (a metric learner's meta-gradient).
      close(jax.jit(jax.grad(batch(loss)))(params), jax.grad(loop(loss))(
          params))
    if conv_impl != "matmul":
      # Second order through one SGD step of per-task kernels (MAML).
      adapted = lambda p, x: jax.tree.map(
          lambda a, g: a - 0.1 * g, p, jax.grad(loss)(p, x))
      outer = lambda p, x: loss(adapted(p, x), x[::-1])
      close(jax.jit(jax.grad(batch(outer)))(params), jax.grad(loop(outer))(
          params))


def test_batchnorm_uses_the_statistics_of_the_batch_in_front_of_it():
  bn = models.TransductiveBatchNorm()
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(4), (8, 4, 4, 5))
  params = bn.init(jax.random.key(0), x)
  assert set(params) == {"params"}          # no running averages anywhere
  y = bn.apply(params, x)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
  # Another batch is normalised by its own statistics, not the first one's.
  y2 = bn.apply(params, 10.0 + x)
  np.testing.assert_allclose(y2, y, atol=1e-4)


def test_jit_and_eager_agree():
  model = models.make_conv4(num_classes=5, filters=8, image_size=16)
  params = models.init_params(model, jax.random.key(0), (16, 16, 1))
  apply_fn = models.make_apply_fn(model)
  x = jax.random.uniform(jax.random.key(5), (4, 16, 16, 1))
  np.testing.assert_allclose(jax.jit(apply_fn)(params, x), apply_fn(params, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(conv_impl="cudnn"), "unknown conv_impl 'cudnn'; choose one of"),
    (dict(compute_dtype="float16"),
     "unknown compute_dtype .float16.; choose one of float32, bfloat16"),
    (dict(image_size=8), "image_size 8 is too small"),
    (dict(num_classes=1), "at least 2, got 1"),
    (dict(filters=0), "positive integer, got 0"),
    (dict(backbone="resnet50"), "unknown backbone 'resnet50'; choose one of "
     "conv4, conv4_strided"),
])
def test_bad_model_hyperparameters_are_refused_clearly(kwargs, message):
  args = dict(num_classes=5, filters=8, image_size=16)
  args.update(kwargs)
  with pytest.raises(ConfigError, match=message):
    models.make_conv4(**args)


def test_bfloat16_compute_is_close_and_keeps_float32_parameters_and_outputs():
  f32 = models.make_conv4(num_classes=5, filters=8, image_size=16)
  bf16 = models.make_conv4(num_classes=5, filters=8, image_size=16,
                           compute_dtype="bfloat16")
  params = models.init_params(f32, jax.random.key(0), (16, 16, 3))
  chex.assert_trees_all_equal_shapes_and_dtypes(
      params, models.init_params(bf16, jax.random.key(0), (16, 16, 3)))
  x = jax.random.uniform(jax.random.key(1), (10, 16, 16, 3))
  ref = jax.jit(models.make_apply_fn(f32))(params, x)
  for impl in models.CONV_IMPLS:
    model = models.make_conv4(num_classes=5, filters=8, image_size=16,
                              conv_impl=impl, compute_dtype="bfloat16")
    out = jax.jit(models.make_apply_fn(model))(params, x)
    assert out.dtype == jnp.float32
    # bfloat16 keeps ~3 significant digits; BatchNorm renormalizes each layer.
    np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.abs(ref).max()))
    grads = jax.jit(jax.grad(
        lambda p, m=model: models.make_apply_fn(m)(p, x).sum()))(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def _strided_reference(params, x):
  """The MMAML/TAFL-code ConvModel with `use_max_pool=False` in numpy, loop
  by loop: conv 3×3, stride 2, padding 1, with bias; BatchNorm over the
  batch without scale or offset (eps 1e-5); ReLU; the mean over positions;
  the linear head."""
  x = np.asarray(x, np.float64)
  for i in range(4):
    kernel = np.asarray(params[f"conv{i}"]["kernel"], np.float64)
    bias = np.asarray(params[f"conv{i}"]["bias"], np.float64)
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = np.zeros((n, ho, wo, kernel.shape[-1]))
    for r in range(ho):
      for c in range(wo):
        patch = xp[:, 2 * r:2 * r + 3, 2 * c:2 * c + 3, :]
        out[:, r, c] = np.einsum("nijc,ijcf->nf", patch, kernel) + bias
    mean = out.mean(axis=(0, 1, 2))
    var = out.var(axis=(0, 1, 2))
    x = np.maximum((out - mean) / np.sqrt(var + 1e-5), 0)
  features = x.mean(axis=(1, 2))
  return features @ np.asarray(params["head"]["kernel"]) + np.asarray(
      params["head"]["bias"])


@pytest.mark.parametrize("conv_impl", ["xla", "matmul", "hybrid"])
def test_strided_conv4_is_the_tafl_codes_conv_net(conv_impl):
  """`backbone="conv4_strided"`: F, 2F, 4F, 8F channels, a side of
  ⌊(s − 1)/2⌋ + 1 per block (21 → 11 → 6 → 3 → 2), no BatchNorm
  parameters; the same function as the loop reference in every
  convolution formulation."""
  model = models.make_conv4(num_classes=5, filters=2, image_size=21,
                            conv_impl=conv_impl, backbone="conv4_strided")
  params = models.init_params(model, jax.random.key(0), (21, 21, 3))
  assert sorted(params) == ["conv0", "conv1", "conv2", "conv3", "head"]
  assert [params[f"conv{i}"]["kernel"].shape[-1] for i in range(4)] == [
      2, 4, 8, 16]
  params = jax.tree.map(lambda p: p + 0.1, params)   # non-zero biases
  x = jax.random.uniform(jax.random.key(1), (6, 21, 21, 3))
  logits = jax.jit(model.apply)({"params": params}, x)
  np.testing.assert_allclose(logits, _strided_reference(params, x),
                             rtol=2e-4, atol=2e-5)
  embedding = models.make_conv4_embedding(filters=2, image_size=21,
                                          backbone="conv4_strided")
  assert embedding.apply({"params": {k: v for k, v in params.items()
                                     if k != "head"}}, x).shape == (
      6, models.embedding_dim(2, 21, "conv4_strided"))
