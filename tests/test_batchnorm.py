"""`--batchnorm=running`: BatchNorm's running averages, collected in training
as PyTorch's BatchNorm2d collects them (MetaOptNet's ResNet-12), and used
at meta-test as its `eval()` mode uses them.

The running averages against NumPy after one step, the eval-mode network
against a hand normalization and its independence from the rest of the
batch, the default `batch` unchanged, ANIL (whose inner loop leaves the
body at θ) trained and meta-tested with them, the averages through a
checkpoint and a resumed run, the refusals, and (where torch is installed)
PyTorch's BatchNorm2d in train mode then eval mode.
"""

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import optax
import pytest

from advmeta_jax import attacks
from advmeta_jax import learners
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core import episodes
from advmeta_jax.core import losses
from advmeta_jax.core import models
from advmeta_jax.core import wide
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import protocol
from advmeta_jax.training import checkpoints
from advmeta_jax.training import step as step_lib
from tests.conftest import tiny_config

# ResNet-12 at 1/16 of its channels (4-10-20-40), 3-way 1-shot 2-query
# tasks of 16×16 images.
WIDTH = 1 / 16


def _config(**overrides):
  base = dict(learner="protonet", backbone="resnet12", backbone_width=WIDTH,
              batchnorm="running", n_way=3, q_query=2)
  base.update(overrides)
  return tiny_config(**base)


def _tasks(b=2, channels=1):
  k = jax.random.split(jax.random.key(1), 2)
  return episodes.Task(jax.random.uniform(k[0], (b, 3, 16, 16, channels)),
                       jnp.tile(jnp.arange(3), (b, 1)),
                       jax.random.uniform(k[1], (b, 6, 16, 16, channels)),
                       jnp.tile(jnp.arange(6) % 3, (b, 1)))


def _built_and_params(config):
  built = training.build(config)
  params = models.init_params(built.model, jax.random.key(0),
                              built.image_shape)
  # Non-trivial BatchNorm scales and offsets.
  params = jax.tree.map(
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
      params)
  return built, params


def _batchnorm_inputs(model, params, images):
  """`{path: input}` of every BatchNorm of `model` in a training forward
  pass, read by intercepting the modules' calls (not through their
  statistics)."""
  return {k: np.asarray(v, np.float64)
          for k, v in _inputs_fn(model)(params, images).items()}


@functools.lru_cache(maxsize=None)
def _inputs_fn(model):
  def inputs(params, images):
    seen = {}

    def interceptor(next_fun, args, kwargs, context):
      if (isinstance(context.module, models.TransductiveBatchNorm)
          and context.method_name == "__call__"):
        seen["/".join(context.module.path)] = args[0]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      model.apply({"params": params}, images)
    return seen
  return jax.jit(inputs)


def _numpy_stats(x):
  """PyTorch's running-average inputs: the mean and the unbiased variance
  over (N, H, W)."""
  flat = x.reshape(-1, x.shape[-1])
  return flat.mean(0), flat.var(0, ddof=1)


def _by_path(tree):
  return {"/".join(k.key for k in path[:-1]) + ":" + path[-1].key: v
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_the_running_averages_after_one_step_are_pytorchs_update():
  """From mean 0 and variance 1, one step moves them as two PyTorch calls
  of momentum 0.1 (support, then query), by the tasks' statistics averaged
  (each task normalized alone): 0.9·(0.9·init + 0.1·S) + 0.1·Q, S and Q the
  batch means and unbiased variances of every BatchNorm's input, computed
  here in NumPy from the inputs themselves."""
  built, params = _built_and_params(_config())
  assert built.batch_stats_fn is not None
  running = built.initial_batch_stats(params)
  leaves = _by_path(running)
  assert len(leaves) == 2 * 4 * 4    # (mean, var) × 4 BatchNorms × 4 blocks
  for name, value in leaves.items():
    np.testing.assert_array_equal(value, 0.0 if name.endswith("mean")
                                  else 1.0)
  tasks = _tasks()
  # The train step's update (the whole step runs it in the tests below).
  updated = jax.jit(lambda p, t, r: step_lib.update_running_stats(
      built.batch_stats_fn, p, t, r))(params, tasks, running)
  _assert_one_step_from_the_start(updated, built.model, params, tasks)


def _assert_one_step_from_the_start(updated, model, params, tasks):
  """`updated` (running averages from mean 0 and variance 1) is
  0.9·(0.9·init + 0.1·S) + 0.1·Q for every BatchNorm of `model`, S and Q
  the tasks' averaged support and query statistics (NumPy, from the
  BatchNorms' inputs at `params`)."""
  def averaged(images):   # {path:mean|var: the tasks' average}
    per_task = [_batchnorm_inputs(model, params, x) for x in images]
    out = {}
    for path in per_task[0]:
      stats = [_numpy_stats(t[path]) for t in per_task]
      out[f"{path}:mean"] = np.mean([s[0] for s in stats], axis=0)
      out[f"{path}:var"] = np.mean([s[1] for s in stats], axis=0)
    return out

  support = averaged(tasks.support_images)
  query = averaged(tasks.query_images)
  got = _by_path(updated)
  assert got and set(got) == set(support)
  for name, value in got.items():
    init = 0.0 if name.endswith("mean") else 1.0
    expected = 0.9 * (0.9 * init + 0.1 * support[name]) + 0.1 * query[name]
    np.testing.assert_allclose(value, expected, rtol=2e-4, atol=1e-5,
                               err_msg=name)


def test_eval_mode_normalizes_each_image_with_the_running_averages():
  """With the running averages in the parameters a BatchNorm is
  (x − mean)/√(var + ε)·scale + offset, and a query's logits do not depend
  on the other images of the batch (non-transductive); without them the
  batch's statistics (biased variance) as before."""
  bn = models.TransductiveBatchNorm()
  x = jax.random.normal(jax.random.key(0), (5, 3, 3, 4)) * 2 + 1
  k = jax.random.split(jax.random.key(1), 4)
  p = {"scale": jax.random.uniform(k[0], (4,)) + 0.5,
       "bias": jax.random.normal(k[1], (4,))}
  mean, var = jax.random.normal(k[2], (4,)), jax.random.uniform(k[3], (4,)) + .1
  got = bn.apply({"params": models.with_running_stats(
      p, {"mean": mean, "var": var})}, x)
  xs, s, b = (np.asarray(a, np.float64) for a in (x, p["scale"], p["bias"]))
  np.testing.assert_allclose(
      got, (xs - np.asarray(mean)) / np.sqrt(np.asarray(var) + 1e-5) * s + b,
      rtol=1e-5, atol=1e-5)
  batch = bn.apply({"params": p}, x)
  flat = xs.reshape(-1, 4)
  np.testing.assert_allclose(
      batch, (xs - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5) * s + b,
      rtol=1e-5, atol=1e-5)

  built, params = _built_and_params(_config())
  running = built.initial_batch_stats(params)
  running = jax.tree.map(   # non-trivial running averages
      lambda r: r + 0.2 * jax.random.uniform(jax.random.key(4), r.shape),
      running)
  state = training.TrainState(jnp.zeros((), jnp.int32), params, None, running)
  eval_params = state.meta_test_params
  assert eval_params["block0"]["bn0"][models.RUNNING_MEAN].shape == (4,)
  assert models.RUNNING_MEAN not in params["block0"]["bn0"]
  task = jax.tree.map(lambda a: a[0], _tasks(1))
  adaptation = built.learner.adaptation
  adapted, _ = adaptation.adapt(eval_params, task.support_images,
                                task.support_labels, num_steps=0)
  together = adaptation.logits(adapted, task.query_images)
  alone = jnp.concatenate([adaptation.logits(adapted, task.query_images[i:i + 1])
                           for i in range(6)])
  np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)
  # Transductive (the default): the same query scores differently alone.
  adapted, _ = adaptation.adapt(params, task.support_images,
                                task.support_labels, num_steps=0)
  alone = adaptation.logits(adapted, task.query_images[:1])
  assert not np.allclose(alone, adaptation.logits(adapted,
                                                  task.query_images)[:1])


def test_batch_is_the_default_keeps_no_state_and_trains_the_same():
  """`batch` (the default) builds no statistics pass and keeps no state;
  `running` changes the state's averages only, not the step's parameters."""
  config = _config(backbone="conv4", backbone_width=1.0, filters=4)
  assert tiny_config().batchnorm == "batch"
  plain = training.build(config.replace(batchnorm="batch"))
  assert plain.batch_stats_fn is None
  built, params = _built_and_params(config)
  assert plain.initial_batch_stats(params) is None
  optimizer = optax.adam(1e-3)
  state = training.init_state(params, optimizer)
  assert state.batch_stats is None and state.meta_test_params is params
  tasks, key = _tasks(), jax.random.key(2)
  without, _ = jax.jit(training.make_train_step(plain.learner, optimizer))(
      state, tasks, key)
  with_, _ = jax.jit(training.make_train_step(
      built.learner, optimizer, batch_stats_fn=built.batch_stats_fn))(
          training.init_state(params, optimizer,
                              built.initial_batch_stats(params)), tasks, key)
  assert without.batch_stats is None and with_.batch_stats is not None
  chex.assert_trees_all_equal(without.params, with_.params)


def test_anil_trains_with_the_batchs_statistics_and_moves_the_averages():
  """ANIL's inner loop adapts the head only, so its body's BatchNorms see
  each support and query once, at θ, as a metric learner's: under
  `running` a train step normalizes with the batches' statistics (the loss
  and parameters of `batch`) and moves the averages as
  0.9·(0.9·init + 0.1·S) + 0.1·Q. So does ANIL around AQ's objective."""
  for robust in ("none", "aq"):
    config = _config(learner="anil", robust=robust)
    built, params = _built_and_params(config)
    assert "head" in params and built.learner.learner.fixed_body
    plain = training.build(config.replace(batchnorm="batch"))
    optimizer = optax.adam(1e-3)
    tasks, key = _tasks(), jax.random.key(2)
    without, m_without = jax.jit(training.make_train_step(
        plain.learner, optimizer))(training.init_state(params, optimizer),
                                   tasks, key)
    with_, m_with = jax.jit(training.make_train_step(
        built.learner, optimizer, batch_stats_fn=built.batch_stats_fn))(
            training.init_state(params, optimizer,
                                built.initial_batch_stats(params)),
            tasks, key)
    np.testing.assert_array_equal(m_with["loss"], m_without["loss"])
    chex.assert_trees_all_equal(without.params, with_.params)
    _assert_one_step_from_the_start(with_.batch_stats, built.model, params,
                                    tasks)


def _alone(fn, *arrays):
  """`fn` of each image (and its label) alone, concatenated."""
  return jnp.concatenate([fn(*(a[i:i + 1] for a in arrays))
                          for i in range(arrays[0].shape[0])])


def test_anil_meta_tests_in_eval_mode_in_its_inner_loop_and_under_attack():
  """At meta-test ANIL runs `meta_test_params`: its inner step is the
  gradient of the support loss with each support image normalized alone
  (eval mode), the body (running averages included) stays as it is, the
  adapted query logits and FGSM's query and support images of an image are
  the same alone or in the batch. The default `batch` is transductive."""
  config = _config(learner="anil")
  built, params = _built_and_params(config)
  running = jax.tree.map(   # non-trivial running averages
      lambda r: r + 0.2 * jax.random.uniform(jax.random.key(4), r.shape),
      built.initial_batch_stats(params))
  eval_params = training.TrainState(jnp.zeros((), jnp.int32), params, None,
                                    running).meta_test_params
  xs, ys, xq, yq = jax.tree.map(lambda a: a[0], _tasks(1))
  adaptation = built.learner.adaptation

  def steps(p):   # (the inner step's change of the head, by hand)
    adapted, _ = adaptation.adapt(p, xs, ys, num_steps=1)
    by_hand = jax.grad(lambda head: losses.cross_entropy(_alone(
        lambda x: adaptation.logits({**p, "head": head}, x), xs), ys))(
            p["head"])
    return adapted, jax.tree.map(lambda a, b: a - b, adapted["head"],
                                 p["head"]), by_hand

  adapted, moved, grad = jax.jit(steps)(eval_params)
  chex.assert_trees_all_close(
      moved, jax.tree.map(lambda g: -config.meta.inner_lr * g, grad),
      rtol=1e-4, atol=1e-7)
  assert np.any(np.asarray(moved["kernel"]) != 0)
  chex.assert_trees_all_equal({k: v for k, v in adapted.items() if k != "head"},
                              {k: v for k, v in eval_params.items()
                               if k != "head"})
  query = lambda x: adaptation.logits(adapted, x)
  np.testing.assert_allclose(_alone(query, xq), query(xq), rtol=1e-5,
                             atol=1e-5)
  support = lambda x: adaptation.initial_logits(eval_params, xs, ys, x)
  fgsm = lambda f: lambda x, y: attacks.fgsm(f, x, y, eps=8 / 255)
  for logits_fn, x, y in ((query, xq, yq), (support, xs, ys)):
    together, alone = jax.jit(lambda x, y: (
        fgsm(logits_fn)(x, y), _alone(fgsm(logits_fn), x, y)))(x, y)
    assert np.mean(np.asarray(together) != np.asarray(alone)) < 1e-3
  # Transductive (the default): the inner step is not the one-image one.
  _, moved, grad = jax.jit(steps)(params)
  assert not np.allclose(moved["kernel"],
                         -config.meta.inner_lr * grad["kernel"], rtol=1e-2)


class _StateBefore(NamedTuple):
  """`TrainState` as versions before `batch_stats` had it."""
  step: Any
  params: Any
  opt_state: Any


def test_a_checkpoint_without_running_averages_reads_as_before(tmp_path):
  """A `batch` run's checkpoint has the layout of the earlier ones, and an
  earlier one restores (with `batch_stats` None)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  params = {"w": jnp.arange(3.0)}
  optimizer = optax.adam(1e-3)
  state = training.init_state(params, optimizer)
  mgr = checkpoints.manager(str(tmp_path / "old"))
  mgr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(
      _StateBefore(jnp.asarray(3, jnp.int32), params, state.opt_state))))
  mgr.wait_until_finished()
  restored = checkpoints.restore(mgr, state)
  checkpoints.close(mgr)
  assert int(restored.step) == 3 and restored.batch_stats is None
  chex.assert_trees_all_equal(restored.params, params)

  mgr = checkpoints.manager(str(tmp_path / "new"))
  checkpoints.save(mgr, state._replace(step=jnp.asarray(4, jnp.int32)))
  mgr.reload()
  saved = mgr.item_metadata(4)["state"]
  checkpoints.close(mgr)
  assert set(saved) == {"step", "params", "opt_state"}


@pytest.mark.integration   # a whole run, resumed or relaunched
def test_the_running_averages_survive_a_checkpoint_and_a_resume(
    tmp_path, digits_train):
  """Trained 2 steps straight, or 1 step then resumed to 2: the same
  running averages; a restored run meta-tests with them."""
  config = _config(num_steps=2, checkpoint_every=1, backbone="conv4",
                   backbone_width=1.0, filters=4)
  straight = training.train(config, str(tmp_path / "straight"),
                            train_split=digits_train, progress=False)
  assert straight.batch_stats is not None
  workdir = str(tmp_path / "resumed")
  training.train(config.replace(num_steps=1), workdir,
                 train_split=digits_train, progress=False)
  resumed = training.train(config, workdir, train_split=digits_train,
                           progress=False)
  chex.assert_trees_all_close(resumed.batch_stats, straight.batch_stats,
                              rtol=1e-6, atol=1e-7)
  moved = _by_path(resumed.batch_stats)
  assert any(np.any(v != 0) for k, v in moved.items() if k.endswith("mean"))

  restored = training.restore_run(workdir, config)
  chex.assert_trees_all_equal(restored.batch_stats, resumed.batch_stats)
  run = protocol.load_run(workdir)
  assert run.step == 2
  chex.assert_trees_all_equal(
      run.params["bn3"][models.RUNNING_VAR],
      resumed.batch_stats["bn3"]["var"])


@pytest.mark.parametrize("overrides,message", [
    (dict(learner="maml"),
     "batchnorm='running' applies to the learners whose body stays fixed "
     "while adapting (anil, matchingnet, metaoptnet, protonet, r2d2), not "
     "'maml', whose inner loop moves it: use batchnorm='batch'."),
    (dict(learner="maml", robust="aq"), "not 'maml', whose inner loop"),
    (dict(learner="maml_ad"), "not 'maml_ad', whose inner loop"),
    (dict(learner="adml"), "not 'adml', whose inner loop"),
    (dict(learner="aq"), "not 'aq', whose inner loop"),
    (dict(learner="tafl"), "not 'tafl', whose inner loop moves it: use "
     "batchnorm='batch'."),
    (dict(learner="anil", backbone="conv4_strided", backbone_width=1.0),
     "applies to the backbones conv4, conv4_64, conv4_wide, resnet12, not "
     "'conv4_strided'"),
    (dict(backbone="conv4_strided", backbone_width=1.0),
     "batchnorm='running' applies to the backbones conv4, conv4_64, "
     "conv4_wide, resnet12, not 'conv4_strided'"),
    (dict(batchnorm="eval"), "unknown batchnorm 'eval'; choose one of: "
     "batch, running."),
])
def test_a_bad_combination_is_one_line(overrides, message):
  with pytest.raises(ConfigError) as error:
    _config(**overrides).validate()
  assert message in str(error.value) and "\n" not in str(error.value)


def test_every_backbone_but_the_strided_one_and_every_fixed_body_learner():
  for learner in ("protonet", "matchingnet", "r2d2", "metaoptnet", "anil"):
    for backbone in ("conv4", "conv4_64", "conv4_wide", "resnet12"):
      Config.make(learner=learner, backbone=backbone,
                  batchnorm="running").validate()
  for learner in ("protonet", "anil"):
    for robust in ("aq", "tafl", "trades", "gaussian"):
      Config.make(learner=learner, robust=robust,
                  batchnorm="running").validate()
  fixed = [n for n in learners.names() if learners.get(n).fixed_body]
  assert fixed == ["anil", "matchingnet", "metaoptnet", "protonet", "r2d2"]


def test_pytorch_batchnorm_train_then_eval_gives_the_same_averages_and_outputs():
  """MetaOptNet's ResNet-12 in PyTorch (tests/test_backbones.py's
  transcription): one `train()` call on the support and one on the query
  move its BatchNorm2d buffers as one step here moves the running
  averages (one task); `eval()` then embeds the query as the meta-test
  here does."""
  torch = pytest.importorskip("torch")
  from tests.test_backbones import copy_resnet12_params  # pylint: disable=g-import-not-at-top
  from tests.test_backbones import _torch_resnet12  # pylint: disable=g-import-not-at-top
  channels = (3, 5, 6, 8)
  model = wide.ResNet12(None, channels, conv_impl="xla")
  params = models.init_params(model, jax.random.key(0), (32, 32, 3))
  params = jax.tree.map(
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
      params)
  k = jax.random.split(jax.random.key(1), 2)
  support = jax.random.uniform(k[0], (1, 4, 32, 32, 3))
  query = jax.random.uniform(k[1], (1, 6, 32, 32, 3))
  tasks = episodes.Task(support, jnp.zeros((1, 4), jnp.int32), query,
                        jnp.zeros((1, 6), jnp.int32))
  stats_fn = models.make_batch_stats_fn(model)
  running = step_lib.update_running_stats(
      stats_fn, params, tasks,
      models.init_running_stats(stats_fn, params, (32, 32, 3)))
  ours = model.apply({"params": models.with_running_stats(params, running)},
                     query[0])

  ref = _torch_resnet12(torch, channels)
  bns = copy_resnet12_params(torch, ref, params)
  with torch.no_grad():
    nchw = lambda x: torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
    ref.train()
    ref(nchw(support[0]))
    ref(nchw(query[0]))
    ref.eval()
    out = ref(nchw(query[0])).numpy()
  for name, bn in bns.items():
    block, layer = name.split("/")
    np.testing.assert_allclose(running[block][layer]["mean"],
                               bn.running_mean.numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=name)
    np.testing.assert_allclose(running[block][layer]["var"],
                               bn.running_var.numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=name)
  got = np.asarray(ours).reshape(6, 2, 2, 8).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(got.reshape(6, -1), out, rtol=1e-4, atol=1e-4)
