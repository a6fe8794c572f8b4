"""Gaussian noise augmentation of the query: the training objective that
matches certification by randomized smoothing.

"Certified Adversarial Robustness via Randomized Smoothing" (Cohen,
Rosenfeld, Kolter 2019, arXiv:1902.02918) trains the base classifier on
inputs with N(0, σ²I) noise added (locuslab/smoothing, `code/train.py`:
`inputs + torch.randn_like(inputs) * noise_sd`, in [0, 1] pixel space, no
clipping, no clean term), at the σ it is later certified with. The base
classifier certified here (evaluation/certify.py) is "adapt to the clean
support set, classify the query image", so the noise goes where the
certificate's noise goes, on the query:

    loss(θ, τ) = L(adapt(θ, S), Q + σ·ε),   ε ~ N(0, I),

with θ' = adapt(θ, S) on the clean support (its `config.inner_steps`
steps, or a metric learner's prototypes / attention) and the meta-gradient
flowing through the adaptation, as in the clean objective. The support is
not noised: at certification it is clean. σ is `--gaussian_sigma` (0: the
clean objective). It fits every adaptation (`--robust=gaussian`).

Importing this module registers the objective "gaussian" (registry.py
does).
"""

from __future__ import annotations

import jax

from advmeta_jax.core import losses
from advmeta_jax.core.episodes import Task
from advmeta_jax.learners import objectives
from advmeta_jax.learners.adaptations import Adaptation
from advmeta_jax.learners.adaptations import support_metrics

Array = jax.Array


def gaussian_query_loss(adaptation: Adaptation, params, task: Task,
                        key: Array, *, attack=None, config):
  """L(θ', Q + σ·ε): the query cross-entropy of the classifier adapted to
  the clean support, on the query with Gaussian noise of standard deviation
  `config.gaussian_sigma` (module docstring).

  Returns:
    `(noisy query cross-entropy, {"query_accuracy" (clean query),
    "noisy_query_accuracy"[, "support_loss"]})`.
  """
  del attack
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  noise = jax.random.normal(key, task.query_images.shape,
                            task.query_images.dtype)
  noisy_logits = adaptation.logits(
      state, task.query_images + config.gaussian_sigma * noise)
  loss = losses.cross_entropy(noisy_logits, task.query_labels)
  clean_logits = adaptation.logits(jax.lax.stop_gradient(state),
                                   task.query_images)
  return loss, {
      "query_accuracy": losses.accuracy(clean_logits, task.query_labels),
      "noisy_query_accuracy": losses.accuracy(noisy_logits,
                                              task.query_labels),
      **support_metrics(curve)}


OBJECTIVE = objectives.register(objectives.Objective(
    "gaussian", gaussian_query_loss, robust=True))
