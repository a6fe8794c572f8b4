"""The train step and loop: jit vs eager, one compile, resume, bad input."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax.training import checkpoints
from advmeta_jax.core import episodes
from advmeta_jax import learners
from advmeta_jax.core import models
from advmeta_jax.learners import objectives
from advmeta_jax import training
from advmeta_jax.errors import ConfigError, DataError, NonFiniteLossError
from tests.conftest import random_tasks
from tests.conftest import tiny_config


def _step_setup(config, split):
  exp = training.build(config)
  optimizer = training.make_optimizer(config.meta_lr)
  state = training.init_state(
      models.init_params(exp.model, jax.random.key(0), exp.image_shape),
      optimizer)
  step = training.make_train_step(exp.learner, optimizer)
  source = episodes.make_source(split)
  sample = lambda key: episodes.sample_tasks(
      key, source, batch_size=config.task_batch_size, n_way=config.n_way,
      k_shot=config.k_shot, q_query=config.q_query)
  return state, step, sample


@pytest.mark.integration   # op by op: 25 s of eager dispatch
def test_train_step_jit_equals_eager(digits_train):
  state, step, sample = _step_setup(tiny_config(filters=4), digits_train)
  tasks = sample(jax.random.key(1))
  eager_state, eager_metrics = step(state, tasks, jax.random.key(2))
  jit_state, jit_metrics = jax.jit(step)(state, tasks, jax.random.key(2))
  chex.assert_trees_all_close(eager_state, jit_state, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(eager_metrics, jit_metrics, rtol=1e-5, atol=1e-6)
  assert int(jit_state.step) == 1
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params,
                         jit_state.params)
  assert all(jax.tree.leaves(changed)), "every parameter gets a meta-update"


def test_train_step_compiles_once(digits_train):
  state, step, sample = _step_setup(tiny_config(), digits_train)
  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
  for i in range(3):
    state, metrics = jitted(state, sample(jax.random.key(i)),
                            jax.random.key(100 + i))
  assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))


def _read_metrics(workdir):
  return training.load_metrics(str(workdir))


def test_train_writes_config_metrics_and_checkpoints(tmp_path, digits_train):
  config = tiny_config(num_steps=3)
  state = training.train(config, str(tmp_path), train_split=digits_train,
                         progress=False)
  assert int(state.step) == 3
  rows = _read_metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3]
  for r in rows:
    assert {"loss", "query_accuracy", "grad_norm", "steps_per_sec"} <= set(r)
    assert np.isfinite(r["loss"])
  assert training.load_config(str(tmp_path)) == config
  saved = sorted(os.listdir(tmp_path / training.CHECKPOINT_DIR))
  assert saved == ["2", "3"]
  with pytest.raises(DataError, match="no training metrics"):
    training.load_metrics(str(tmp_path / training.CHECKPOINT_DIR))
  restored = training.restore_run(str(tmp_path), config)
  chex.assert_trees_all_equal(restored, state)


class _Stop(Exception):
  pass


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, _Stop])
def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, digits_train,
                                                        interruption):
  """Ctrl-C saves a checkpoint; a crash (no save) repeats steps from the last
  checkpoint. Either way the resumed run ends where an uninterrupted one does."""
  config = tiny_config(num_steps=5, checkpoint_every=2)
  full = training.train(config, str(tmp_path / "full"),
                        train_split=digits_train, progress=False)

  def interrupt(step, metrics):
    del metrics
    if step == 3:
      raise interruption()

  workdir = str(tmp_path / "cut")
  with pytest.raises(interruption):
    training.train(config, workdir, train_split=digits_train, progress=False,
                   step_callback=interrupt)
  expected_latest = 3 if interruption is KeyboardInterrupt else 2
  manager = checkpoints.manager(workdir)
  assert manager.latest_step() == expected_latest
  manager.close()
  resumed = training.train(config, workdir, train_split=digits_train,
                           progress=False)
  chex.assert_trees_all_close(resumed.params, full.params, rtol=1e-6,
                              atol=1e-7)
  chex.assert_trees_all_close(resumed.opt_state, full.opt_state, rtol=1e-6,
                              atol=1e-7)
  assert [r["step"] for r in _read_metrics(workdir)] == [1, 2, 3, 4, 5]


def test_resume_refuses_a_different_config(tmp_path, digits_train):
  training.train(tiny_config(num_steps=1), str(tmp_path),
                 train_split=digits_train, progress=False)
  with pytest.raises(ConfigError, match=r"different config \(from config\.json: "
                     r"filters: 8 -> 16"):
    training.train(tiny_config(num_steps=2, filters=16), str(tmp_path),
                   train_split=digits_train, progress=False)


@pytest.fixture
def nan_learner():
  """A learner whose loss turns NaN once the meta-parameters have moved."""
  def loss(adaptation, params, task, key, *, attack, config):
    value, aux = objectives.clean_query_loss(adaptation, params, task, key,
                                             attack=attack, config=config)
    moved = jnp.any(params["head"]["bias"] != 0)
    return jnp.where(moved, jnp.nan, value), aux

  learners.register("nan_after_first_update", objective=objectives.Objective(
      "nan_after_first_update", loss))
  yield "nan_after_first_update"
  del learners.registry._REGISTRY["nan_after_first_update"]  # pylint: disable=protected-access
  del objectives.OBJECTIVES["nan_after_first_update"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, digits_train, nan_learner):
  """The loss of step 2 is computed with the parameters of step 1: that
  checkpoint is set aside (never resumed from), the one before it is kept."""
  config = tiny_config(learner=nan_learner, num_steps=5, checkpoint_every=1)
  with pytest.raises(NonFiniteLossError,
                     match=r"loss became nan at step 2\. No good checkpoint is "
                     r"saved \(the checkpoint of step 1, whose parameters gave "
                     r"that loss, is set aside as 1\.diverged\)\. A resumed "
                     r"run takes the same flags"):
    training.train(config, str(tmp_path), train_split=digits_train,
                   progress=False)
  kept = sorted(os.listdir(tmp_path / training.CHECKPOINT_DIR))
  assert kept == ["1.diverged"], kept
  with pytest.raises(ConfigError, match="no checkpoint"):
    training.restore_run(str(tmp_path), config)


def test_a_checkpoint_of_non_finite_parameters_is_never_saved(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  mgr = training.open_run(str(tmp_path), config)
  try:
    state = training.TrainState(jnp.ones((), jnp.int32),
                                {"w": jnp.array([1.0, jnp.inf])}, {})
    with pytest.raises(NonFiniteLossError, match="parameters of step 1 are "
                       "not finite: that checkpoint is not saved"):
      checkpoints.save(mgr, state, config)
    assert mgr.latest_step() is None
  finally:
    mgr.close()


@pytest.mark.parametrize("overrides,message", [
    (dict(dataset="cifar10"), "unknown dataset 'cifar10'; choose one of: "
                              "cifar_fs, cub, digits"),
    (dict(learner="reptile"), "unknown learner 'reptile'; choose one of: "
                              "adml, anil, aq, maml, maml_ad, "
                              "matchingnet, metaoptnet, protonet, r2d2, "
                              "tafl"),
    (dict(inner_lr=-0.1), "inner_lr must be a finite number > 0, got -0.1"),
    (dict(meta_lr=float("nan")), "meta_lr must be a finite number > 0"),
    (dict(k_shot=0), "k_shot must be a positive integer, got 0"),
    (dict(n_way=1), "n_way must be at least 2, got 1"),
    (dict(image_size=12), "image_size must be at least 16"),
    (dict(conv_impl="cudnn"), "unknown conv_impl 'cudnn'"),
    (dict(eval_episodes=-1), "eval_episodes must be >= 0"),
])
def test_bad_config_is_refused_with_what_is_allowed(overrides, message):
  with pytest.raises(ConfigError, match=message):
    tiny_config(**overrides).validate()


def test_data_that_cannot_give_the_episodes_is_refused_before_compiling(
    tmp_path):
  from advmeta_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match="n_way=6 is larger than the 5 classes "
                     "of digits/train"):
    training.train(tiny_config(n_way=6), str(tmp_path), progress=False)
  with pytest.raises(DataError, match=r"fewer than k_shot \+ q_query = 400"):
    training.train(tiny_config(k_shot=200, q_query=200), str(tmp_path / "b"),
                   progress=False)


# --- data parallelism --------------------------------------------------------

_MULTI_DEVICE_SCRIPT = r"""
import json, sys, tempfile
import jax, numpy as np
from advmeta_jax import datasets
from advmeta_jax import training
from advmeta_jax.errors import ConfigError
from tests.conftest import tiny_config

assert jax.device_count() == 4, jax.devices()
split = datasets.load("digits", "train")
out = {}
for learner, counts in (("maml", (1, 2, 4)), ("tafl", (1, 4))):
  params = {}
  for n in counts:
    with tempfile.TemporaryDirectory() as workdir:
      state = training.train(
          tiny_config(task_batch_size=4, num_steps=3, num_devices=n,
                      log_every=10, checkpoint_every=10, learner=learner,
                      train_attack_steps=2),
          workdir, train_split=split, progress=False)
    assert int(state.step) == 3
    params[n] = jax.tree.map(np.asarray, state.params)
  for n in counts[1:]:
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                         params[1], params[n])
    out[f"{learner}_max_diff_{n}"] = max(jax.tree.leaves(diffs))
try:
  with tempfile.TemporaryDirectory() as workdir:
    training.train(tiny_config(task_batch_size=6, num_devices=4), workdir,
                   train_split=split, progress=False)
except ConfigError as e:
  out["error"] = str(e)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.integration
def test_sharded_training_equals_single_device_training():
  """On 4 forced CPU devices: 3 steps on 1, 2 and 4 devices give the same
  parameters (float tolerance), for MAML and for TAFL (whose batch combine
  couples tasks held by different devices); a task batch that does not divide
  over the devices is refused with the allowed values."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=4"))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT],
                        cwd=root, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  out = json.loads(lines[0][len("RESULT "):])
  for key in ("maml_max_diff_2", "maml_max_diff_4", "tafl_max_diff_4"):
    assert out[key] < 1e-5, out
  assert out["error"] == (
      "task_batch_size=6 does not divide over 4 devices: each device adapts "
      "the same number of tasks. Use a task_batch_size that is a multiple of "
      "4, or num_devices in [1, 2, 3].")


def _mlp_apply(params, images):
  """A small tanh MLP whose arithmetic follows the dtype of its inputs (conv4
  casts its convolution inputs to float32)."""
  h = jnp.tanh(images.reshape(images.shape[0], -1) @ params["w1"]
               + params["b1"])
  return h @ params["w2"] + params["b2"]


@pytest.mark.parametrize("learner", ["maml", "tafl"])
def test_tasks_in_sequential_rounds_give_the_same_loss_and_meta_gradient(
    learner):
  """`parallel_tasks` is the same function as vmapping the whole batch,
  remat of the inner steps too: the train step's per-task meta-gradients in
  rounds (`batch_value_and_grad`; TAFL's weighted combine among them) and
  the gradient of the rematerialized rounds of `map_over_tasks`.

  In float64: the paths sum the same terms in another order, and float32
  second-order gradients through ReLU and max-pool move by up to 1e-3
  relative under a reordering (another machine's thread count was enough
  to move one of 108 kernel entries by 2.7e-4); in float64 they agree to
  1e-10."""
  cfg = tiny_config(learner=learner, train_attack_steps=2, inner_steps=2,
                    tafl_gamma=2.0)
  with jax.enable_x64(True):
    k = jax.random.split(jax.random.key(0), 2)
    params = {"w1": 0.1 * jax.random.normal(k[0], (16 * 16 * 3, 8),
                                            jnp.float64),
              "b1": jnp.zeros(8, jnp.float64),
              "w2": 0.1 * jax.random.normal(k[1], (8, 3), jnp.float64),
              "b2": jnp.zeros(3, jnp.float64)}
    tasks = jax.tree.map(
        lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
        random_tasks(4))
    results = {}
    for parallel, remat in ((0, False), (1, True), (2, False)):
      bound = learners.get(learner).bind(
          _mlp_apply, training.make_train_attack(cfg),
          cfg.replace(inner_lr=0.1, inner_steps=2, remat=remat))
      results[parallel] = jax.jit(training.batch_value_and_grad(
          bound, parallel_tasks=parallel))(params, tasks, jax.random.key(2))
    fn = training.batch_outer_loss(bound, parallel_tasks=2)
    results["rematerialized rounds"] = jax.jit(jax.value_and_grad(
        fn, has_aux=True))(params, tasks, jax.random.key(2))
    assert results[0][1]["w1"].dtype == jnp.float64
    for parallel in (1, 2, "rematerialized rounds"):
      chex.assert_trees_all_close(results[parallel], results[0], rtol=1e-10,
                                  atol=1e-12)


def test_per_task_meta_gradients_of_a_metric_learner():
  """ProtoNet in rounds of tasks through the train step's path: the same
  loss and gradient as the rematerialized rounds of the batch loss."""
  cfg = tiny_config(learner="protonet", task_batch_size=4)
  model = models.make_conv4_embedding(filters=4, image_size=16)
  apply_fn = models.make_apply_fn(model)
  params = models.init_params(model, jax.random.key(0), (16, 16, 3))
  bound = learners.get("protonet").bind(apply_fn, None, cfg)
  got = jax.jit(training.batch_value_and_grad(bound, parallel_tasks=2))(
      params, random_tasks(4), jax.random.key(2))
  want = jax.jit(jax.value_and_grad(
      training.batch_outer_loss(bound, parallel_tasks=2), has_aux=True))(
          params, random_tasks(4), jax.random.key(2))
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-6)


def test_which_combines_take_per_task_gradients():
  """Per-task gradients need a combine whose loss reads the aux only under
  stop_gradient: the mean and TAFL's weights do, ADML's phases do not."""
  losses = jnp.arange(1.0, 5.0)
  aux = {k: losses + 1 for k in ("adv_query_loss", "clean_query_loss",
                                 "query_loss_clean", "query_loss_adv")}
  cfg = tiny_config(learner="tafl", tafl_gamma=2.0, adml_sequential=True)
  bound = lambda c: (lambda l, a: c(l, a, cfg.meta))
  ignores = training.combine_ignores_aux_gradient
  assert ignores(bound(objectives.mean_over_tasks), losses, aux)
  assert ignores(bound(objectives.tafl_batch_combine), losses, aux)
  for phase in objectives.adml_phases(cfg.meta):
    assert not ignores(bound(phase), losses, aux)


def test_parallel_tasks_must_divide_the_batch_and_the_devices():
  with pytest.raises(ConfigError, match="parallel_tasks must be 0 .* divisor "
                     "of task_batch_size=4, got 3"):
    tiny_config(task_batch_size=4, parallel_tasks=3).validate()
  mesh = training.make_mesh(1)
  training.check_task_batch(4, mesh, 1)   # one device: any divisor


def test_non_finite_loss_between_logged_steps_is_caught(tmp_path, digits_train,
                                                        nan_learner):
  """Steps between logs are checked one step late (the next step is already
  dispatched): the run still stops at the first non-finite loss and names it."""
  config = tiny_config(learner=nan_learner, num_steps=6, log_every=10,
                       checkpoint_every=10)
  with pytest.raises(NonFiniteLossError,
                     match=r"loss became nan at step 2\. No good checkpoint "
                     r"is saved\. A resumed run"):
    training.train(config, str(tmp_path), train_split=digits_train,
                   progress=False)


_MULTI_PROCESS_SCRIPT = r"""
import os, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, workdir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                           num_processes=2, process_id=pid)
import numpy as np
from advmeta_jax import datasets
from advmeta_jax import training
from tests.conftest import tiny_config
assert jax.device_count() == 2 and jax.local_device_count() == 1
state = training.train(
    tiny_config(task_batch_size=4, num_steps=3, log_every=10,
                checkpoint_every=2),
    workdir, train_split=datasets.load("digits", "train"), progress=False)
np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(state.params)])
"""


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, digits_train):
  """Multi-host path on one machine: two processes (one CPU device each,
  gloo collectives, jax.distributed) train the same parameters as one."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen(
      [sys.executable, "-c", _MULTI_PROCESS_SCRIPT, str(pid), port,
       str(tmp_path / "run"), str(tmp_path / f"params{pid}.npz")],
      cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for pid in (0, 1)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
  reference = training.train(
      tiny_config(task_batch_size=4, num_steps=3, log_every=10,
                  checkpoint_every=2), str(tmp_path / "one"),
      train_split=digits_train, progress=False)
  want = [np.asarray(x) for x in jax.tree.leaves(reference.params)]
  for pid in (0, 1):
    got = np.load(tmp_path / f"params{pid}.npz")
    for i, w in enumerate(want):
      np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-5, atol=1e-6)
  assert sorted(os.listdir(tmp_path / "run" / training.CHECKPOINT_DIR)) == [
      "2", "3"]
