"""The learner registry: a learner is an adaptation × an objective.

    learner      adaptation   objective
    maml         gradient     clean
    maml_ad      gradient     maml_ad
    adml         gradient     adml
    aq           gradient     aq
    tafl         gradient     tafl
    protonet     prototype    clean
    matchingnet  matching     clean
    r2d2         ridge        clean    (R2-D2, r2d2.py)
    metaoptnet   svm          clean    (MetaOptNet's SVM, svm.py)
    anil         head         clean    (ANIL: the inner loop adapts the head)

`--robust=aq|tafl|trades|gaussian` puts a robust objective around the
adaptation of a learner whose own objective is the clean one:
`--learner=protonet --robust=tafl` is prototype × tafl, `--learner=maml
--robust=aq` is the `aq` learner (the same code path), `--learner=r2d2
--robust=trades` is ridge × trades (R-MAML's TRADES meta-loss, trades.py),
and `--robust=gaussian` trains on Gaussian-noised queries (gaussian.py,
randomized smoothing's base classifier). The learners with their own
adversarial objective (maml_ad, adml, aq, tafl) refuse another `robust`.

`get(name, robust)` returns the `Learner` entry, which carries everything the
train step and the meta-test need; `Learner.bind` joins it with the built
pieces (the adaptation from the model function, the training attack) and the
static `config.MetaConfig` into a `Bound` learner:

    learner = learners.get("protonet", "tafl")
    bound = learner.bind(apply_fn, attack, config)     # config: config.Config
    loss, aux = bound.loss(params, task, key)          # one task
    step = training.make_train_step(bound, optimizer)

A new learner is one `register` line over existing pieces (or one new
objective or adaptation, see objectives.py and adaptations.py).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax

from advmeta_jax.config import autotune
from advmeta_jax.core import models
from advmeta_jax.learners import adaptations
from advmeta_jax.learners import objectives
from advmeta_jax.learners import trades  # registers the "trades" objective
from advmeta_jax.learners import gaussian  # registers the "gaussian" objective  pylint: disable=g-bad-import-order
from advmeta_jax.learners.adaptations import Adaptation
from advmeta_jax.errors import ConfigError

Array = jax.Array
# The robust objective put around a learner's adaptation ("none": its own):
# the objectives registered with `robust=True`.
ROBUST_LOSSES = ("none",) + tuple(
    name for name, o in objectives.OBJECTIVES.items() if o.robust)

__all__ = ["Bound", "Learner", "Pieces", "ROBUST_LOSSES", "check_batchnorm",
           "get", "names", "register", "robust_learners"]


class Pieces(NamedTuple):
  """What a run builds for its learner: the adaptation (which holds the
  model function) and the training attack (None for a clean objective)."""
  adaptation: Adaptation
  attack: Optional[Callable[..., Array]]


class Bound(NamedTuple):
  """A learner with its built pieces and static config: what a train step
  and the meta-test run. Hashable (a jit constant); equal settings give equal
  `Bound`s, so runs share compiled functions."""
  learner: "Learner"
  pieces: Pieces
  config: Any   # config.MetaConfig

  @property
  def adaptation(self) -> Adaptation:
    return self.pieces.adaptation

  def loss(self, params, task, key):
    """The per-task outer loss `(loss, aux)` of one task."""
    return self.learner.objective.loss(self.pieces.adaptation, params, task,
                                       key, attack=self.pieces.attack,
                                       config=self.config)

  def batch_combine(self, losses: Array, aux: Dict[str, Array]):
    return self.learner.objective.batch_combine(losses, aux, self.config)

  def update_phases(self):
    """None (one meta-update) or the batch combines of sequential updates."""
    return self.learner.objective.update_phases(self.config)


class Learner(NamedTuple):
  """A registry entry: its name, its adaptation kind and its objective, and
  the robust objective that replaced its own ("none": it did not)."""
  name: str
  adaptation: adaptations.Kind
  objective: objectives.Objective
  robust: str = "none"

  @property
  def label(self) -> str:
    """The learner as a results row names it: "protonet+tafl", or "maml"."""
    return self.name if self.robust == "none" else f"{self.name}+{self.robust}"

  @property
  def metric(self) -> bool:
    """Whether the model is conv4's embedding without a head."""
    return self.adaptation.metric

  @property
  def fixed_body(self) -> bool:
    """Whether adapting to a support leaves the body at θ (the metric
    learners and ANIL; `adaptations.Kind.fixed_body`)."""
    return self.adaptation.fixed_body

  def default_attack(self) -> Optional[Tuple[str, str]]:
    """`(attack, eps)` of the training attack when none is configured."""
    return self.objective.default_attack

  def attack_defaults(self) -> objectives.AttackDefaults:
    """The steps and step size of an iterative training attack when
    --train_attack_steps / --train_step_size are not configured."""
    return self.objective.attack_defaults

  def bind(self, apply_fn, attack, config) -> Bound:
    """The learner with its pieces, built from a `config.Config`.

    Args:
      apply_fn: `(params, images) -> logits` (or embeddings for a metric
        learner).
      attack: the training attack, required by an adversarial objective.
      config: the run's `config.Config` (or any object with its `data`,
        `meta` and `loop` sections).

    Raises:
      ConfigError: an adversarial objective without an attack.
    """
    if self.objective.needs_attack and attack is None:
      robust = "" if self.robust == "none" else f" with robust={self.robust!r}"
      raise ConfigError(
          f"learner {self.name!r}{robust} needs a training attack: pass one built "
          "by attacks.make_attack, or set --train_attack when training "
          "from flags.")
    config = autotune.resolve(config)   # a no-op for training.build's config
    return Bound(self, Pieces(self.adaptation.build(apply_fn, config), attack),
                 config.meta)


_REGISTRY: Dict[str, Learner] = {}


def register(name: str, *, adaptation: str = "gradient",
             objective=None) -> Learner:
  """Registers learner `name` = adaptation kind × objective and returns it.

  Args:
    name: the learner's name (the --learner value).
    adaptation: the name of an adaptation kind (adaptations.KINDS).
    objective: the name of a registered objective (default: `name`), or an
      `objectives.Objective`, which is registered too.
  """
  kind = adaptations.get(adaptation)
  if isinstance(objective, objectives.Objective):
    objectives.register(objective)
    objective = objective.name
  obj = objectives.get(objective or name)
  if obj.kinds is not None and kind.name not in obj.kinds:
    raise ConfigError(f"objective {obj.name!r} does not fit the {kind.name} "
                      f"adaptation; it fits: {', '.join(obj.kinds)}.")
  _REGISTRY[name] = Learner(name, kind, obj)
  return _REGISTRY[name]


for _name, _kind, _objective in (
    ("maml", "gradient", "clean"), ("maml_ad", "gradient", "maml_ad"),
    ("adml", "gradient", "adml"), ("aq", "gradient", "aq"),
    ("tafl", "gradient", "tafl"), ("protonet", "prototype", "clean"),
    ("matchingnet", "matching", "clean"), ("r2d2", "ridge", "clean"),
    ("anil", "head", "clean"), ("metaoptnet", "svm", "clean")):
  register(_name, adaptation=_kind, objective=_objective)


def names() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def robust_learners() -> Tuple[str, ...]:
  """The learners that take a robust objective (`--robust`)."""
  return tuple(n for n in names() if _REGISTRY[n].objective.name == "clean")


def get(name: str, robust: str = "none") -> Learner:
  """The learner `name` under the robust objective `robust`.

  Raises:
    ConfigError: an unknown learner or robust objective, or a robust
      objective for a learner that has its own adversarial one.
  """
  if name not in _REGISTRY:
    raise ConfigError(
        f"unknown learner {name!r}; choose one of: {', '.join(names())}.")
  if robust not in ROBUST_LOSSES:
    raise ConfigError(f"unknown robust loss {robust!r}; choose one of: "
                      f"{', '.join(ROBUST_LOSSES)}.")
  entry = _REGISTRY[name]
  if robust == "none":
    return entry
  if entry.objective.name != "clean":
    raise ConfigError(
        f"robust={robust!r} does not apply to learner {name!r}, which has its "
        f"own adversarial loss; robust applies to: "
        f"{', '.join(robust_learners())} (maml with robust=aq/tafl is the "
        "aq/tafl learner). Use robust='none' with this learner.")
  return Learner(name, entry.adaptation, objectives.get(robust), robust)


def check_batchnorm(mode: str, backbone: str, entry: Learner) -> None:
  """Refuses `--batchnorm=running` (`models.BATCHNORM_MODES`) for a learner
  whose inner loop moves the body (its running averages would have to follow
  every inner step, and its test-time steps adapt to the support's
  statistics) or a backbone without running averages. The learners whose
  body stays at θ (`Learner.fixed_body`: the metric learners, and ANIL,
  whose inner loop adapts the head only) see each support and query once
  through the body, as MetaOptNet's training does.

  Raises:
    ConfigError: naming what `running` applies to.
  """
  if mode == "batch":
    return
  if not entry.fixed_body:
    able = ", ".join(n for n in names() if _REGISTRY[n].fixed_body)
    raise ConfigError(
        f"batchnorm={mode!r} applies to the learners whose body stays fixed "
        f"while adapting ({able}), not {entry.name!r}, whose inner loop "
        "moves it: use batchnorm='batch'.")
  models.check_running_batchnorm(backbone)
