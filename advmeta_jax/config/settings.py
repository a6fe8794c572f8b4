"""The one declaration of every setting of a meta-training run.

A run's `Config` is six frozen sections, each field declared once with its
default, its help text and its check (`setting(...)` metadata):

    data    the episodes: dataset, image size, N-way K-shot Q-query
    model   the backbone, its width, its BatchNorm at meta-test and the
            compute dtype
    meta    the learner (--learner, --robust), inner loop, meta-optimizer,
            seed and the learners' own hyperparameters (ADML, TAFL,
            TRADES, Gaussian noise, R2-D2's head)
    attack  the training attack of the robust learners
    loop    how the steps are run: their number, logging, checkpoints,
            devices, memory/speed options and where the data is read from;
            none of these changes the result of a step
    eval    the meta-test after training

Every field is also an absl flag of the same (flat) name, generated here by
`define_flags`: `--learner`, `--tafl_gamma`, `--k_shot`, `--train_eps`, ...
Flat names are unique across sections, so `Config.make(k_shot=5)`,
`config.replace(tafl_gamma=0.)` and `config.k_shot` (read access) take them
as well as the nested `config.data.k_shot`.

Resuming a run may change the `loop` and `eval` sections
(`RESUMABLE_SECTIONS`); a change to any other field is refused with the list
of differences (`Config.resume_differences`).

A new hyperparameter is one `setting(...)` line in its section, plus the code
that reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

from advmeta_jax.config.checks import Check
from advmeta_jax.config.checks import AUTO
from advmeta_jax.config.checks import auto_or_bool
from advmeta_jax.config.checks import auto_or_non_negative_int
from advmeta_jax.config.checks import AutoBool
from advmeta_jax.config.checks import AutoInt
from advmeta_jax.config.checks import fraction
from advmeta_jax.config.checks import integer
from advmeta_jax.config.checks import is_int
from advmeta_jax.config.checks import n_way_check
from advmeta_jax.config.checks import non_negative_float
from advmeta_jax.config.checks import non_negative_int
from advmeta_jax.config.checks import optional
from advmeta_jax.config.checks import positive_float
from advmeta_jax.config.checks import positive_int
from advmeta_jax.errors import ConfigError


# --- what the registries above register ------------------------------------
# The settings import nothing of the library: the names a setting allows
# (datasets, learners, conv formulations, ...) and the checks that need a
# registry (an ε's text, an image size the model can take) are registered
# by the package that owns them, when it is imported (advmeta_jax/__init__.py
# imports them all).

_CHOICES: Dict[str, Callable[[], Sequence[str]]] = {}
_DESCRIPTIONS: Dict[str, Callable[[str], str]] = {}
_CHECKS: Dict[str, Callable[..., Any]] = {}


def register_choices(kind: str, names: Callable[[], Sequence[str]], *,
                     describe: Optional[Callable[[str], str]] = None) -> None:
  """Registers the values a setting of `kind` allows ("dataset", "learner",
  "robust", "tafl_reduction", "trades_kl_on", "r2d2_head", "fce",
  "batchnorm", "conv_impl", "compute_dtype", "train_attack"), read when a
  config is checked or flags are defined; `describe(name)` gives a line of help per
  value."""
  _CHOICES[kind] = names
  if describe is not None:
    _DESCRIPTIONS[kind] = describe


def register_check(kind: str, fn: Callable[..., Any]) -> None:
  """Registers the function behind a check that needs a registry: "eps"
  (`(text, name) -> float`), "budget" (`(text, name) -> (norm, ε)`), "image_size" (`(size) -> feature map size`),
  "learner" (`(learner, robust) -> entry`, refusing a bad combination) and
  "batchnorm" (`(mode, backbone, learner entry) -> None`, the same)."""
  _CHECKS[kind] = fn


def choices(kind: str) -> Tuple[str, ...]:
  """The registered values of `kind` (empty before its package is imported)."""
  return tuple(_CHOICES[kind]()) if kind in _CHOICES else ()


def description(kind: str, name: str) -> Optional[str]:
  """The registered one-line description of value `name` of `kind`, if any."""
  describe = _DESCRIPTIONS.get(kind)
  return describe(name) if describe is not None else None


def _choices_of(kind: str) -> Callable[[], Tuple[str, ...]]:
  return lambda: choices(kind)


def _registered(kind: str):
  if kind not in _CHECKS:
    raise ConfigError(f"no {kind} check is registered: import advmeta_jax "
                      "(the package registers it) before checking a config.")
  return _CHECKS[kind]


# The largest image side: a split is held in memory at this size (uint8)
# and a step's episodes in float32; at 512 px a 5-way 1-shot 15-query batch
# of 4 tasks is 0.2 GB of images alone, and the split of 600 images per class
# of 64 classes 30 GB.
MAX_IMAGE_SIZE = 512


def image_size_check(value, name: str) -> None:
  if value is None:
    return
  if not is_int(value) or _registered("image_size")(int(value)) < 1:
    raise ConfigError(f"{name} must be at least 16 (conv4 pools four times "
                      f"by 2), got {value}.")
  if value > MAX_IMAGE_SIZE:
    raise ConfigError(f"{name} must be at most {MAX_IMAGE_SIZE} (the split "
                      "and a step's episodes are held in memory at that "
                      f"size), got {value}.")


def eps_text(value, name: str) -> None:
  """An L-inf budget as text ("8/255", "0.03"); "" means the default."""
  _registered("eps")(value or "0", name)


def attack_budget(value, name: str) -> None:
  """An attack budget as text: an L∞ ε ("8/255") or an L2 radius
  ("l2:0.5")."""
  _registered("budget")(value, name)


def positive_eps_text(value, name: str) -> None:
  if _registered("eps")(value, name) <= 0:
    raise ConfigError(f"{name} must be > 0, got {value!r}.")


# --- the declaration ---------------------------------------------------------

def setting(default, help, *, check: Optional[Check] = None,  # pylint: disable=redefined-builtin
            choices: Optional[Callable[[], Sequence[str]]] = None,
            kind: Optional[type] = None, what: Optional[str] = None):
  """A config field: its default, help text and check, declared once.

  Args:
    default: the default value.
    help: the flag's help text (or a function returning it, for text built
      from a registry).
    check: `(value, name) -> None`, raising `ConfigError` naming the value
      and what is allowed.
    choices: `() -> allowed values` (an enum flag; resolved late, so
      registries may grow after import).
    kind: the flag type when the default does not tell it (None defaults).
    what: how an error names the field ("robust loss"; default its name).
  """
  return dataclasses.field(default=default, metadata=dict(
      help=help, check=check, choices=choices, kind=kind, what=what))


def _described_choices(kind: str, intro: str) -> str:
  return intro + ": " + "; ".join(
      f"{n}: {(description(kind, n) or '').rstrip('.')}"
      for n in choices(kind)) + "."


def _dataset_help() -> str:
  describe = _DESCRIPTIONS.get("dataset", lambda n: "")
  return "Few-shot dataset: " + "; ".join(
      f"{n}: {describe(n)}" for n in choices("dataset"))


def _conv_impl_choices():
  return (AUTO,) + choices("conv_impl")


def train_attacks() -> Tuple[str, ...]:
  """The possible `--train_attack` values: the attacks whose registry entry
  may train (cheap enough for every meta-training step)."""
  return choices("train_attack")


class Section:
  """Shared behaviour of the sections: field-wise checks."""

  def validate(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      choices = f.metadata.get("choices")
      if choices is not None and value is not None and value not in choices():
        raise ConfigError(
            f"unknown {f.metadata.get('what') or f.name} {value!r}; choose "
            f"one of: {', '.join(choices())}.")
      if f.metadata.get("check") is not None:
        f.metadata["check"](value, f.name)
    return self


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  """The episodes: which data, at what size, and the task shape."""
  dataset: str = setting("digits", _dataset_help, choices=_choices_of("dataset"))
  image_size: Optional[int] = setting(
      None, "Resize images to this side (default: the dataset's own).",
      check=image_size_check, kind=int)
  n_way: int = setting(5, "N: classes per task.", check=n_way_check)
  k_shot: int = setting(1, "K: support images per class.", check=positive_int)
  q_query: int = setting(15, "Q: query images per class.", check=positive_int)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
  """The network (`--backbone`, conv4 by default) and its head's extras."""
  backbone: str = setting(
      "conv4", lambda: _described_choices(
          "backbone", "The network every learner runs (its embedding; the "
          "gradient learners add a linear head)"),
      choices=_choices_of("backbone"))
  filters: int = setting(32, "F: filters per conv4 convolution (32 "
                         "MiniImageNet/CIFAR-FS, 64 Omniglot); the first "
                         "block's with conv4_strided; unused by the "
                         "fixed-width backbones (conv4_64, conv4_wide, "
                         "resnet12).",
                         check=positive_int)
  backbone_width: float = setting(
      1.0, "Multiplies the reference channels of the fixed-width backbones "
      "(conv4_64's 64, conv4_wide's 96-192-384-512, resnet12's "
      "64-160-320-640; rounded): 1 is the papers' network, less a thinner "
      "one for quick runs. conv4 and conv4_strided refuse it (--filters "
      "sets theirs).", check=positive_float, kind=float)
  batchnorm: str = setting(
      "batch", "What BatchNorm normalizes with at meta-test. batch: the "
      "statistics of the batch in front of it (the support set, the query "
      "set), as in training (transductive, as the MAML code); running: the "
      "running averages (momentum 0.1) of the training batches' statistics, "
      "as MetaOptNet's eval() (each image on its own), for the learners whose "
      "body stays fixed while adapting (anil, matchingnet, metaoptnet, "
      "protonet, r2d2) on every backbone but conv4_strided.",
      choices=_choices_of("batchnorm"))
  compute_dtype: str = setting(
      "float32", "Convolution input dtype (float32 accumulation and "
      "parameters either way): bfloat16 halves activation memory and is "
      "faster where the hardware has bf16 matmuls.", choices=_choices_of("compute_dtype"))
  fce: str = setting(
      "none", "matchingnet: full context embeddings. adml: the bidirectional "
      "LSTM over support + one query of the implementation ADML cites "
      "(support-normalized similarity); vinyals: the paper's g (BiLSTM with "
      "skip) and f (attention LSTM of --fce_steps reads); none: plain "
      "cosine attention.", choices=_choices_of("fce"))
  fce_hidden: int = setting(32, "matchingnet --fce=adml: LSTM units per "
                            "direction.", check=positive_int)
  fce_steps: int = setting(5, "matchingnet --fce=vinyals: K, the attention "
                           "LSTM's read steps.", check=positive_int)


@dataclasses.dataclass(frozen=True)
class MetaConfig(Section):
  """Meta-learning: the learner, its inner loop and meta-optimizer, the seed,
  and the hyperparameters of the learners' objectives (the static config an
  outer loss receives)."""
  learner: str = setting(
      "maml", "Meta-learner: an adaptation (maml's gradient steps, anil's "
      "on the head only, protonet's prototypes, matchingnet's attention, "
      "r2d2's ridge regression, metaoptnet's SVM) with its objective; "
      "protonet, matchingnet, r2d2 and metaoptnet have no head and no inner "
      "loop.",
      choices=_choices_of("learner"))
  robust: str = setting(
      "none", "Robust objective around the learner's adaptation, for maml, "
      "protonet, matchingnet, r2d2, metaoptnet, anil: aq (adversarial "
      "querying), tafl (aq weighted per task; --tafl_* flags) or trades "
      "(R-MAML: clean loss + --trades_lambda x KL to the PGD-on-KL query) or "
      "gaussian (the query with N(0, gaussian_sigma^2) noise, randomized "
      "smoothing's training); maml with aq/tafl is the aq/tafl learner. "
      "none: the learner's own objective.",
      choices=_choices_of("robust"),
      what="robust loss")
  task_batch_size: int = setting(4, "B: tasks per meta-update.",
                                 check=positive_int)
  inner_lr: float = setting(0.01, "alpha: inner-loop SGD step size.",
                            check=positive_float)
  inner_steps: int = setting(5, "Inner steps in meta-training.",
                             check=positive_int)
  inner_grad_clip: float = setting(
      0.0, "Clip each inner-loop gradient element to [-c, c] before the SGD "
      "step, in training and at meta-test (0: no clipping; the TAFL "
      "authors' code uses 20).", check=non_negative_float)
  first_order: bool = setting(False, "First-order MAML (no gradient through "
                              "inner gradients).")
  meta_lr: float = setting(1e-3, "beta: Adam step size of the meta-update.",
                           check=positive_float)
  meta_lr_halve_every: int = setting(
      0, "Halve the meta step size every this many meta-steps (0: constant; "
      "the Matching Networks code ADML cites halves it every 2000).",
      check=non_negative_int)
  meta_weight_decay: float = setting(
      0.0, "L2 weight decay added to the meta-gradient before Adam "
      "(PyTorch Adam's weight_decay; 0: none).", check=non_negative_float)
  seed: int = setting(0, "Seed of initialisation and episodes.",
                      check=integer)
  adv_fraction: float = setting(
      1.0, "maml_ad: fraction of support and query that gets an adversarial "
      "copy appended (1: full copies).", check=fraction)
  adml_inner_lr_adv: float = setting(
      0.01, "adml: alpha1, inner step size on the adversarial support "
      "(alpha2 is --inner_lr).", check=positive_float)
  adml_beta_clean: float = setting(
      1.0, "adml: beta1, weight of L(theta'_adv, clean query).",
      check=non_negative_float)
  adml_beta_adv: float = setting(
      1.0, "adml: beta2, weight of L(theta'_clean, adversarial query).",
      check=non_negative_float)
  adml_sequential: bool = setting(
      False, "adml: two sequential meta-updates per step (Algorithm 1, line "
      "11 as written) instead of one on the weighted sum.")
  tafl_gamma: float = setting(
      2.0, "tafl: gamma, exponent of the modulating factor (0: aq).",
      check=non_negative_float)
  tafl_k: float = setting(1.0, "tafl: k > 0, scale of L_AR in the "
                          "modulating factor.", check=positive_float)
  tafl_delta: float = setting(1e-3, "tafl: delta > 0, floor of L_AR.",
                              check=positive_float)
  tafl_weighting: str = setting(
      "paper", "tafl: the per-task weights. paper: (1 - exp(-k L_AR))^gamma "
      "normalized within the batch (eqs. 5-6); code: the authors' code's, "
      "the mean over queries x classes of (1 - p_y)^gamma and p_j^gamma of "
      "the attacked queries' softmax, not normalized (gamma 2 there).",
      choices=_choices_of("tafl_weighting"))
  tafl_reduction: str = setting(
      "mean", "tafl: per-task cross-entropy over the queries, mean or sum "
      "(the paper's).", choices=_choices_of("tafl_reduction"))
  trades_lambda: float = setting(
      3.0, "--robust=trades: lambda, weight of the KL term beside the clean "
      "query loss (0: the clean loss); 3 is R-MAML's code's MiniImageNet "
      "value.", check=non_negative_float)
  trades_kl_on: str = setting(
      "support_query", "--robust=trades: the images the KL term and its "
      "attack cover at the adapted classifier: support_query (the support "
      "and the query in one batch, as R-MAML's code) or query.",
      choices=_choices_of("trades_kl_on"))
  gaussian_sigma: float = setting(
      0.25, "--robust=gaussian: sigma, standard deviation of the Gaussian "
      "noise added to the query images (pixels in [0, 1], no clipping) in "
      "the meta-loss; certify at the same sigma (advmeta-certify --sigma). 0: "
      "the clean loss.", check=non_negative_float)
  r2d2_head: str = setting(
      "metaoptnet", "r2d2: the ridge-regression head. metaoptnet: "
      "MetaOptNet's (lambda 50, a learned scale from 1, no bias), as the "
      "AQ paper trains R2-D2; bertinetto: Bertinetto et al.'s code (a ones "
      "column, X and Y divided by sqrt(N*K), lambda 50, a learned scale "
      "from 1e-4 on mini_imagenet and 10 elsewhere, and a learned offset).",
      choices=_choices_of("r2d2_head"))

  def validate(self):
    super().validate()
    if self.adml_beta_clean + self.adml_beta_adv == 0:
      raise ConfigError("adml_beta_clean and adml_beta_adv are both 0: the "
                        "ADML loss would be 0.")
    _registered("learner")(self.learner, self.robust)   # a bad combination
    return self


@dataclasses.dataclass(frozen=True)
class AttackConfig(Section):
  """The training attack of the robust learners (maml, protonet and
  matchingnet without --robust use none)."""
  train_attack: Optional[str] = setting(
      None, "Training attack of the robust learners (default: fgsm for "
      "adml/maml_ad, pgd for aq/tafl and --robust=aq/tafl).",
      choices=train_attacks, kind=str)
  train_eps: str = setting(
      "", "L-inf budget of the training attack, e.g. 8/255 (default: 2/255 "
      "for adml/maml_ad and --robust=trades, 8/255 for aq/tafl and "
      "--robust=aq/tafl).", check=eps_text)
  train_attack_steps: Optional[int] = setting(
      None, "Steps of an iterative training attack (PGD) (default: 7; 1 for "
      "--robust=trades).", check=optional(positive_int), kind=int)
  train_step_size: Optional[str] = setting(
      None, "Step size of a PGD training attack, e.g. 2/255 (default: "
      "2/255; 1.25 x eps for --robust=trades).",
      check=optional(positive_eps_text), kind=str)
  train_random_start: bool = setting(
      True, "A PGD training attack starts at a uniform point of the "
      "eps-ball (Madry et al.); false: at the clean image (advertorch's "
      "LinfPGDAttack(rand_init=False), as the TAFL authors' code).")


@dataclasses.dataclass(frozen=True)
class LoopConfig(Section):
  """How the steps run; none of these changes what a step computes (beyond
  float rounding), so a resumed run may change them."""
  num_steps: int = setting(300, "Meta-training steps (meta-updates).",
                           check=positive_int)
  log_every: int = setting(50, "Write metrics every this many steps.",
                           check=positive_int)
  tensorboard: bool = setting(
      True, "Also write the metrics as TensorBoard summaries to WORKDIR/tb "
      "(metrics.jsonl is written either way).")
  checkpoint_every: int = setting(100, "Save a checkpoint every this many "
                                  "steps.", check=positive_int)
  keep_checkpoints: int = setting(3, "Checkpoints kept (the newest).",
                                  check=positive_int)
  num_devices: int = setting(
      0, "Devices the task batch is sharded over (0: all devices of all "
      "hosts); task_batch_size must be a multiple.", check=non_negative_int)
  # The three below only change speed and memory: `auto` (the default) is
  # the value the table of autotune.py measured fastest on the backend the
  # run finds (jax.default_backend()); train logs what it resolved to.
  remat: Any = setting(
      AUTO, "Rematerialize the inner steps in the meta-gradient (same "
      "result, less memory, ~1/3 more compute): true, false or auto (the "
      "backend's measured choice, advmeta_jax/config/autotune.py).",
      check=auto_or_bool, kind=AutoBool)
  parallel_tasks: Any = setting(
      AUTO, "Tasks adapted at once (0: the whole task batch); fewer run in "
      "sequential rounds, each task's meta-gradient taken in its round: same "
      "result, memory of parallel_tasks tasks. auto: the backend's measured choice "
      "(advmeta_jax/config/autotune.py).", check=auto_or_non_negative_int,
      kind=AutoInt)
  conv_impl: str = setting(
      AUTO, "Convolution formulation (same function): matmul (patches and "
      "one matmul), xla (lax.conv) or hybrid (lax.conv, its kernel gradient as "
      "chunked matmuls, custom derivatives); auto: the backend's measured choice "
      "(advmeta_jax/config/autotune.py).", choices=_conv_impl_choices)
  data_dir: Optional[str] = setting(
      None, "Directory of the data, in any layout of docs/datasets.md (e.g. "
      "the CIFAR-100 archives, MiniImageNet's pickles or HDF5, Omniglot's "
      "zips), or a tensorflow-datasets data_dir.", kind=str)
  cache_dir: Optional[str] = setting(
      None, "Folder for the prepared caches of slow dataset formats "
      "(default: advmeta_cache/ next to the data).", kind=str)


@dataclasses.dataclass(frozen=True)
class EvalConfig(Section):
  """The meta-test after training (and the defaults of launch.evaluate)."""
  eval_episodes: int = setting(
      600, "Meta-test episodes (0: no meta-test after training).",
      check=non_negative_int)
  eval_inner_steps: int = setting(10, "Inner steps at meta-test time.",
                                  check=positive_int)
  eval_batch_size: int = setting(20, "Meta-test tasks per compiled call "
                                 "(no result depends on it).", check=positive_int)


SECTIONS: Dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "meta": MetaConfig,
    "attack": AttackConfig, "loop": LoopConfig, "eval": EvalConfig}
# The sections a resumed run may change.
RESUMABLE_SECTIONS = ("loop", "eval")


def fields() -> Iterator[Tuple[str, dataclasses.Field]]:
  """`(section name, field)` of every setting, in declaration order."""
  for section, cls in SECTIONS.items():
    for f in dataclasses.fields(cls):
      yield section, f


# flat name -> section name
SECTION_OF: Dict[str, str] = {f.name: s for s, f in fields()}


def _split_flat(flat: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
  unknown = sorted(set(flat) - set(SECTION_OF))
  if unknown:
    raise ConfigError(f"unknown config fields {unknown}; known: "
                      f"{sorted(SECTION_OF)}.")
  nested: Dict[str, Dict[str, Any]] = {s: {} for s in SECTIONS}
  for name, value in flat.items():
    nested[SECTION_OF[name]][name] = value
  return nested


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a meta-training run (saved as config.json).

  The defaults are the quickstart: MAML, 5-way 1-shot on the offline digits.
  Hashable: equal configs share compiled steps.
  """
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  meta: MetaConfig = MetaConfig()
  attack: AttackConfig = AttackConfig()
  loop: LoopConfig = LoopConfig()
  eval: EvalConfig = EvalConfig()

  RESUMABLE_SECTIONS: ClassVar[Tuple[str, ...]] = RESUMABLE_SECTIONS

  @classmethod
  def make(cls, **flat) -> "Config":
    """A config from flat field names (`Config.make(learner="tafl")`)."""
    return cls(**{s: SECTIONS[s](**values)
                  for s, values in _split_flat(flat).items()})

  def replace(self, **flat) -> "Config":
    """A copy with the flat-named fields changed."""
    return dataclasses.replace(self, **{
        s: dataclasses.replace(getattr(self, s), **values)
        for s, values in _split_flat(flat).items() if values})

  def __getattr__(self, name: str):
    # Read access by flat name: config.k_shot is config.data.k_shot. Only
    # called for names that are not attributes (the sections are).
    section = SECTION_OF.get(name)
    if section is None:
      raise AttributeError(f"{type(self).__name__} has no field {name!r}")
    return getattr(getattr(self, section), name)

  def flat(self) -> Dict[str, Any]:
    """`{flat name: value}` of every field."""
    return {f.name: getattr(getattr(self, s), f.name) for s, f in fields()}

  def changes(self) -> Dict[str, Any]:
    """`{flat name: value}` of the fields that differ from their default."""
    default = Config()
    return {f.name: getattr(getattr(self, s), f.name) for s, f in fields()
            if getattr(getattr(self, s), f.name) != getattr(
                getattr(default, s), f.name)}

  def describe(self) -> str:
    """The settings that differ from the defaults as the flags that give
    them (`--k_shot=5 --learner=tafl`), or a phrase saying there are none."""
    changed = self.changes()
    if not changed:
      return "every setting at its default"
    return " ".join(f"--{name}={value}" for name, value in changed.items())

  def to_dict(self) -> Dict[str, Dict[str, Any]]:
    """`{section: {field: value}}` (the JSON of config.json)."""
    return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

  @classmethod
  def from_dict(cls, d: Dict[str, Any]) -> "Config":
    """The inverse of `to_dict`; also reads the flat dict of earlier
    versions' config.json."""
    if d and all(isinstance(v, dict) for v in d.values()) and set(d) <= set(
        SECTIONS):
      flat = {}
      for section, values in d.items():
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(
            SECTIONS[section])})
        if unknown:
          raise ConfigError(f"unknown fields {unknown} in config section "
                            f"{section!r}.")
        flat.update(values)
      return cls.make(**flat)
    return cls.make(**d)

  def validate(self) -> "Config":
    """Checks every field; raises `ConfigError` naming the field and value."""
    for s in SECTIONS:
      getattr(self, s).validate()
    _registered("backbone_width")(self.model.backbone,
                                  self.model.backbone_width)
    if self.model.fce != "none" and self.meta.learner != "matchingnet":
      raise ConfigError(f"fce={self.model.fce!r} applies to learner "
                        f"'matchingnet' only, not {self.meta.learner!r}; use "
                        "fce='none'.")
    p, b = self.loop.parallel_tasks, self.meta.task_batch_size
    if p != AUTO and (not is_int(p) or p < 0 or (p and b % p)):
      raise ConfigError(
          f"parallel_tasks must be 0 (the whole batch) or a divisor of "
          f"task_batch_size={b}, got {p!r}.")
    entry = _registered("learner")(self.meta.learner, self.meta.robust)
    if self.model.batchnorm != "batch":
      _registered("batchnorm")(self.model.batchnorm, self.model.backbone,
                               entry)
    given = [f"--{k}" for k in ("train_attack", "train_eps")
             if getattr(self.attack, k)]
    if given and entry.default_attack() is None:
      raise ConfigError(
          f"learner {entry.label!r} trains on clean tasks and uses no "
          f"training attack, so {' and '.join(given)} would be ignored: drop "
          "them, or choose a robust learner (aq, tafl, adml, maml_ad) or "
          "--robust=aq|tafl|trades.")
    return self

  def resume_differences(self, old: "Config") -> List[str]:
    """What differs from `old` outside `RESUMABLE_SECTIONS`, as
    `"name: old -> new"` lines (empty: this config may resume `old`'s run)."""
    return [f"{f.name}: {getattr(getattr(old, s), f.name)!r} -> "
            f"{getattr(getattr(self, s), f.name)!r}"
            for s, f in fields() if s not in self.RESUMABLE_SECTIONS
            and getattr(getattr(old, s), f.name) != getattr(
                getattr(self, s), f.name)]

  @property
  def learner_label(self) -> str:
    """The learner as a results row names it: "protonet+tafl", or "maml"."""
    if self.meta.robust == "none":
      return self.meta.learner
    return f"{self.meta.learner}+{self.meta.robust}"
