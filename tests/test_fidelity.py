"""What the papers ran: TAFL's weights at extremes, Matching Networks' FCE."""

import json
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advmeta_jax import attacks
from advmeta_jax.training import builders
from advmeta_jax.learners import fce
from advmeta_jax import learners
from advmeta_jax.learners import heads as metric
from advmeta_jax.core import models
from advmeta_jax.learners import objectives
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core.episodes import Task
from advmeta_jax.errors import ConfigError, DataError
from tests.conftest import tiny_config


# --- TAFL's modulating factor -------------------------------------------------

def _formula(adv, clean, gamma, k, delta):
  l_ar = np.maximum(np.asarray(adv, np.float64) - clean, delta)
  m = (1 - np.exp(-k * l_ar)) ** gamma
  return len(m) * m / m.sum()


@pytest.mark.parametrize("gamma,k", [(2.0, 1.0), (0.5, 3.0), (5.0, 0.2)])
def test_tafl_weights_equal_the_formula(gamma, k):
  adv = jnp.array([0.3, 1.2, 2.5, 0.0, 4.0])
  clean = jnp.array([0.1, 0.2, 0.5, 0.4, 0.3])
  w = objectives.tafl_weights(adv, clean, gamma=gamma, k=k, delta=1e-3)
  np.testing.assert_allclose(w, _formula(adv, clean, gamma, k, 1e-3),
                             rtol=1e-4, atol=1e-12)   # float32 vs float64


@pytest.mark.parametrize("gamma,k,delta", [(30.0, 0.01, 1e-3),
                                           (30.0, 1e-6, 1e-8),
                                           (50.0, 0.01, 1e-3)])
def test_tafl_weights_finite_and_exact_at_extremes(gamma, k, delta):
  # Every task at the δ floor: M underflows to 0 in float32 (0/0 before).
  at_floor = objectives.tafl_weights(jnp.zeros(4), jnp.ones(4), gamma=gamma,
                                     k=k, delta=delta)
  np.testing.assert_array_equal(at_floor, np.ones(4, np.float32))
  equal = objectives.tafl_weights(jnp.full(3, 2.0), jnp.full(3, 0.5),
                                  gamma=gamma, k=k, delta=delta)
  np.testing.assert_array_equal(equal, np.ones(3, np.float32))
  mixed = objectives.tafl_weights(jnp.array([delta, 3.0, 1.0]),
                                  jnp.zeros(3), gamma=gamma, k=k, delta=delta)
  assert np.isfinite(mixed).all() and abs(float(mixed.sum()) - 3) < 1e-5
  assert float(mixed[1]) == pytest.approx(3.0, rel=1e-4)   # the hardest task


@pytest.mark.parametrize("kw,match", [
    (dict(gamma=1.0, k=0.0, delta=1e-3), "k must be a finite number > 0"),
    (dict(gamma=-1.0, k=1.0, delta=1e-3), "gamma must be a finite number >= 0"),
    (dict(gamma=1.0, k=1.0, delta=0.0), "delta must be a finite number > 0"),
])
def test_tafl_weights_refuse_invalid_hyperparameters(kw, match):
  with pytest.raises(ConfigError, match=match):
    objectives.tafl_weights(jnp.zeros(2), jnp.zeros(2), **kw)


def test_config_refuses_tafl_k_zero():
  with pytest.raises(ConfigError, match="tafl_k must be a finite number > 0"):
    tiny_config(learner="tafl", tafl_k=0.0).validate()


# --- Matching Networks' full context embeddings -------------------------------

N_WAY, SHOTS, QUERIES = 3, 2, 4


def _fce_problem(variant, seed=0):
  cfg = Config.make(learner="matchingnet", fce=variant, n_way=N_WAY,
                    filters=4, fce_hidden=6, fce_steps=3).validate()
  exp = builders.build(cfg)
  params = models.init_params(exp.model, jax.random.key(seed), (16, 16, 1))
  k = jax.random.split(jax.random.key(seed + 1), 2)
  xs = jax.random.uniform(k[0], (N_WAY * SHOTS, 16, 16, 1))
  ys = jnp.repeat(jnp.arange(N_WAY), SHOTS)
  xq = jax.random.uniform(k[1], (N_WAY * QUERIES, 16, 16, 1))
  yq = jnp.repeat(jnp.arange(N_WAY), QUERIES)
  return cfg, exp, params, (xs, ys, xq, yq)


@pytest.mark.parametrize("variant", ["none", "adml", "vinyals"])
def test_attention_mass_sums_to_one(variant):
  _, exp, params, (xs, ys, xq, _) = _fce_problem(variant)
  adaptation = exp.learner.adaptation
  state, _ = adaptation.adapt(params, xs, ys, num_steps=0)
  log_p = adaptation.logits(state, xq)
  assert log_p.shape == (N_WAY * QUERIES, N_WAY)
  np.testing.assert_allclose(jnp.exp(log_p).sum(-1), 1.0, rtol=1e-5)


def test_support_only_normalization_changes_with_the_query_norm():
  k = jax.random.split(jax.random.key(0), 2)
  support = jax.random.normal(k[0], (5, 6, 8))    # [Q, S, D]
  query = jax.random.normal(k[1], (5, 8))
  s1 = fce.support_normalized_similarities(query, support)
  s2 = fce.support_normalized_similarities(2 * query, support)
  np.testing.assert_allclose(s2, 2 * s1, rtol=1e-5)          # not invariant
  np.testing.assert_allclose(fce.support_normalized_similarities(
      query, 3 * support), s1, rtol=1e-5)                     # support is
  np.testing.assert_allclose(fce.cosine_similarities(2 * query, support),
                             fce.cosine_similarities(query, support),
                             rtol=1e-5)


def test_adml_fce_lstm_sees_the_support_and_the_one_query():
  context = fce.ADMLContext(hidden=5)
  k = jax.random.split(jax.random.key(0), 3)
  support = jax.random.normal(k[0], (4, 7))
  queries = jax.random.normal(k[1], (2, 7))
  params = context.init(k[2], support, queries)
  s_ctx, q_ctx = context.apply(params, support, queries)
  assert s_ctx.shape == (2, 4, 10) and q_ctx.shape == (2, 10)
  # Each query is the last element of its own sequence [support; query]:
  # the forward direction's support outputs (first 5 units) do not depend
  # on the query, the backward direction's (it reads the query first) do.
  other = queries.at[0].set(queries[0] + 1.0)
  s_other, q_other = context.apply(params, support, other)
  np.testing.assert_allclose(s_other[:, :, :5], s_ctx[:, :, :5], rtol=1e-6)
  assert not np.allclose(s_other[0, :, 5:], s_ctx[0, :, 5:])
  np.testing.assert_allclose(s_other[1], s_ctx[1], rtol=1e-6)   # own sequence
  np.testing.assert_allclose(q_other[1], q_ctx[1], rtol=1e-6)
  # The query output depends on the support.
  _, q_changed = context.apply(params, support.at[0].set(0.0), queries)
  assert not np.allclose(q_changed, q_ctx)


def test_vinyals_fce_with_silent_lstms_is_plain_matching():
  """With every LSTM weight zero, the LSTMs output 0: g = g' (skip) and
  f = f' (h_k = ĥ_k + f'), so FCE reduces to cosine matching."""
  _, exp, params, (xs, ys, xq, _) = _fce_problem("vinyals")
  params = dict(params, context=jax.tree.map(jnp.zeros_like,
                                             params["context"]))
  state, _ = exp.learner.adaptation.adapt(params, xs, ys, num_steps=0)
  embed = lambda x: exp.apply_fn(params, x)
  np.testing.assert_allclose(
      exp.learner.adaptation.logits(state, xq),
      metric.matching_log_probs(embed(xq), embed(xs), ys, N_WAY), rtol=1e-5,
      atol=1e-6)


@pytest.mark.parametrize("variant", ["adml", "vinyals"])
def test_gradients_flow_through_the_lstm_under_an_attack(variant):
  cfg, exp, params, (xs, ys, xq, yq) = _fce_problem(variant)
  pgd = attacks.make_attack("pgd", {"eps": 0.1, "step_size": 0.05,
                                    "num_steps": 3})
  bound = learners.get("matchingnet", "aq").bind(exp.apply_fn, pgd, cfg)
  task = Task(xs, ys, xq, yq)
  loss_fn = lambda p: bound.loss(p, task, jax.random.key(3))[0]
  grads = jax.jit(jax.grad(loss_fn))(params)
  context_grads = jax.tree.leaves(grads["context"])
  assert all(np.isfinite(g).all() for g in context_grads)
  assert sum(float(jnp.abs(g).sum()) for g in context_grads) > 0
  # The attack itself differentiates through the LSTM: it moves the query
  # and raises the loss of the adapted classifier.
  adaptation = bound.adaptation
  state, _ = jax.jit(lambda p: adaptation.adapt(p, xs, ys, num_steps=0))(
      params)
  logits_fn = jax.jit(lambda x: adaptation.logits(state, x))
  x_adv = jax.jit(lambda x: pgd(logits_fn, x, yq, key=jax.random.key(4)))(xq)
  ce = lambda x: optax.softmax_cross_entropy_with_integer_labels(
      logits_fn(x), yq).mean()
  assert float(ce(x_adv)) > float(ce(xq))
  assert float(jnp.abs(x_adv - xq).max()) <= 0.1 + 1e-6


def test_fce_is_refused_for_other_learners():
  with pytest.raises(ConfigError, match="applies to learner 'matchingnet'"):
    tiny_config(learner="protonet", fce="adml").validate()


@pytest.mark.integration
def test_matchingnet_with_adml_fce_trains(tmp_path, digits_train):
  state = training.train(
      tiny_config(learner="matchingnet", fce="adml", num_steps=2,
                  eval_episodes=0), str(tmp_path), train_split=digits_train,
      progress=False)
  assert int(state.step) == 2
  assert "context" in state.params
  chex.assert_tree_all_finite(state.params)


# --- MiniImageNet's class lists ------------------------------------------------

def test_mini_imagenet_warns_on_a_wrong_class_list_and_refuses_overlap(
    tmp_path, caplog):
  from tests import test_dataset_layouts as layouts  # pylint: disable=g-import-not-at-top
  data = layouts.fake_mini(per_class=2, size=84)
  train_images, train_wnids = data["train"]
  # A test split that is the train split: other classes than Ravi's, and
  # the same classes as train.
  data["test"] = (train_images[:40], train_wnids[:40])
  layouts.write_mini_npz(str(tmp_path), data)
  config = Config.make(dataset="mini_imagenet", data_dir=str(tmp_path),
                       n_way=5, k_shot=1, q_query=1)
  builders.load_split(config, "train")
  with caplog.at_level("WARNING"):
    with pytest.raises(DataError, match=r"the train and test "
                       r"splits of mini_imagenet .* share 20 classes"):
      builders.load_split(config, "test")
  assert "differs from the published split" in caplog.text
  assert "missing" in caplog.text and "unexpected" in caplog.text


# --- model selection on the validation classes ---------------------------------

def _image_folder(root, seed=0):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for split in ("train", "val", "test"):
    for c in range(5):
      folder = root / split / f"{split}_class{c}"
      folder.mkdir(parents=True)
      for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                        ).save(folder / f"{i}.png")


def _tiny_sweep_config(**overrides):
  return tiny_config(learner="tafl", num_steps=1, q_query=2, filters=4,
                     train_attack_steps=1, eval_episodes=4,
                     eval_batch_size=4, **overrides).validate()


@pytest.mark.integration   # trains and scores a γ × k grid
def test_sweep_chooses_on_val_and_reports_test_separately(tmp_path,
                                                          monkeypatch):
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  from advmeta_jax.experiments import reproduction  # pylint: disable=g-import-not-at-top
  _image_folder(tmp_path / "data")
  scored = []
  score = reproduction._score  # pylint: disable=protected-access

  def recording(run, attack, data, **kw):
    scored.append((run.name, data.name))
    return score(run, attack, data, **kw)

  monkeypatch.setattr(reproduction, "_score", recording)
  base = _tiny_sweep_config(dataset="image_folder",
                            data_dir=str(tmp_path / "data"), image_size=16)
  out = reproduction.sensitivity_sweep(
      base, str(tmp_path / "sweep"), gammas=(0.0, 2.0), ks=(1.0,),
      attack=evaluation.default_test_attack("pgd", "8/255", num_steps=1),
      num_episodes=4, inner_steps=1, log=lambda _: None, progress=False)
  assert out.selection_split == "val"
  grid = [name for _, name in scored[:2]]
  assert grid == ["image_folder/val", "image_folder/val"]
  best = int(np.argmax(out.robust[:, 0]))
  assert out.chosen == ((0.0, 2.0)[best], 1.0)
  assert scored[2] == (f"γ={out.chosen[0]:g},k=1", "image_folder/test")
  assert "validation classes" in out.markdown
  assert f"{out.chosen_test[0]:.2f}" in out.markdown


@pytest.mark.integration   # trains and scores a γ × k grid
def test_sweep_on_digits_says_it_has_no_val(tmp_path):
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  from advmeta_jax.experiments import reproduction  # pylint: disable=g-import-not-at-top
  messages = []
  out = reproduction.sensitivity_sweep(
      _tiny_sweep_config(), str(tmp_path), gammas=(2.0,), ks=(1.0,),
      attack=evaluation.default_test_attack("pgd", "8/255", num_steps=1),
      num_episodes=4, inner_steps=1, log=messages.append, progress=False)
  assert out.selection_split == "test"
  assert any("no validation classes" in m for m in messages)
  assert "no validation classes" in out.markdown
  assert out.chosen_test[0] == out.robust[0, 0]
  # The grid's files: heatmap, sweep.json, sweep.md.
  assert out.robust.shape == out.clean.shape == out.robust_ci95.shape == (1, 1)
  assert out.heatmap == str(tmp_path / "sensitivity_heatmap.png")
  assert (tmp_path / "sensitivity_heatmap.png").stat().st_size > 0
  saved = json.loads((tmp_path / "sweep.json").read_text())
  assert saved["gammas"] == [2] and saved["robust"] == out.robust.tolist()
  assert (tmp_path / "sweep.md").read_text() == out.markdown + "\n"
  assert "| γ \\ k | 1 |" in out.markdown   # the grid, then the choice


# --- the reproduction configs -------------------------------------------------

def test_tafl_table1_trains_every_defense_as_the_authors_code():
  """evan69/MAML-Def-Repo with its flag defaults: one advertorch
  LinfPGDAttack(eps=0.05, nb_iter=10, rand_init=False) (step 0.01) attacks
  the queries of every defense; MAML trains clean; the strided conv net
  (32/64/128/256), inner step 0.05 clipped at ±20, 5 inner steps, 10 tasks
  per batch, Adam 1e-3."""
  from advmeta_jax import experiments  # pylint: disable=g-import-not-at-top
  exp = experiments.get("tafl_table1")
  assert exp.row_names == ("maml", "adml", "aq", "tafl")
  for row in exp.row_names:
    config = Config.make(**exp.train_fields(row)).validate()
    assert (config.backbone, config.filters, config.inner_lr,
            config.inner_grad_clip, config.inner_steps,
            config.task_batch_size, config.meta_lr, config.q_query) == (
                "conv4_strided", 32, 0.05, 20.0, 5, 10, 1e-3, 15), row
    attack = builders.make_train_attack(config)
    if row == "maml":
      assert attack is None
      continue
    assert attack.hparams == dict(eps=0.05, step_size=0.01, num_steps=10,
                                  random_start=False), row
  assert exp.protocol().test_inner_steps == 5


def test_tafl_table1_tests_with_the_codes_adversaries():
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  from advmeta_jax import experiments  # pylint: disable=g-import-not-at-top
  from advmeta_jax.evaluation import TestCase  # pylint: disable=g-import-not-at-top
  exp = experiments.get("tafl_table1")
  pgd, mi, cw, strong = exp.test_attacks()
  assert dict(pgd.hparams) == dict(eps="0.05", step_size=0.01, num_steps=10,
                                   random_start=False)
  assert dict(mi.hparams) == dict(eps="0.05", step_size=0.01, num_steps=10,
                                  decay=1.0)
  # advertorch's CarliniWagnerL2Attack(initial_const=--attack-eps,
  # max_iterations=--attack-step), its defaults otherwise.
  assert dict(cw.hparams) == dict(
      c=0.05, num_steps=10, binary_search_steps=9, learning_rate=0.01,
      confidence=0.0, abort_early=True, batch_consistent=False)
  assert dict(cw.hparams) == evaluation.CW_TAFL_REFERENCE
  assert strong.label == "cw_l2_strong" and dict(strong.hparams)[
      "num_steps"] == 100
  case = TestCase("clean", "adv")
  assert exp.paper_result("tafl", pgd, case).accuracy == 29.53
  assert exp.paper_result("aq", mi, case).accuracy == 27.94
  assert exp.paper_result("tafl", cw, case).accuracy == 27.75
  assert exp.paper_result("tafl", strong, case) is None


def test_apgd_defaults_to_autoattacks_100_iterations():
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  spec = evaluation.default_test_attack("apgd", "8/255")
  assert dict(spec.hparams)["num_steps"] == 100
  assert dict(evaluation.default_test_attack(
      "apgd", "8/255", apgd_steps=10).hparams)["num_steps"] == 10


def test_tafl_table1_aq_attacks_keeps_the_adversarial_querying_settings():
  from advmeta_jax import experiments  # pylint: disable=g-import-not-at-top
  exp = experiments.get("tafl_table1_aq_attacks")
  for row in exp.row_names:
    config = Config.make(**exp.train_fields(row)).validate()
    assert (config.backbone, config.inner_lr, config.inner_grad_clip) == (
        "conv4", 0.01, 0.0)
    attack = builders.make_train_attack(config)
    if row == "maml":
      assert attack is None
      continue
    assert attack.hparams == dict(eps=8 / 255, step_size=2 / 255,
                                  num_steps=7, random_start=True), row
  pgd, mi, cw, _ = exp.test_attacks()
  assert (pgd.label, dict(pgd.hparams)["num_steps"]) == ("pgd ε=8/255", 20)
  assert mi.label == "mi_fgsm ε=8/255"
  assert dict(cw.hparams)["c"] == 1e-3
  assert exp.protocol().test_inner_steps == 10


def test_adml_tables_use_the_adml_fce_matching_networks():
  from advmeta_jax import experiments  # pylint: disable=g-import-not-at-top
  for table in (1, 2, 3, 4):
    exp = experiments.get(f"adml_table{table}")
    config = Config.make(**exp.train_fields("matchingnet")).validate()
    # gitabcworld/MatchingNetworks on MiniImageNet: batches of 10 tasks, 500
    # epochs × 100 batches, Adam 1e-3 (weight decay 1e-4) halved every 2000
    # iterations, a 64-filter embedding.
    assert (config.fce, config.filters, config.task_batch_size,
            config.num_steps, config.meta_lr, config.meta_lr_halve_every,
            config.meta_weight_decay) == ("adml", 64, 10, 50000, 1e-3, 2000,
                                          1e-4)


def test_the_meta_step_size_halves_and_weight_decay_is_pytorchs():
  """`make_optimizer(halve_every=2000, weight_decay=1e-4)`: Adam's first
  step moves each parameter by ≈ lr·sign(g + wd·θ) (PyTorch's Adam adds
  wd·θ to the gradient), and the step size is halved after 2000 steps."""
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, 1e-5, -0.5])}
  opt = training.make_optimizer(1e-3, halve_every=2000, weight_decay=1e-4)
  updates, state = opt.update(grads, opt.init(params), params)
  expected = -1e-3 * np.sign(np.asarray(grads["w"]) + 1e-4 * np.asarray(
      params["w"]))
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-4)
  # A constant gradient: every bias-corrected Adam update is ≈ −lr(t).
  opt = training.make_optimizer(1e-3, halve_every=2000)

  def step(state, _):
    updates, state = opt.update(grads, state, params)
    return state, updates["w"][0]
  _, moved = jax.jit(lambda s: jax.lax.scan(step, s, None, length=2001))(
      opt.init(params))
  np.testing.assert_allclose(np.asarray(moved)[[0, 1999, 2000]],
                             [-1e-3, -1e-3, -5e-4], rtol=1e-4)
  assert isinstance(training.make_optimizer(1e-3), type(optax.adam(1e-3)))


def test_aq_tables_train_and_test_as_the_authors_code():
  """goldblum/AdversarialQuerying: the natural and AQ rows of ProtoNet,
  R2-D2 (MetaOptNet's R2D2Head) and MetaOptNet's SVM on ResNet-12; the AQ
  rows' queries attacked by PGD-7 at 8/255 in steps of 2/255 from a random
  start; 8 tasks of 6 queries per class; tested with PGD-20 (2/255, random
  start) on 15 queries per class, 1,000 episodes; shrunk on digits with
  ResNet-12 at 1/16 of its channels."""
  from advmeta_jax import experiments  # pylint: disable=g-import-not-at-top
  for dataset in ("mini_imagenet", "cifar_fs"):
    for k_shot in (1, 5):
      exp = experiments.get(f"aq_{dataset}_{k_shot}shot")
      assert exp.row_names == ("protonet", "protonet+aq", "r2d2", "r2d2+aq",
                               "metaoptnet", "metaoptnet+aq")
      for row in exp.row_names:
        config = Config.make(**exp.train_fields(row)).validate()
        assert config.learner_label == row
        assert (config.dataset, config.backbone, config.backbone_width,
                config.k_shot, config.q_query, config.task_batch_size,
                config.num_steps, config.r2d2_head) == (
                    dataset, "resnet12", 1.0, k_shot, 6, 8, 60000,
                    "metaoptnet"), row
        attack = builders.make_train_attack(config)
        if "+aq" in row:
          assert attack.hparams == dict(eps=8 / 255, step_size=2 / 255,
                                        num_steps=7, random_start=True), row
        else:
          assert attack is None, row
        small = Config.make(**exp.train_fields(row, shrink=True)).validate()
        assert (small.dataset, small.backbone, small.backbone_width) == (
            "digits", "resnet12", 1 / 16)
      (pgd,) = exp.test_attacks()
      assert dict(pgd.hparams) == dict(eps="8/255", num_steps=20,
                                       step_size=2 / 255)
      protocol = exp.protocol()
      assert (protocol.test_episodes, protocol.test_q_query,
              protocol.cases) == (1000, 15, "clean/clean,clean/adv")
      # No copy of the paper's tables was found: no cell to compare with.
      assert exp.paper == ()
