"""What a `config.Config` builds: the model, the bound learner, the training
attack, and the data splits checked against the episode shape.

    config ──build──▶ Built(model, apply_fn, learner (bound), image_shape)

`build` is the one place where a run's learner is looked up by name
(`learners.get`); everything downstream receives the bound learner.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from advmeta_jax import attacks
from advmeta_jax.config import autotune
from advmeta_jax import datasets
from advmeta_jax.core import episodes
from advmeta_jax import learners
from advmeta_jax.core import models
from advmeta_jax.config import Config
from advmeta_jax.errors import DataError


def make_train_attack(config: Config, learner: Optional[learners.Learner] = None):
  """The training attack of `config` (`config.attack`, or the objective's
  defaults for what is not given: its attack and ε, and the steps and step
  size of an iterative attack, `objectives.AttackDefaults`); None for a
  clean objective without a configured attack. Equal settings give the same
  function object, so equal runs share compiled steps."""
  learner = learner or learners.get(config.meta.learner, config.meta.robust)
  default_attack, default_eps = learner.default_attack() or (None, None)
  defaults = learner.attack_defaults()
  a = config.attack
  name = a.train_attack or default_attack
  if name is None:
    return None
  eps_text = a.train_eps or default_eps or "0"
  steps = (a.train_attack_steps if a.train_attack_steps is not None
           else defaults.steps)
  if a.train_step_size is not None:
    step_size = attacks.parse_eps(a.train_step_size, "train_step_size")
  elif defaults.step_of_eps is not None:
    step_size = defaults.step_of_eps * attacks.parse_eps(eps_text,
                                                         "train_eps")
  else:
    step_size = attacks.parse_eps(defaults.step_size, "train_step_size")
  return _train_attack(name, eps_text, int(steps), step_size,
                       a.train_random_start)


@functools.lru_cache(maxsize=None)
def _train_attack(name: str, eps_text: str, steps: int, step_size: float,
                  random_start: bool = True):
  """Attack `name` at budget `eps_text`.

  Iterative attacks get `steps` steps; PGD steps of `step_size` from a
  random start or from x (`random_start`), while MI-FGSM keeps its own
  a = ε/T and APGD needs none. FGSM ignores them.
  """
  eps = attacks.parse_eps(eps_text, "train_eps")
  allowed = attacks.hyperparameters(name)
  hparams = {"eps": eps}
  if "num_steps" in allowed:
    hparams["num_steps"] = steps
  if allowed.get("step_size", None) is inspect.Parameter.empty:
    hparams["step_size"] = step_size
  if "random_start" in allowed:
    hparams["random_start"] = random_start
  return attacks.make_attack(name, hparams)


@dataclasses.dataclass
class Built:
  """What a config builds: the model, its function, the bound learner.

  For a metric learner (`learner.learner.metric`) the model is conv4 without
  its head and `apply_fn` returns embeddings; for R2-D2 (the ridge
  adaptation) it is `r2d2.R2D2`, that embedding with the solver's scalars.
  """
  config: Config
  model: Any   # models.Conv4, fce.FCEMatching or r2d2.R2D2
  apply_fn: Callable
  learner: learners.Bound
  image_shape: Tuple[int, int, int]
  # `--batchnorm=running`: the model's batch statistics in a training forward
  # pass (`models.make_batch_stats_fn`), which the train step averages into
  # the running averages; None with `--batchnorm=batch`.
  batch_stats_fn: Optional[Callable] = None

  def initial_batch_stats(self, params):
    """The running averages before training (None without them)."""
    if self.batch_stats_fn is None:
      return None
    return models.init_running_stats(self.batch_stats_fn, params,
                                     self.image_shape)


def image_shape(config: Config) -> Tuple[int, int, int]:
  info = datasets.info(config.data.dataset)
  size = config.data.image_size or info.default_image_size
  return (size, size, info.channels)


def build(config: Config) -> Built:
  """Builds model and bound learner from a validated `Config`, its `auto`
  speed settings resolved for the backend (`autotune.resolve`, once, here;
  the result's `config` is the resolved one). The adaptation kind builds its
  own model; the objective checks the training attack before anything
  compiles."""
  config = autotune.resolve(config)
  entry = learners.get(config.meta.learner, config.meta.robust)
  shape = image_shape(config)
  model = entry.adaptation.make_model(config, shape[0])
  apply_fn = models.make_apply_fn(model)
  attack = make_train_attack(config, entry)
  if entry.objective.check_attack is not None:
    entry.objective.check_attack(attack)
  bound = entry.bind(apply_fn, attack, config)
  stats_fn = (models.make_batch_stats_fn(model)
              if config.model.batchnorm == "running" else None)
  return Built(config, model, apply_fn, bound, shape, stats_fn)


# (dataset, data_dir) -> {split: class names} of the splits loaded so far.
_CLASSES_SEEN: Dict[Tuple[str, Optional[str]], Dict[str, Tuple[str, ...]]] = {}


def check_disjoint(source: Tuple[str, Optional[str]], split: str,
                   class_names: Sequence[str]) -> None:
  """Refuses a split that shares classes with another split of the same
  data loaded in this process (meta-train, -val and -test classes must never
  mix); remembers its classes otherwise."""
  seen = _CLASSES_SEEN.setdefault(source, {})
  for other, names in seen.items():
    shared = sorted(set(names) & set(class_names)) if other != split else []
    if shared:
      where = source[1] or "its default location"
      raise DataError(
          f"the {other} and {split} splits of {source[0]} in {where} share "
          f"{len(shared)} classes (e.g. {shared[:5]}): few-shot splits must "
          "be disjoint by class. Check the files, or the class lists they "
          "carry.")
  seen[split] = tuple(class_names)


def load_split(config: Config, split: str) -> datasets.ClassSplit:
  """Loads a split and checks it can give the configured episodes and that
  it shares no class with the other splits loaded from the same data."""
  d = config.data
  data = datasets.load(d.dataset, split, data_dir=config.loop.data_dir,
                       image_size=d.image_size,
                       cache_dir=config.loop.cache_dir)
  check_disjoint((d.dataset, config.loop.data_dir), split, data.class_names)
  episodes.check_episode_shape(data, n_way=d.n_way, k_shot=d.k_shot,
                               q_query=d.q_query)
  return data
