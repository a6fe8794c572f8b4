"""Metric learners (ProtoNet, Matching Networks) and the robust wrappers.

Hand computations in NumPy for the metric classifiers, the `Adaptation`
interface the evaluation protocol uses, gradients through the prototype
computation, `--robust` (aq/tafl) as one code path for maml and the metric
learners, and short end-to-end runs on the offline `digits`.
"""

import functools
import json
import os
import pathlib
import subprocess
import sys

from absl import flags
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax.core import losses
from advmeta_jax import attacks
from advmeta_jax import learners
from advmeta_jax.learners import heads as metric
from advmeta_jax.core import models
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core.episodes import Task
from advmeta_jax.errors import ConfigError
from advmeta_jax.cli import common
from tests import test_learners
from tests.conftest import tiny_config

N_WAY = 3
PGD = attacks.make_attack("pgd", {"eps": 0.1, "step_size": 0.04,
                                  "num_steps": 3})


def tanh_embed(params, images):
  """A smooth embedding (for exact gradient checks): tanh(flatten(x)·W + b)."""
  flat = images.reshape(images.shape[0], -1)
  return jnp.tanh(flat @ params["w"] + params["b"])


def embed_problem(seed=0, dtype=jnp.float64, k_shot=2, q_per_class=2):
  """tanh_embed parameters and one N_WAY-way task with permuted labels."""
  k = jax.random.split(jax.random.key(seed), 6)
  params = {"w": jax.random.normal(k[0], (12, 5), dtype),
            "b": 0.1 * jax.random.normal(k[1], (5,), dtype)}
  ys = jax.random.permutation(k[2], jnp.repeat(jnp.arange(N_WAY), k_shot))
  yq = jax.random.permutation(k[3], jnp.repeat(jnp.arange(N_WAY),
                                               q_per_class))
  task = Task(jax.random.uniform(k[4], (ys.size, 2, 2, 3), dtype), ys,
              jax.random.uniform(k[5], (yq.size, 2, 2, 3), dtype), yq)
  return params, task


def metric_config(**overrides):
  """The run config of these tests (flat field names), N_WAY-way."""
  base = dict(n_way=N_WAY)
  base.update(overrides)
  return Config.make(**base)


def metric_bound(name, robust="none", *, attack=PGD, **overrides):
  """Learner `name` (under `robust`) bound to tanh_embed, `attack` and
  `metric_config(**overrides)`."""
  return learners.get(name, robust).bind(
      tanh_embed, attack,
      metric_config(learner=name, robust=robust, **overrides))


@functools.lru_cache(maxsize=None)
def conv4_embedding_problem(seed=0):
  """conv4 embedding (4 filters, 16×16 RGB), jitted, and one 3-way 2-shot
  task (cached: compiled once for the tests that share it)."""
  model = models.make_conv4_embedding(filters=4, image_size=16)
  params = jax.jit(lambda k: models.init_params(model, k, (16, 16, 3)))(
      jax.random.key(seed))
  _, task = embed_problem(seed, jnp.float32)
  k = jax.random.split(jax.random.key(seed + 1), 2)
  task = task._replace(
      support_images=jax.random.uniform(k[0], (6, 16, 16, 3)),
      query_images=jax.random.uniform(k[1], (6, 16, 16, 3)))
  return jax.jit(models.make_apply_fn(model)), params, task


def numpy_prototypes(emb, labels, n_way):
  emb, labels = np.asarray(emb, np.float64), np.asarray(labels)
  return np.stack([emb[labels == c].mean(0) for c in range(n_way)])


# --- the model ----------------------------------------------------------------

def test_conv4_embedding_has_no_head_and_the_classifier_is_unchanged():
  apply_fn, params, task = conv4_embedding_problem()
  assert "head" not in params
  assert models.num_params(params) == models.conv4_num_params(
      num_classes=None, filters=4, channels=3, image_size=16)
  emb = apply_fn(params, task.query_images)
  assert emb.shape == (6, models.embedding_dim(4, 16))
  classifier = models.make_conv4(num_classes=N_WAY, filters=4, image_size=16)
  full = jax.eval_shape(lambda k: models.init_params(
      classifier, k, (16, 16, 3)), jax.random.key(0))
  chex.assert_trees_all_equal_shapes_and_dtypes(
      {k: v for k, v in full.items() if k != "head"}, params)
  assert full["head"]["kernel"].shape == (models.embedding_dim(4, 16), N_WAY)


# --- the metric classifiers, by hand ------------------------------------------

def test_protonet_logits_are_negative_squared_distances_to_class_means():
  apply_fn, params, task = conv4_embedding_problem()
  adaptation = learners.prototype_adaptation(apply_fn, n_way=N_WAY)
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels, num_steps=5)
  assert curve == {}
  protos = numpy_prototypes(apply_fn(params, task.support_images),
                            task.support_labels, N_WAY)
  np.testing.assert_allclose(state.prototypes, protos, rtol=1e-5, atol=1e-6)
  query = np.asarray(apply_fn(params, task.query_images), np.float64)
  expected = -np.array([[np.sum((q - c) ** 2) for c in protos] for q in query])
  logits = adaptation.logits(state, task.query_images)
  assert logits.shape == (6, N_WAY)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
  initial = adaptation.initial_logits(params, task.support_images,
                                      task.support_labels, task.query_images)
  np.testing.assert_allclose(initial, expected, rtol=1e-5, atol=1e-5)


def test_matching_attention_sums_to_one_and_gives_the_class_log_probs():
  apply_fn, params, task = conv4_embedding_problem()
  xs, ys, xq = task.support_images, task.support_labels, task.query_images
  sup = np.asarray(apply_fn(params, xs), np.float64)
  qry = np.asarray(apply_fn(params, xq), np.float64)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  cos = unit(qry) @ unit(sup).T
  attention = np.exp(cos) / np.exp(cos).sum(1, keepdims=True)
  got = metric.matching_attention(jnp.asarray(qry), jnp.asarray(sup))
  assert got.shape == (6, 6)
  np.testing.assert_allclose(got, attention, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got).sum(1), 1.0, rtol=1e-6)
  probs = attention @ np.eye(N_WAY)[np.asarray(ys)]
  adaptation = learners.matching_adaptation(apply_fn, n_way=N_WAY)
  state, _ = adaptation.adapt(params, xs, ys, num_steps=0)
  logits = adaptation.logits(state, xq)
  assert logits.shape == (6, N_WAY)
  np.testing.assert_allclose(logits, np.log(probs), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.exp(logits).sum(1), 1.0, rtol=1e-5)
  # A class missing from the support has probability 0, without NaN.
  lp = metric.matching_log_probs(jnp.asarray(qry), jnp.asarray(sup), ys, 4)
  assert np.all(np.asarray(lp[:, 3]) < -1e29) and np.isfinite(lp[:, :3]).all()


def test_metric_adaptation_interface_for_the_evaluation_protocol():
  params, task = embed_problem(dtype=jnp.float32)
  xs, ys, xq = task.support_images, task.support_labels, task.query_images
  for name in ("protonet", "matchingnet"):
    adaptation = metric_bound(name).adaptation
    track = lambda s: {"acc": jnp.mean(
        jnp.argmax(adaptation.logits(s, xq), -1) == task.query_labels)}
    s0, _ = adaptation.adapt(params, xs, ys, num_steps=0)
    s10, curve = adaptation.adapt(params, xs, ys, num_steps=10,
                                  track_fn=track)
    chex.assert_trees_all_equal(s0, s10)        # num_steps is ignored
    assert curve["acc"].shape == (1,)           # one point: no inner loop
    np.testing.assert_allclose(curve["acc"][0], track(s0)["acc"])
    np.testing.assert_allclose(
        adaptation.initial_logits(params, xs, ys, xq),
        adaptation.logits(s0, xq), rtol=1e-6)
    # Under jit and vmap over tasks, as the protocol runs it.
    batched = jax.jit(jax.vmap(
        lambda t: adaptation.logits(
            adaptation.adapt(params, t.support_images, t.support_labels,
                             num_steps=1)[0], t.query_images)))(
                                 jax.tree.map(lambda a: jnp.stack([a, a]),
                                              task))
    assert batched.shape == (2, xq.shape[0], N_WAY)
    # A support attack targets the classifier from the clean support.
    xs_adv = PGD(lambda x: adaptation.initial_logits(params, xs, ys, x), xs,
                 ys, key=jax.random.key(0))
    assert float(jnp.max(jnp.abs(xs_adv - xs))) <= 0.1 + 1e-6
    assert float(jnp.max(jnp.abs(xs_adv - xs))) > 0


# --- gradients through the prototype computation ------------------------------

def test_query_attack_gradient_matches_a_hand_path_and_finite_differences():
  with jax.enable_x64(True):
    params, task = embed_problem()
    xs, ys, xq, yq = task
    adaptation = learners.prototype_adaptation(tanh_embed, n_way=N_WAY)
    state, _ = adaptation.adapt(params, xs, ys, num_steps=1)
    loss = jax.jit(
        lambda x: losses.cross_entropy(adaptation.logits(state, x), yq))
    protos = numpy_prototypes(tanh_embed(params, xs), ys, N_WAY)

    def hand(x):   # −‖f(x) − c_k‖² with the NumPy prototypes, log-softmax
      d = jnp.sum((tanh_embed(params, x)[:, None] - protos[None]) ** 2, -1)
      logp = jax.nn.log_softmax(-d)
      return -jnp.mean(logp[jnp.arange(yq.size), yq])

    grad = jax.jit(jax.grad(loss))(xq)
    assert float(jnp.max(jnp.abs(grad))) > 1e-4
    np.testing.assert_allclose(grad, jax.jit(jax.grad(hand))(xq), rtol=1e-9,
                               atol=1e-12)
    v = jax.random.normal(jax.random.key(9), xq.shape, jnp.float64)
    h = 1e-6
    fd = (loss(xq + h * v) - loss(xq - h * v)) / (2 * h)
    np.testing.assert_allclose(fd, jnp.vdot(grad, v), rtol=1e-6)
    # PGD through adaptation.logits raises the loss, inside the ε-ball.
    xq_adv = jax.jit(lambda x: PGD(lambda z: adaptation.logits(state, z), x,
                                   yq, key=jax.random.key(1)))(xq)
    assert float(jnp.max(jnp.abs(xq_adv - xq))) <= 0.1 + 1e-9
    assert float(loss(xq_adv)) > float(loss(xq)) + 1e-3


@pytest.mark.parametrize("name", ["protonet", "matchingnet"])
def test_aq_meta_gradient_flows_through_the_support_not_the_attack(name):
  """∇θ L(adapt(θ, S), A(Q)) with A(Q) a constant: through the query embedding
  and through the prototypes / support embeddings (the adaptation)."""
  with jax.enable_x64(True):
    params, task = embed_problem()
    xs, ys, xq, yq = task
    learner = metric_bound(name, "aq")
    adaptation = learner.adaptation
    (loss, aux), grad = jax.jit(jax.value_and_grad(
        lambda p: learner.loss(p, task, jax.random.key(0)), has_aux=True))(
            params)
    state, _ = adaptation.adapt(params, xs, ys, num_steps=1)
    xq_adv = PGD(lambda x: adaptation.logits(state, x), xq, yq,
                 key=jax.random.key(0))

    def reference(p, frozen_support=False):
      s, _ = adaptation.adapt(p, xs, ys, num_steps=1)
      if frozen_support:   # prototypes / support embeddings as constants
        s = jax.tree.map(jax.lax.stop_gradient, s)._replace(params=p)
      return losses.cross_entropy(adaptation.logits(s, xq_adv), yq)

    np.testing.assert_allclose(loss, reference(params), rtol=1e-9)
    test_learners.assert_trees_close(grad, jax.grad(reference)(params))
    frozen = jax.grad(lambda p: reference(p, True))(params)
    assert test_learners.differs(grad["w"], frozen["w"]), (
        "the meta-gradient must flow through the support's embedding")
    assert float(aux["adv_query_accuracy"]) <= float(aux["query_accuracy"])


# --- --robust: one code path --------------------------------------------------

@pytest.mark.parametrize("robust", ["aq", "tafl"])
def test_maml_with_robust_is_the_aq_and_tafl_learner(robust):
  """Loss, metrics and meta-gradient of maml --robust=X equal learner X's."""
  with jax.enable_x64(True):
    params, _ = test_learners.problem()
    tasks = [test_learners.problem(seed)[1] for seed in (1, 2, 3)]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
    key = jax.random.key(0)
    wrapped = training.batch_outer_loss(test_learners.bound(
        "maml", robust, tafl_gamma=2.0, tafl_k=2.0))
    own = training.batch_outer_loss(test_learners.bound(
        robust, tafl_gamma=2.0, tafl_k=2.0))
    (loss_a, aux_a), grad_a = jax.jit(jax.value_and_grad(
        wrapped, has_aux=True))(params, batch, key)
    (loss_b, aux_b), grad_b = jax.jit(jax.value_and_grad(
        own, has_aux=True))(params, batch, key)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-12)
    chex.assert_trees_all_close(aux_a, aux_b, rtol=1e-12)
    test_learners.assert_trees_close(grad_a, grad_b, rtol=1e-12)


def test_tafl_weights_the_tasks_of_a_metric_learner():
  with jax.enable_x64(True):
    params, _ = embed_problem()
    batch = jax.tree.map(lambda *xs: jnp.stack(xs),
                         *[embed_problem(seed)[1] for seed in (1, 2, 3)])
    protonet_tafl = metric_bound("protonet", "tafl", tafl_gamma=2.0,
                                 tafl_k=3.0)
    loss, metrics = training.batch_outer_loss(protonet_tafl)(
        params, batch, jax.random.key(0))
    per_task = jax.vmap(lambda t, k: protonet_tafl.loss(
        params, t, k)[1])(batch, jax.random.split(jax.random.key(0), 3))
    w = test_learners.numpy_tafl_weights(per_task["adv_query_loss"],
                                         per_task["clean_query_loss"],
                                         2.0, 3.0, 1e-3)
    assert np.ptp(w) > 1e-3, "the test needs unequal weights"
    np.testing.assert_allclose(
        loss, np.mean(w * np.asarray(per_task["adv_query_loss"])), rtol=1e-9)
    np.testing.assert_allclose(metrics["tafl_weight_max"], w.max(), rtol=1e-9)
    # robust="aq" is the unweighted mean of the same per-task losses.
    aq_loss, aq_metrics = training.batch_outer_loss(
        metric_bound("protonet", "aq"))(params, batch, jax.random.key(0))
    np.testing.assert_allclose(aq_loss, per_task["adv_query_loss"].mean(),
                               rtol=1e-9)
    assert "tafl_weight_max" not in aq_metrics


@pytest.mark.parametrize("overrides, match", [
    (dict(learner="adml", robust="aq"),
     "robust='aq' does not apply to learner 'adml'.*maml, matchingnet, "
     "metaoptnet, protonet"),
    (dict(learner="tafl", robust="tafl"), "does not apply to learner 'tafl'"),
    (dict(learner="maml_ad", robust="aq"),
     "does not apply to learner 'maml_ad'"),
    (dict(learner="protonet", robust="fgsm"),
     "unknown robust loss 'fgsm'; choose one of: none, aq, tafl, trades"),
])
def test_bad_robust_combinations_are_refused(overrides, match):
  with pytest.raises(ConfigError, match=match):
    tiny_config(**overrides).validate()


def test_robust_refusals_in_the_library():
  params, task = embed_problem(dtype=jnp.float32)
  with pytest.raises(ConfigError, match="unknown robust loss 'x'"):
    learners.get("protonet", "x")
  with pytest.raises(ConfigError, match="unknown robust loss 'x'"):
    metric_config(learner="protonet", robust="x").validate()
  with pytest.raises(ConfigError, match="does not apply to learner 'aq'"):
    learners.get("aq", "tafl")
  with pytest.raises(ConfigError, match=r"'protonet' with robust='aq' needs "
                     "a training attack"):
    metric_bound("protonet", "aq", attack=None).loss(params, task,
                                                     jax.random.key(0))
  # n_way is a required keyword of the metric adaptations (it was an
  # optional LearnerConfig field, refused when missing).
  with pytest.raises(TypeError, match="n_way"):
    learners.matching_adaptation(tanh_embed)
  with pytest.raises(TypeError, match="n_way"):
    learners.prototype_adaptation(tanh_embed)


def test_robust_defaults_and_model_choice_from_the_train_config():
  cfg = tiny_config(learner="protonet", robust="tafl")
  assert cfg.learner_label == "protonet+tafl"
  assert tiny_config(learner="matchingnet").learner_label == "matchingnet"
  attack = training.make_train_attack(cfg)
  assert attack.__name__ == "pgd_attack"
  assert attack.hparams["eps"] == pytest.approx(8 / 255)
  assert training.make_train_attack(tiny_config(learner="protonet")) is None
  exp = training.build(cfg)
  assert exp.model.num_classes is None and exp.learner.adaptation is (
      learners.prototype_adaptation(exp.apply_fn, n_way=5))
  assert exp.learner.learner.robust == "tafl"
  assert training.build(tiny_config()).model.num_classes == 5


# --- end to end ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["protonet", "matchingnet"])
def test_tafl_train_step_of_a_metric_learner_compiles_once(name):
  params, _ = embed_problem(dtype=jnp.float32)
  optimizer = training.make_optimizer(1e-3)
  step = training.make_train_step(metric_bound(name, "tafl"), optimizer)
  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
  state = training.init_state(params, optimizer)
  for i in range(3):
    tasks = jax.tree.map(lambda *xs: jnp.stack(xs),
                         *[embed_problem(10 * i + j, jnp.float32)[1]
                           for j in range(2)])
    state, metrics = jitted(state, tasks, jax.random.key(i))
  assert int(state.step) == 3
  for name in ("loss", "query_accuracy", "adv_query_accuracy",
               "tafl_l_ar_mean", "tafl_weight_max"):
    assert np.isfinite(float(metrics[name])), name


# protonet+tafl trains end to end from flags below. The slow ones share a
# fast one's code path: matchingnet's model and adaptation (matchingnet+tafl)
# and protonet+aq (tafl with uniform weights).
@pytest.mark.integration
@pytest.mark.parametrize("learner, robust", [
    ("protonet", "none"), ("matchingnet", "tafl"),
    pytest.param("matchingnet", "none", marks=pytest.mark.slow),
    pytest.param("protonet", "aq", marks=pytest.mark.slow)])
def test_metric_learner_trains_end_to_end_on_digits(learner, robust, tmp_path,
                                                    digits_train):
  _train_and_check(tiny_config(learner=learner, robust=robust, num_steps=2,
                               eval_episodes=0, train_attack_steps=2),
                   tmp_path, digits_train)


def _train_and_check(cfg, tmp_path, digits_train):
  state = training.train(cfg, str(tmp_path), train_split=digits_train,
                         progress=False)
  assert int(state.step) == 2 and "head" not in state.params
  with open(os.path.join(tmp_path, training.METRICS_FILE)) as f:
    lines = [json.loads(line) for line in f]
  assert [m["step"] for m in lines] == [1, 2]
  for m in lines:
    assert np.isfinite(m["loss"]) and 0 <= m["query_accuracy"] <= 1
    if cfg.robust != "none":
      assert 0 <= m["adv_query_accuracy"] <= 1
    assert ("tafl_weight_max" in m) == (cfg.robust == "tafl")
  # Checkpoints hold the headless params and restore as they were saved.
  chex.assert_trees_all_equal(training.restore_run(str(tmp_path), cfg), state)


TINY_FLAGS = ("--filters=8", "--q_query=3", "--task_batch_size=2",
              "--num_steps=2", "--log_every=1", "--checkpoint_every=2",
              "--eval_episodes=0", "--train_attack_steps=2",
              "--conv_impl=xla", "--parallel_tasks=0", "--remat=false")


@pytest.mark.integration
def test_robust_flag_from_the_command_line_trains_protonet_tafl(
    tmp_path, digits_train):
  """The flags of advmeta_jax/cli/common.py (parsed here in-process) to a run."""
  flag_values = flags.FlagValues()
  common.define_config_flags(flag_values=flag_values)
  flag_values(["train", "--learner=protonet", "--robust=tafl", *TINY_FLAGS])
  cfg = common.config_from_flags(flag_values)
  assert (cfg.learner, cfg.robust, cfg.learner_label) == (
      "protonet", "tafl", "protonet+tafl")
  assert cfg == tiny_config(learner="protonet", robust="tafl", num_steps=2,
                            eval_episodes=0, train_attack_steps=2,
                            inner_steps=5, eval_inner_steps=10,
                            eval_batch_size=20)
  _train_and_check(cfg, tmp_path, digits_train)
  with pytest.raises(flags.IllegalFlagValueError,
                     match="value should be one of <none|aq|tafl>"):
    flag_values(["train", "--robust=pgd"])
  flag_values.unparse_flags()
  flag_values(["train", "--learner=adml", "--robust=aq"])
  with pytest.raises(ConfigError, match="does not apply to learner 'adml'"):
    common.config_from_flags(flag_values)


@pytest.mark.slow
def test_launch_train_takes_the_robust_flag(tmp_path):
  """`python -m launch.train --learner=protonet --robust=tafl`, as a user
  runs it (a fresh process; the meta-test after training is skipped)."""
  repo = pathlib.Path(__file__).resolve().parent.parent
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "launch.train", f"--workdir={workdir}",
       "--learner=protonet", "--robust=tafl", *TINY_FLAGS], cwd=repo,
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
      text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  config = json.loads((workdir / "config.json").read_text())
  assert (config["meta"]["learner"] == "protonet"
          and config["meta"]["robust"] == "tafl")
  rows = [json.loads(l) for l in
          (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["tafl_weight_max"]) for r in rows)
