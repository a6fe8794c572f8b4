"""Meta-testing: adapt to unseen tasks, score the query, report mean ± 95% CI.

Every episode `i` is sampled from `fold_in(key(seed), i)`, so the same seed gives
the same episodes to every learner and for any batch size, and rows of a table
are comparable. Adaptation at test time runs `inner_steps` (10 by default, as in
MAML and ADML) plain SGD steps on the support set; the query loss and top-1
accuracy are recorded before adaptation and after every step (the per-step
curves of ADML Figs. 2-5).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax import episodes
from advmeta_jax import maml
from advmeta_jax.errors import ConfigError


def confidence_interval_95(values) -> float:
  """Half-width of the normal 95% confidence interval of the mean.

  `1.96 · std / √n` with the sample standard deviation (ddof=1); 0 for n < 2.
  """
  values = np.asarray(values, np.float64)
  n = values.size
  if n < 2:
    return 0.0
  return float(1.96 * values.std(ddof=1) / np.sqrt(n))


@dataclasses.dataclass
class MetaTestResult:
  """Per-episode results of a meta-test.

  Attributes:
    accuracy: `[episodes]` query accuracy after adaptation.
    loss: `[episodes]` query loss after adaptation.
    step_accuracy: `[episodes, inner_steps + 1]` query accuracy before and after
      each inner step (`[episodes, 1]` when curves were not asked for).
    step_loss: the same for the query loss.
  """
  accuracy: np.ndarray
  loss: np.ndarray
  step_accuracy: np.ndarray
  step_loss: np.ndarray

  @property
  def num_episodes(self) -> int:
    return int(self.accuracy.size)

  @property
  def mean(self) -> float:
    return float(self.accuracy.mean())

  @property
  def ci95(self) -> float:
    return confidence_interval_95(self.accuracy)

  def summary(self) -> Dict[str, float]:
    return {"accuracy": self.mean, "accuracy_ci95": self.ci95,
            "loss": float(self.loss.mean()), "episodes": self.num_episodes,
            "step_accuracy": self.step_accuracy.mean(0).tolist(),
            "step_loss": self.step_loss.mean(0).tolist()}


def episode_keys(seed: int, start: int, count: int) -> jax.Array:
  """Keys of episodes `start .. start+count-1` of the meta-test with `seed`."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(
      jnp.arange(start, start + count))


def evaluate_task(apply_fn: Callable, params, task: episodes.Task, *,
                  inner_lr: float, inner_steps: int,
                  curves: bool = True) -> Dict[str, jax.Array]:
  """Adapts to one task and scores its query.

  Returns:
    `{"query_loss", "query_accuracy"}`, each `[inner_steps + 1]` (before and
    after every step) when `curves`, else `[1]` (after the last step). Curves
    cost one query forward pass per inner step.
  """
  def query_metrics(p):
    logits = apply_fn(p, task.query_images)
    return {"query_loss": maml.cross_entropy(logits, task.query_labels),
            "query_accuracy": maml.accuracy(logits, task.query_labels)}

  adapted, curve = maml.adapt(
      apply_fn, params, task.support_images, task.support_labels,
      inner_lr=inner_lr, num_steps=inner_steps,
      track_fn=query_metrics if curves else None)
  if not curves:
    return {k: v[None] for k, v in query_metrics(adapted).items()}
  before = query_metrics(params)
  if inner_steps == 0:
    return {k: v[None] for k, v in before.items()}
  return {k: jnp.concatenate([before[k][None], curve[k]]) for k in before}


def meta_test(apply_fn: Callable, params, source: episodes.EpisodeSource, *,
              n_way: int, k_shot: int, q_query: int, inner_lr: float,
              inner_steps: int, num_episodes: int, batch_size: int = 20,
              seed: int = 0, curves: bool = False) -> MetaTestResult:
  """Meta-tests `params` on `num_episodes` tasks from `source`.

  Args:
    apply_fn: `(params, images) -> logits`.
    params: meta-trained parameters.
    source: the meta-test split on device (`episodes.make_source`).
    n_way, k_shot, q_query: the episode shape.
    inner_lr, inner_steps: test-time adaptation.
    num_episodes: number of tasks (600 in MAML/ADML, 2000 for a final table).
    batch_size: tasks adapted in parallel (memory knob; results do not depend
      on it).
    seed: selects the episodes.
    curves: also record the query loss/accuracy before and after every inner
      step (costs a query forward pass per step).

  Returns:
    A `MetaTestResult`.
  """
  if int(inner_steps) != inner_steps or inner_steps < 0:
    raise ConfigError(f"inner_steps must be an integer >= 0, got {inner_steps}.")
  if num_episodes < 1:
    raise ConfigError(f"num_episodes must be >= 1, got {num_episodes}.")
  if batch_size < 1:
    raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
  batch_size = min(batch_size, num_episodes)

  @jax.jit
  def run_batch(params, keys, src):
    def one(key):
      task = episodes.sample_task(key, src, n_way=n_way, k_shot=k_shot,
                                  q_query=q_query)
      return evaluate_task(apply_fn, params, task, inner_lr=inner_lr,
                           inner_steps=inner_steps, curves=curves)
    return jax.vmap(one)(keys)

  chunks: List[Dict[str, np.ndarray]] = []
  for start in range(0, num_episodes, batch_size):
    keys = episode_keys(seed, start, batch_size)  # fixed shape: one compile
    chunks.append(jax.device_get(run_batch(params, keys, source)))
  per_step = {k: np.concatenate([c[k] for c in chunks])[:num_episodes]
              for k in chunks[0]}
  return MetaTestResult(accuracy=per_step["query_accuracy"][:, -1],
                        loss=per_step["query_loss"][:, -1],
                        step_accuracy=per_step["query_accuracy"],
                        step_loss=per_step["query_loss"])


def meta_test_config(config, params, split: str = "test", *,
                     num_episodes=None, inner_steps=None, seed=None,
                     curves: bool = False, data=None) -> MetaTestResult:
  """Meta-tests `params` of a run of `config` (a `training.TrainConfig`).

  Loads `split` of the run's dataset (unless `data`, an already loaded
  `ClassSplit`, is given) and uses the run's episode shape; the number of
  episodes, test-time inner steps and seed default to the config's
  `eval_episodes`, `eval_inner_steps` and `seed`.
  """
  from advmeta_jax import training  # pylint: disable=g-import-not-at-top
  exp = training.build(config)
  if data is None:
    data = training.load_split(config, split)
  return meta_test(
      exp.apply_fn, params, episodes.make_source(data), n_way=config.n_way,
      k_shot=config.k_shot, q_query=config.q_query, inner_lr=config.inner_lr,
      inner_steps=config.eval_inner_steps if inner_steps is None
      else inner_steps,
      num_episodes=config.eval_episodes if num_episodes is None
      else num_episodes,
      batch_size=config.eval_batch_size,
      seed=config.seed if seed is None else seed, curves=curves)


def results_table(results: Dict[str, MetaTestResult], config) -> str:
  """Markdown table, one row per learner: accuracy ± 95% CI and the protocol."""
  from advmeta_jax import reports  # pylint: disable=g-import-not-at-top
  shape = f"{config.n_way}-way {config.k_shot}-shot"
  rows = [(name, config.dataset, shape, reports.format_accuracy(r.mean, r.ci95),
           r.num_episodes) for name, r in results.items()]
  return reports.markdown_table(
      ("learner", "dataset", "task", "accuracy % (± 95% CI)", "episodes"), rows)
