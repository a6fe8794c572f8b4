"""The inner loop: SGD steps, second-order meta-gradients, first-order mode."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.core import losses
from advmeta_jax import learners
from advmeta_jax.learners import maml
from advmeta_jax.core import models
from advmeta_jax.config import Config
from advmeta_jax.training import builders
from advmeta_jax.core.episodes import Task


def mlp_apply(params, x):
  """A tiny smooth model (tanh MLP), so finite differences are accurate."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def mlp_problem(dtype=jnp.float64):
  k = jax.random.split(jax.random.key(0), 6)
  params = {"w1": 0.5 * jax.random.normal(k[0], (4, 6), dtype),
            "b1": 0.1 * jax.random.normal(k[1], (6,), dtype),
            "w2": 0.5 * jax.random.normal(k[2], (6, 3), dtype),
            "b2": jnp.zeros((3,), dtype)}
  xs = jax.random.normal(k[3], (6, 2, 2, 1), dtype)
  xq = jax.random.normal(k[4], (9, 2, 2, 1), dtype)
  ys = jnp.array([0, 1, 2, 0, 1, 2])
  yq = jnp.array([0, 1, 2] * 3)
  return params, Task(xs, ys, xq, yq)


def meta_loss(params, task, *, first_order=False, steps=3, lr=0.3):
  adapted, _ = maml.adapt(mlp_apply, params, task.support_images,
                          task.support_labels, inner_lr=lr, num_steps=steps,
                          first_order=first_order)
  return losses.cross_entropy(mlp_apply(adapted, task.query_images),
                            task.query_labels)


def unrolled_reference(params, task, *, steps=3, lr=0.3):
  """MAML as a plain Python loop, the way the paper writes it."""
  p = params
  for _ in range(steps):
    g = jax.grad(lambda q: losses.cross_entropy(
        mlp_apply(q, task.support_images), task.support_labels))(p)
    p = {k: p[k] - lr * g[k] for k in p}
  return losses.cross_entropy(mlp_apply(p, task.query_images), task.query_labels)


def test_zero_steps_is_the_identity_and_one_step_is_sgd():
  params, task = mlp_problem(jnp.float32)
  same, metrics = maml.adapt(mlp_apply, params, task.support_images,
                             task.support_labels, inner_lr=0.1, num_steps=0)
  assert same is params and metrics == {}
  one, metrics = maml.adapt(mlp_apply, params, task.support_images,
                            task.support_labels, inner_lr=0.1, num_steps=1)
  loss_fn = lambda p: losses.cross_entropy(mlp_apply(p, task.support_images),
                                         task.support_labels)
  g = jax.grad(loss_fn)(params)
  for k in params:
    np.testing.assert_allclose(one[k], params[k] - 0.1 * g[k], rtol=1e-6)
  np.testing.assert_allclose(metrics["support_loss"][0], loss_fn(params),
                             rtol=1e-6)


def test_second_order_meta_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    params, task = mlp_problem()
    grad = jax.grad(meta_loss)(params, task)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    g = jax.flatten_util.ravel_pytree(grad)[0]
    f = lambda v: meta_loss(unravel(v), task)
    for seed in range(3):
      d = jax.random.normal(jax.random.key(seed), flat.shape, flat.dtype)
      h = 1e-5
      numeric = (f(flat + h * d) - f(flat - h * d)) / (2 * h)
      np.testing.assert_allclose(g @ d, numeric, rtol=1e-6)


def test_scan_inner_loop_equals_the_unrolled_reference():
  with jax.enable_x64(True):
    params, task = mlp_problem()
    np.testing.assert_allclose(meta_loss(params, task),
                               unrolled_reference(params, task), rtol=1e-12)
    a = jax.grad(meta_loss)(params, task)
    b = jax.grad(unrolled_reference)(params, task)
    for k in params:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12)


def test_first_order_is_the_query_gradient_at_the_adapted_parameters():
  with jax.enable_x64(True):
    params, task = mlp_problem()
    second = jax.grad(meta_loss)(params, task)
    first = jax.grad(lambda p: meta_loss(p, task, first_order=True))(params)
    adapted, _ = maml.adapt(mlp_apply, params, task.support_images,
                            task.support_labels, inner_lr=0.3, num_steps=3)
    fomaml = jax.grad(lambda p: losses.cross_entropy(
        mlp_apply(p, task.query_images), task.query_labels))(adapted)
    for k in params:
      np.testing.assert_allclose(first[k], fomaml[k], rtol=1e-9, atol=1e-12)
    diff = sum(float(jnp.sum((second[k] - first[k]) ** 2)) for k in params)
    norm = sum(float(jnp.sum(second[k] ** 2)) for k in params)
    assert diff > 1e-4 * norm, "first-order should differ from second-order"


def test_maml_outer_loss_on_conv4_differs_between_first_and_second_order():
  model = models.make_conv4(num_classes=3, filters=4, image_size=16)
  apply_fn = models.make_apply_fn(model)
  params = models.init_params(model, jax.random.key(0), (16, 16, 1))
  k = jax.random.split(jax.random.key(1), 2)
  task = Task(jax.random.uniform(k[0], (6, 16, 16, 1)),
              jnp.array([0, 0, 1, 1, 2, 2]),
              jax.random.uniform(k[1], (9, 16, 16, 1)),
              jnp.array([0, 1, 2] * 3))
  grads = {}
  for fo in (False, True):
    maml_learner = learners.get("maml").bind(
        apply_fn, None, Config.make(inner_lr=0.1, inner_steps=2,
                                    first_order=fo))
    grads[fo] = jax.jit(jax.grad(lambda p: maml_learner.loss(  # pylint: disable=cell-var-from-loop
        p, task, jax.random.key(0))[0]))(params)
  d = jax.flatten_util.ravel_pytree(grads[True])[0] - \
      jax.flatten_util.ravel_pytree(grads[False])[0]
  assert float(jnp.linalg.norm(d)) > 1e-6
  assert np.isfinite(np.asarray(d)).all()


def test_remat_gives_the_same_meta_gradient_on_conv4():
  """`remat=True` (jax.checkpoint per inner step) is the same function."""
  model = models.make_conv4(num_classes=3, filters=4, image_size=16)
  apply_fn = models.make_apply_fn(model)
  params = models.init_params(model, jax.random.key(0), (16, 16, 3))
  k = jax.random.split(jax.random.key(1), 2)
  task = Task(jax.random.uniform(k[0], (3, 16, 16, 3)), jnp.arange(3),
              jax.random.uniform(k[1], (6, 16, 16, 3)), jnp.arange(6) % 3)

  def loss(p, remat):
    adapted, _ = maml.adapt(apply_fn, p, task.support_images,
                            task.support_labels, inner_lr=0.1, num_steps=2,
                            remat=remat)
    return losses.cross_entropy(apply_fn(adapted, task.query_images),
                              task.query_labels)

  plain = jax.jit(jax.value_and_grad(lambda p: loss(p, False)))(params)
  remat = jax.jit(jax.value_and_grad(lambda p: loss(p, True)))(params)
  chex.assert_trees_all_close(plain, remat, rtol=1e-5, atol=1e-6)


def test_inner_gradients_are_clipped_elementwise_before_the_step():
  """`grad_clip=c`: θ − α·clip(∇, −c, c), as the TAFL authors' code clamps
  each inner gradient (`--inner-loop-grad-clip`)."""
  params, task = mlp_problem(jnp.float32)
  params = jax.tree.map(lambda p: 4 * p, params)   # gradients above c
  grads = jax.grad(lambda p: losses.cross_entropy(
      mlp_apply(p, task.support_images), task.support_labels))(params)
  clip = 0.05
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > clip
  clipped, _ = maml.adapt(mlp_apply, params, task.support_images,
                          task.support_labels, inner_lr=0.1, num_steps=1,
                          grad_clip=clip)
  chex.assert_trees_all_close(
      clipped, jax.tree.map(lambda p, g: p - 0.1 * jnp.clip(g, -clip, clip),
                            params, grads), rtol=1e-6)
  # The config's --inner_grad_clip reaches the adaptation a run builds: the
  # cached gradient adaptation with that clip.
  built = builders.build(Config.make(inner_grad_clip=clip, filters=4,
                                     conv_impl="xla"))
  assert built.learner.adaptation is learners.adaptations.gradient_adaptation(
      built.apply_fn, inner_lr=0.01, first_order=False,
      remat=built.config.loop.remat, grad_clip=clip)
