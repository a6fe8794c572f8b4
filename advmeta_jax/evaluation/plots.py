"""Figures of the evaluation protocol (matplotlib, written as PNG files).

    plot_training meta-training loss and query accuracy per logged step, one
                  line per run (clean and, for robust learners, adversarial)
    plot_curves   query loss and top-1 accuracy per test-time inner step, one
                  line per learner, one column per test case (ADML Figs. 2-5)
    plot_kde      kernel density of TAFL's L_AR(τ) over tasks, one curve per
                  learner (the TAFL figure), with the share above a threshold
    plot_ecdf     the empirical distribution of per-task accuracy, one step
                  curve per learner, with chance and each learner's CVaR
    plot_heatmap  robust accuracy over TAFL's γ × k grid (sensitivity study)
    plot_certified_accuracy  certified accuracy against the L2 radius, one
                  line (with its 95% CI band) per learner (randomized
                  smoothing)

Every function takes plain NumPy data and a path, draws with the
non-interactive Agg backend and returns the path.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from advmeta_jax.evaluation import stats


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  _pyplot().close(fig)
  return path


def plot_training(histories: Mapping[str, Sequence[Mapping[str, float]]],
                  path: str, *, title: str = "") -> str:
  """Meta-training curves: outer loss and query accuracy per logged step.

  Args:
    histories: `{run: [metrics per logged step]}` as `training.load_metrics`
      returns them (each with "step", "loss", "query_accuracy" and, for the
      robust learners, "adv_query_accuracy").
    path: the PNG to write.
    title: figure title.
  """
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for run, history in histories.items():
    steps = [m["step"] for m in history]
    axes[0].plot(steps, [m["loss"] for m in history], marker=".", label=run)
    line, = axes[1].plot(steps, [100 * m["query_accuracy"] for m in history],
                         marker=".", label=f"{run} clean")
    if history and "adv_query_accuracy" in history[0]:
      axes[1].plot(steps, [100 * m["adv_query_accuracy"] for m in history],
                   marker=".", linestyle="--", color=line.get_color(),
                   label=f"{run} adversarial")
  axes[0].set_ylabel("outer loss")
  axes[1].set_ylabel("meta-train query accuracy (%)")
  for ax in axes:
    ax.set_xlabel("meta-training step")
  axes[1].legend(fontsize="small")
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_curves(curves: Mapping[str, Mapping[str, Dict[str, Sequence[float]]]],
                path: str, *, title: str = "") -> str:
  """Per-inner-step curves.

  Args:
    curves: `{case name: {learner: {"loss": [steps+1], "accuracy":
      [steps+1]}}}`, the means over episodes before adaptation (step 0) and
      after each step.
    path: the PNG to write.
    title: figure title.
  """
  plt = _pyplot()
  cases = list(curves)
  fig, axes = plt.subplots(2, len(cases), figsize=(3.6 * len(cases), 6),
                           squeeze=False)
  for col, case in enumerate(cases):
    for learner, c in curves[case].items():
      steps = np.arange(len(c["loss"]))
      axes[0, col].plot(steps, c["loss"], marker=".", label=learner)
      axes[1, col].plot(steps, 100 * np.asarray(c["accuracy"]), marker=".",
                        label=learner)
    axes[0, col].set_title(case)
    axes[1, col].set_xlabel("test-time inner step")
  axes[0, 0].set_ylabel("query loss")
  axes[1, 0].set_ylabel("query top-1 accuracy (%)")
  axes[0, -1].legend(fontsize="small")
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def share_above(values, threshold: float) -> float:
  """Fraction of `values` strictly above `threshold`."""
  values = np.asarray(values, np.float64)
  return float((values > threshold).mean()) if values.size else float("nan")


def plot_kde(samples: Mapping[str, Sequence[float]], path: str, *,
             threshold: float, title: str = "") -> str:
  """Kernel density estimates (scipy, Scott's bandwidth) of L_AR per learner.

  A learner whose samples are (nearly) constant, e.g. all at the floor δ, is
  drawn as a vertical line: a KDE needs a spread.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  everything = np.concatenate([np.asarray(v, np.float64)
                               for v in samples.values()])
  lo, hi = float(everything.min()), float(everything.max())
  pad = 0.1 * max(hi - lo, 1e-3)
  grid = np.linspace(lo - pad, hi + pad, 400)
  for learner, values in samples.items():
    values = np.asarray(values, np.float64)
    label = (f"{learner} ({100 * share_above(values, threshold):.1f}% > "
             f"{threshold:g})")
    if values.std() < 1e-9:
      ax.axvline(values.mean(), label=label, linestyle="--")
      continue
    ax.plot(grid, stats.gaussian_kde(values)(grid), label=label)
  ax.axvline(threshold, color="gray", linewidth=0.8)
  ax.set_xlabel("L_AR(τ) = max(CE_adv − CE_clean, δ)")
  ax.set_ylabel("density over tasks")
  ax.legend(fontsize="small")
  if title:
    ax.set_title(title)
  return _save(fig, path)


def plot_ecdf(samples: Mapping[str, Sequence[float]], path: str, *,
              chance: Optional[float] = None, alpha: float = 0.1,
              title: str = "") -> str:
  """The empirical CDF of per-task accuracy (in %) of each learner, the
  worst tasks at the bottom left: a horizontal line at `alpha` (the CVaR's
  share of tasks) and a vertical one at `chance`; the legend gives each
  learner's CVaR at `alpha` and share of tasks below chance."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for learner, values in samples.items():
    x, f = stats.ecdf(100 * np.asarray(values, np.float64))
    label = f"{learner} (CVaR {100 * alpha:g}% {100 * stats.cvar(values, alpha):.1f}"
    if chance is not None:
      label += f", {100 * stats.share_below(values, chance):.1f}% < chance"
    ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0.0], f]),
            where="post", label=label + ")")
  ax.axhline(alpha, color="gray", linewidth=0.8, linestyle=":")
  if chance is not None:
    ax.axvline(100 * chance, color="gray", linewidth=0.8)
  ax.set_xlabel("query accuracy of a task (%)")
  ax.set_ylabel("share of tasks at or below")
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
  if title:
    ax.set_title(title)
  return _save(fig, path)


def plot_heatmap(values, rows: Sequence, cols: Sequence, path: str, *,
                 row_label: str = "γ", col_label: str = "k",
                 title: str = "", value_label: str = "accuracy (%)") -> str:
  """A `len(rows) × len(cols)` grid of numbers, annotated."""
  plt = _pyplot()
  values = np.asarray(values, np.float64)
  fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 1.0 * len(rows) + 1.5))
  image = ax.imshow(values, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
  ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
  ax.set_xlabel(col_label)
  ax.set_ylabel(row_label)
  for i in range(len(rows)):
    for j in range(len(cols)):
      ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center",
              color="white" if values[i, j] < np.nanmean(values) else "black")
  fig.colorbar(image, ax=ax, label=value_label)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def plot_certified_accuracy(curves: Mapping[str, Mapping[str, Sequence[float]]],
                            path: str, *, title: str = "") -> str:
  """Certified accuracy (%) against the L2 radius, as Cohen et al.'s
  figures (`code/analyze.py`), with a band for the 95% CI over episodes.

  Args:
    curves: `{learner: {"radius": [R], "accuracy": [R], "low": [R],
      "high": [R]}}`, accuracies in [0, 1] (NaN bounds: no band).
    path: the PNG to write.
    title: figure title.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for learner, c in curves.items():
    radius = np.asarray(c["radius"], np.float64)
    line, = ax.plot(radius, 100 * np.asarray(c["accuracy"]), label=learner)
    low, high = (100 * np.asarray(c[k], np.float64) for k in ("low", "high"))
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
      ax.fill_between(radius, low, high, color=line.get_color(), alpha=0.2,
                      linewidth=0)
  ax.set_xlabel("L2 radius")
  ax.set_ylabel("certified accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_xlim(left=0)
  ax.legend(fontsize="small")
  if title:
    ax.set_title(title)
  return _save(fig, path)
