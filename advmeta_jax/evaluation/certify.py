"""Certified accuracy of trained few-shot learners, by randomized smoothing.

    workdirs ──certify_workdirs──▶ {learner: CertifyResult} + report
    run ──certify_run──▶ CertifyResult (per-episode certificates)

The base classifier of an episode is the learner's meta-test classifier:
adapt to the task's clean support set (`Adaptation.adapt`, the test-time
inner steps; computed once per episode), then classify the query images.
Its smoothed version is certified at every query image with CERTIFY
(smoothing.py; Cohen, Rosenfeld, Kolter 2019, "Certified Adversarial
Robustness via Randomized Smoothing", arXiv:1902.02918): Gaussian noise of
standard deviation σ on the query images in [0, 1] pixel space, n0 draws to
select the class, n to bound its probability at failure probability α.
What is certified is each query image's prediction against any L2
perturbation of that image within the radius, the support set and the other
query images held clean; the support set itself (poisoning) is not.

Episode i is sampled from `fold_in(key(seed), i)` as in the meta-test
(metatest.py), so with the same seed and inner steps the episodes and the
base classifier's clean accuracy are the meta-test's. The noise of episode i
is split from that key too, so every learner sees the same noise draws.

Certified accuracy at radius r is the share of an episode's query images
predicted right with a radius ≥ r (abstentions count as wrong); the tables
give its mean over episodes with a Student-t 95% CI (stats.mean_ci_t).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.config import EvalConfig
from advmeta_jax.config.certification import CertifyConfig
from advmeta_jax.core import episodes
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import metatest
from advmeta_jax.evaluation import plots
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import smoothing
from advmeta_jax.evaluation import stats
from advmeta_jax.evaluation.reports import Report
from advmeta_jax.evaluation.reports import write_json
from advmeta_jax.evaluation.tables import markdown_table
from advmeta_jax.learners import adaptations
from advmeta_jax.training import builders
from advmeta_jax.training import rundir

Log = Callable[[str], None]


@dataclasses.dataclass
class CertifyResult:
  """One learner's certificates, `[episodes, queries]` each.

  Attributes:
    labels: the query labels.
    prediction: CERTIFY's class, `smoothing.ABSTAIN` where it abstained.
    radius: the certified L2 radius (0 where it abstained).
    p_lower: p̲A, the lower confidence bound of the selected class.
    clean_prediction: the base classifier on the clean query images.
    smoothed_prediction: PREDICT's class (None unless asked for).
    settings: the `CertifyConfig` it ran with.
    seconds: wall time of the sampling.
  """
  labels: np.ndarray
  prediction: np.ndarray
  radius: np.ndarray
  p_lower: np.ndarray
  clean_prediction: np.ndarray
  settings: CertifyConfig
  smoothed_prediction: Optional[np.ndarray] = None
  seconds: float = 0.0

  @property
  def num_episodes(self) -> int:
    return int(self.labels.shape[0])

  def certified_accuracy(self, radius: float) -> np.ndarray:
    """`[episodes]` share of query images certified correct at `radius`."""
    return np.mean((self.prediction == self.labels)
                   & (self.radius >= radius), axis=1)

  def clean_accuracy(self) -> np.ndarray:
    """`[episodes]` accuracy of the base classifier on the clean query."""
    return np.mean(self.clean_prediction == self.labels, axis=1)

  def abstained(self) -> np.ndarray:
    """`[episodes]` share of query images where CERTIFY abstained."""
    return np.mean(self.prediction == smoothing.ABSTAIN, axis=1)

  def smoothed_accuracy(self) -> Optional[np.ndarray]:
    """`[episodes]` PREDICT's accuracy (abstentions wrong), or None."""
    if self.smoothed_prediction is None:
      return None
    return np.mean(self.smoothed_prediction == self.labels, axis=1)

  def smoothed_abstained(self) -> Optional[np.ndarray]:
    if self.smoothed_prediction is None:
      return None
    return np.mean(self.smoothed_prediction == smoothing.ABSTAIN, axis=1)

  def curve(self, radii: Sequence[float]) -> Dict[str, List[float]]:
    """Certified accuracy at each radius: `{"radius", "accuracy", "low",
    "high"}` (means over episodes and their Student-t 95% CI)."""
    rows = [stats.mean_ci_t(self.certified_accuracy(r)) for r in radii]
    return {"radius": [float(r) for r in radii],
            **{k: [float(row[i]) for row in rows]
               for i, k in enumerate(("accuracy", "low", "high"))}}

  def summary(self) -> Dict[str, object]:
    """The numbers of the report, JSON-ready."""
    def mean_ci(values):
      mean, low, high = stats.mean_ci_t(values)
      return {"mean": mean, "low": low, "high": high}
    out = {"episodes": self.num_episodes, "seconds": self.seconds,
           "clean_accuracy": mean_ci(self.clean_accuracy()),
           "abstained": mean_ci(self.abstained()),
           "certified_accuracy": {
               f"{r:g}": mean_ci(self.certified_accuracy(r))
               for r in self.settings.radius_values},
           "settings": dataclasses.asdict(self.settings)}
    if self.smoothed_prediction is not None:
      out["smoothed_accuracy"] = mean_ci(self.smoothed_accuracy())
      out["smoothed_abstained"] = mean_ci(self.smoothed_abstained())
    return out


# --- one learner --------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _compiled_episode(adaptation: adaptations.Adaptation, n_way: int,
                      k_shot: int, q_query: int, inner_steps: int, n0: int,
                      n: int, noise_batch: int, predict: bool):
  """The jitted `(params, key, source, σ) -> counts` of one episode."""
  @jax.jit
  def run(params, key, src, sigma):
    task_key, noise_key = jax.random.split(key)
    task = episodes.sample_task(task_key, src, n_way=n_way, k_shot=k_shot,
                                q_query=q_query)
    state, _ = adaptation.adapt(params, task.support_images,
                                task.support_labels, num_steps=inner_steps)
    logits_fn = lambda x: adaptation.logits(state, x)
    keys = jax.random.split(noise_key, 3)

    def counts(key, num_samples):
      return smoothing.noise_counts(
          logits_fn, task.query_images, key, sigma=sigma,
          num_samples=num_samples, batch_size=noise_batch,
          num_classes=n_way)

    out = {"labels": task.query_labels,
           "clean": jnp.argmax(logits_fn(task.query_images), axis=-1),
           "selection": counts(keys[0], n0), "estimation": counts(keys[1], n)}
    if predict:
      out["predict"] = counts(keys[2], n)
    return out
  return run


def certify_run(adaptation: adaptations.Adaptation, params,
                source: episodes.EpisodeSource, *, settings: CertifyConfig,
                n_way: int, k_shot: int, q_query: int, inner_steps: int,
                num_episodes: int, seed: int = 0) -> CertifyResult:
  """Certifies the smoothed adapt-then-predict classifier of `params` at
  every query image of `num_episodes` episodes.

  Args:
    adaptation: the learner's `adaptations.Adaptation`.
    params: meta-trained parameters.
    source: the test split on the device (`episodes.make_source`).
    settings: σ, n0, n, α, the noise batch and whether to run PREDICT.
    n_way, k_shot, q_query: the episode shape.
    inner_steps: test-time adaptation steps.
    num_episodes: episodes to certify.
    seed: selects the episodes and the noise (as the meta-test's seed).
  """
  settings = settings.validate()
  for name, value in (("inner_steps", inner_steps),
                      ("num_episodes", num_episodes)):
    if int(value) != value or value < 1:
      raise ConfigError(f"{name} must be an integer >= 1, got {value}.")
  run = _compiled_episode(adaptation, n_way, k_shot, q_query, inner_steps,
                          settings.n0, settings.n, settings.noise_batch,
                          settings.predict)
  start = time.perf_counter()
  outs = [jax.device_get(run(params, key, source, settings.sigma))
          for key in metatest.episode_keys(seed, 0, num_episodes)]
  seconds = time.perf_counter() - start
  stacked = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
  certificates = [smoothing.certify_counts(o["selection"], o["estimation"],
                                           alpha=settings.alpha,
                                           sigma=settings.sigma) for o in outs]
  return CertifyResult(
      labels=stacked["labels"], clean_prediction=stacked["clean"],
      prediction=np.stack([c.prediction for c in certificates]),
      radius=np.stack([c.radius for c in certificates]),
      p_lower=np.stack([c.p_lower for c in certificates]),
      settings=settings, seconds=seconds,
      smoothed_prediction=(np.stack([smoothing.predict_counts(
          o["predict"], alpha=settings.alpha) for o in outs])
                           if settings.predict else None))


# --- trained runs ---------------------------------------------------------------

def certify_runs(runs: Sequence[protocol.Run], *, settings: CertifyConfig,
                 num_episodes: int, inner_steps: int, seed: int = 0,
                 q_query: Optional[int] = None, data=None,
                 split: str = "test", log: Log = print
                 ) -> Dict[str, CertifyResult]:
  """Every run certified on the same episodes and noise; `{run name:
  result}`. Runs must share the dataset and episode shape."""
  protocol.check_same_episodes(runs)
  first = runs[0].config
  if data is None:
    data = builders.load_split(first, split)
  source = episodes.make_source(data)
  results = {}
  for run in runs:
    result = certify_run(
        metatest.adaptation_for(run.config), run.params, source,
        settings=settings, n_way=first.n_way, k_shot=first.k_shot,
        q_query=q_query or first.q_query, inner_steps=inner_steps,
        num_episodes=num_episodes, seed=seed)
    cells = ", ".join(
        f"r={r:g}: {100 * result.certified_accuracy(r).mean():.1f}%"
        for r in settings.radius_values)
    log(f"{run.name:>12}: {cells} ({result.seconds:.1f} s)")
    results[run.name] = result
  return results


def _cell(values) -> str:
  mean, low, high = stats.mean_ci_t(values)
  half = (high - low) / 2 if np.isfinite(high) else float("nan")
  return metatest.format_accuracy(mean, half)


def certification_table(results: Mapping[str, CertifyResult]) -> str:
  """One row per learner: the base classifier's clean accuracy, certified
  accuracy at each radius, CERTIFY's abstentions (and PREDICT's accuracy
  and abstentions when run), in % ± 95% CI over episodes."""
  first = next(iter(results.values()))
  radii = first.settings.radius_values
  header = (["learner", "clean (base)"] + [f"r = {r:g}" for r in radii]
            + ["abstained"])
  predict = first.smoothed_prediction is not None
  if predict:
    header += ["PREDICT", "PREDICT abstained"]
  rows = []
  for name, r in results.items():
    row = [name, _cell(r.clean_accuracy())]
    row += [_cell(r.certified_accuracy(radius)) for radius in radii]
    row.append(_cell(r.abstained()))
    if predict:
      row += [_cell(r.smoothed_accuracy()), _cell(r.smoothed_abstained())]
    rows.append(row)
  return markdown_table(header, rows)


def write_certification(results: Mapping[str, CertifyResult], outdir: str, *,
                        header: str = "") -> Report:
  """Writes certification.md (the table), certification.json (every
  number, the settings and the per-episode certified accuracies) and
  certified_accuracy.png (the curve on a grid of radii) to `outdir`."""
  os.makedirs(outdir, exist_ok=True)
  first = next(iter(results.values()))
  largest = max([max(first.settings.radius_values)]
                + [float(r.radius.max()) for r in results.values()])
  grid = np.linspace(0.0, max(largest, 1e-3) * 1.05, 101)
  figure = plots.plot_certified_accuracy(
      {name: r.curve(grid) for name, r in results.items()},
      os.path.join(outdir, "certified_accuracy.png"),
      title=f"randomized smoothing, σ = {first.settings.sigma:g}")
  markdown = "\n\n".join(filter(None, [header,
                                       certification_table(results)])) + "\n"
  md_path = os.path.join(outdir, "certification.md")
  with open(md_path, "w") as f:
    f.write(markdown)
  json_path = os.path.join(outdir, "certification.json")
  write_json(json_path, {name: {**r.summary(), "per_episode": {
      f"{radius:g}": r.certified_accuracy(radius).tolist()
      for radius in r.settings.radius_values}}
                         for name, r in results.items()})
  return Report(markdown, {"figure": figure, "report": md_path,
                           "json": json_path})


@dataclasses.dataclass(frozen=True, eq=False)
class Certification:
  """Trained runs certified: the runs, their results, the written report."""
  runs: tuple
  results: Dict[str, CertifyResult]
  report: Report


def certify_workdirs(workdirs: Sequence[str], *, settings: CertifyConfig,
                     names: Optional[Sequence[Optional[str]]] = None,
                     checkpoint_step: Optional[int] = None,
                     split: str = "test", data_dir: Optional[str] = None,
                     out: Optional[str] = None,
                     num_episodes: Optional[int] = None,
                     inner_steps: Optional[int] = None, seed: int = 0,
                     q_query: Optional[int] = None,
                     log: Log = print) -> Certification:
  """Certifies the runs in `workdirs` on the same episodes; writes the
  report to `out` (default `<first workdir>/certify`).

  `num_episodes` and `inner_steps` default to the first run's
  `eval_episodes` and `eval_inner_steps`; the other arguments are those of
  `evaluation.protocol` (`reproduction.evaluate_workdirs`).
  """
  runs = protocol.load_runs(workdirs, names=names, step=checkpoint_step,
                            data_dir=data_dir, log=log)
  out = rundir.writable_dir(out or os.path.join(workdirs[0], "certify"),
                            "--out")
  first = runs[0].config
  # A run trained with --eval_episodes=0 takes the default of the setting.
  episodes_ = (num_episodes or first.eval_episodes
               or EvalConfig().eval_episodes)
  inner_steps = inner_steps or first.eval_inner_steps
  results = certify_runs(runs, settings=settings, num_episodes=episodes_,
                         inner_steps=inner_steps, seed=seed, q_query=q_query,
                         split=split, log=log)
  s = settings
  header = (f"# Certified accuracy on {first.dataset} ({split} classes), "
            f"{first.n_way}-way {first.k_shot}-shot\n\nRandomized smoothing "
            f"of the adapt-then-predict classifier: σ = {s.sigma:g}, n0 = "
            f"{s.n0}, n = {s.n}, α = {s.alpha:g}; {episodes_} episodes, "
            f"{q_query or first.q_query} queries per class, {inner_steps} "
            f"test-time inner steps, seed {seed}. Certified accuracy at L2 "
            "radius r in % ± 95% CI over episodes (abstentions count as "
            "wrong).")
  report = write_certification(results, out, header=header)
  return Certification(tuple(runs), results, report)
