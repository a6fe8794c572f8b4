"""Meta-testing: adapt to unseen tasks, score the query, report mean ± 95% CI.

The protocol of the ADML and TAFL tables: each test case is a support mode ×
a query mode,

    support ∈ {clean, adv, mixed}   (mixed: 40% of each class's support
                                     images adversarial; needs K ≥ 2)
    query   ∈ {clean, adv}

under one attack (name, ε and its other hyperparameters). Who is attacked:
the support attack targets the meta-initialization θ (the
model before adaptation), the query attack targets the classifier adapted to
that task's (possibly attacked) support, θ'. A learner is seen only through
its `adaptations.Adaptation`, so the same code tests MAML-style and metric
learners.

Every episode `i` is sampled from `fold_in(key(seed), i)`, and its attack keys
are split from that same key, so the same seed gives the same episodes and the
same random starts to every learner and for any batch size: rows of a table
are comparable. Adaptation at test time runs `inner_steps` (10 by default, as
in MAML and ADML) steps on the support set; with `curves` the query loss and
top-1 accuracy are recorded before adaptation and after every step (the
per-step curves of ADML Figs. 2-5; under an adversarial query the query is
re-attacked against the classifier of every step).

This module is one learner's meta-test (`run_case`, `meta_test`,
`meta_test_config`) and its vocabulary (`TestCase`, `AttackSpec`,
`MetaTestResult`). Many runs under one protocol are protocol.py, tables and
figures reports.py; neither is imported here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advmeta_jax.core import losses
from advmeta_jax.learners import adaptations
from advmeta_jax import attacks
from advmeta_jax.config import autotune
from advmeta_jax.training import builders
from advmeta_jax.core import episodes
from advmeta_jax.errors import ConfigError

Array = jax.Array
Attack = Callable[..., Array]   # (logits_fn, x, y, *, key) -> x_adv

SUPPORT_MODES = ("clean", "adv", "mixed")
QUERY_MODES = ("clean", "adv")
MIXED_ADV_FRACTION = 0.4   # ADML's "40%" support
# Per-episode metrics of AutoAttack's stages: `stage/<name>`.
STAGE_PREFIX = "stage/"


def confidence_interval_95(values) -> float:
  """Half-width of the normal 95% confidence interval of the mean.

  `1.96 · std / √n` with the sample standard deviation (ddof=1); 0 for n < 2.
  """
  values = np.asarray(values, np.float64)
  n = values.size
  if n < 2:
    return 0.0
  return float(1.96 * values.std(ddof=1) / np.sqrt(n))


def format_accuracy(mean: float, ci95: float) -> str:
  """`0.4812, 0.0123` → `"48.12 ± 1.23"` (percent): a cell of every table."""
  return f"{100 * mean:.2f} ± {100 * ci95:.2f}"


# --- test cases -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TestCase:
  """One support mode × query mode of the protocol (e.g. `adv/clean`)."""
  __test__ = False   # not a pytest class
  support: str = "clean"
  query: str = "clean"

  def __post_init__(self):
    if self.support not in SUPPORT_MODES:
      raise ConfigError(f"unknown support mode {self.support!r}; choose one "
                        f"of: {', '.join(SUPPORT_MODES)}.")
    if self.query not in QUERY_MODES:
      raise ConfigError(f"unknown query mode {self.query!r}; choose one of: "
                        f"{', '.join(QUERY_MODES)}.")

  @property
  def name(self) -> str:
    return f"{self.support}/{self.query}"

  @property
  def needs_attack(self) -> bool:
    return self.support != "clean" or self.query != "clean"

  def __str__(self) -> str:
    return self.name


ALL_CASES = tuple(TestCase(s, q) for s in SUPPORT_MODES for q in QUERY_MODES)
ONE_SHOT_CASES = tuple(c for c in ALL_CASES if c.support != "mixed")


def parse_cases(spec: str) -> Tuple[TestCase, ...]:
  """`"all"`, `"robust"` (clean/clean, clean/adv) or a comma-separated list
  of `support/query` (e.g. `"clean/clean,adv/adv,mixed/clean"`)."""
  spec = spec.strip()
  if spec == "all":
    return ALL_CASES
  if spec == "robust":
    return (TestCase("clean", "clean"), TestCase("clean", "adv"))
  cases = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    parts = item.split("/")
    if len(parts) != 2:
      raise ConfigError(
          f"bad test case {item!r}: write support/query, e.g. clean/adv, with "
          f"support in {SUPPORT_MODES} and query in {QUERY_MODES}; or 'all' "
          "or 'robust'.")
    cases.append(TestCase(*parts))
  if not cases:
    raise ConfigError("no test cases given; e.g. 'all' or 'clean/adv'.")
  return tuple(dict.fromkeys(cases))


def cases_for_shots(cases: Sequence[TestCase], k_shot: int
                    ) -> Tuple[TestCase, ...]:
  """`cases` without the 40%-support ones when K is too small for them."""
  if mixed_adv_count(k_shot) is None:
    return tuple(c for c in cases if c.support != "mixed")
  return tuple(cases)


def mixed_adv_count(k_shot: int) -> Optional[int]:
  """Adversarial support images per class in the 40% case (None: impossible).

  round(0.4·K), which must leave at least one adversarial and one clean image
  per class: K = 5 gives 2 (ADML's 5-shot tables); K = 1 gives none, which is
  why the seed has no 40% rows for 1-shot.
  """
  m = int(math.floor(MIXED_ADV_FRACTION * k_shot + 0.5))
  return m if 1 <= m < k_shot else None


def mixed_support_mask(labels: Array, n_way: int, k_shot: int) -> Array:
  """`[N*K]` bool: the first round(0.4·K) support images of each class."""
  m = mixed_adv_count(k_shot)
  if m is None:
    raise ConfigError(
        f"the 40%-adversarial support case needs at least 2 support images "
        f"per class (40% of K rounded must be between 1 and K-1); got "
        f"k_shot={k_shot}. ADML reports it for 5-shot only. Drop the "
        "mixed/* cases or use --k_shot >= 2.")
  one_hot = jax.nn.one_hot(labels, n_way, dtype=jnp.int32)
  rank = jnp.take_along_axis(jnp.cumsum(one_hot, axis=0) - 1,
                             labels[:, None], axis=1)[:, 0]
  return rank < m


# --- one task ---------------------------------------------------------------

def _metrics(logits: Array, labels: Array, prefix: str) -> Dict[str, Array]:
  return {f"{prefix}_loss": optax.softmax_cross_entropy_with_integer_labels(
              logits, labels).mean(),
          f"{prefix}_accuracy": losses.accuracy(logits, labels)}


def attack_support(adaptation: adaptations.Adaptation, params, task: episodes.Task,
                   key: Array, *, mode: str, attack: Optional[Attack],
                   n_way: int) -> Array:
  """The support images of `mode`, attacked against the model before
  adaptation (the meta-initialization), `stop_gradient`ed.

  `mixed`: the whole support is attacked at once (the attacker perturbs the
  set as the learner will see it, transductive BatchNorm included) and the
  first round(0.4·K) images of each class take their adversarial version.
  """
  xs, ys = task.support_images, task.support_labels
  if mode == "clean":
    return xs
  k_shot = xs.shape[0] // n_way
  mask = mixed_support_mask(ys, n_way, k_shot) if mode == "mixed" else None
  frozen = jax.lax.stop_gradient(params)
  logits_fn = lambda x: adaptation.initial_logits(frozen, xs, ys, x)
  x_adv = jax.lax.stop_gradient(attack(logits_fn, xs, ys, key=key))
  if mask is None:
    return x_adv
  return jnp.where(mask[:, None, None, None], x_adv, xs)


def evaluate_case(adaptation: adaptations.Adaptation, params, task: episodes.Task,
                  key: Array, *, case: TestCase, attack: Optional[Attack],
                  inner_steps: int, n_way: int, curves: bool = False
                  ) -> Dict[str, Array]:
  """Adapts to one task under `case` and scores its query.

  Returns:
    A dict of arrays, each `[inner_steps + 1]` (before adaptation and after
    every step) when `curves`, else `[1]` (after the last step):
    `query_loss`/`query_accuracy` of the case's query (clean or attacked),
    and `clean_query_loss`/`clean_query_accuracy` on the clean query with
    the same adapted classifier (the L_AR of TAFL is their loss difference);
    under AutoAttack also `stage/<name>`, its robust accuracy after each of
    its stages ("clean" first).
  """
  if case.needs_attack and attack is None:
    raise ConfigError(f"test case {case} needs an attack; none was given.")
  support_key, query_key = jax.random.split(key)
  xs = attack_support(adaptation, params, task, support_key,
                      mode=case.support, attack=attack, n_way=n_way)
  ys, xq, yq = task.support_labels, task.query_images, task.query_labels

  def query_metrics(logits_fn):
    out = _metrics(logits_fn(xq), yq, "clean_query")
    if case.query == "adv":
      with_report = getattr(attack, "with_report", None)
      if with_report is None:
        xq_adv = attack(logits_fn, xq, yq, key=query_key)
      else:   # AutoAttack: also its robust accuracy after each stage
        xq_adv, report = with_report(logits_fn, xq, yq, key=query_key)
        out.update({STAGE_PREFIX + name: acc
                    for name, acc in report["accuracy"].items()})
      xq_adv = jax.lax.stop_gradient(xq_adv)
      out.update(_metrics(logits_fn(xq_adv), yq, "query"))
    else:
      out["query_loss"] = out["clean_query_loss"]
      out["query_accuracy"] = out["clean_query_accuracy"]
    return out

  adapted_metrics = lambda state: query_metrics(
      lambda x: adaptation.logits(state, x))
  if inner_steps == 0:
    return {k: v[None] for k, v in query_metrics(
        lambda x: adaptation.initial_logits(params, xs, ys, x)).items()}
  state, curve = adaptation.adapt(params, xs, ys, num_steps=inner_steps,
                                  track_fn=adapted_metrics if curves else None)
  if not curves:
    return {k: v[None] for k, v in adapted_metrics(state).items()}
  before = query_metrics(lambda x: adaptation.initial_logits(params, xs, ys, x))
  return {k: jnp.concatenate([before[k][None], curve[k]]) for k in before}


# --- many tasks -------------------------------------------------------------

@dataclasses.dataclass
class MetaTestResult:
  """Per-episode results of one test case.

  Attributes:
    accuracy: `[episodes]` query accuracy after adaptation.
    loss: `[episodes]` query loss after adaptation.
    step_accuracy: `[episodes, inner_steps + 1]` query accuracy before and after
      each inner step (`[episodes, 1]` when curves were not asked for).
    step_loss: the same for the query loss.
    clean_loss: `[episodes]` clean-query loss of the same adapted classifier
      (equal to `loss` for a clean query).
    clean_accuracy: the same for the accuracy.
    stages: under AutoAttack, `{stage: [episodes]}` robust accuracy after
      each stage in the order they ran ("clean", "apgd-ce", "apgd-t",
      "fab-t", "square" for the standard version): the ensemble's
      bookkeeping, monotone, while `accuracy` re-evaluates the returned
      batch (the two differ only through batch coupling, e.g. conv4's
      transductive BatchNorm); None for other attacks.
  """
  accuracy: np.ndarray
  loss: np.ndarray
  step_accuracy: np.ndarray
  step_loss: np.ndarray
  clean_loss: Optional[np.ndarray] = None
  clean_accuracy: Optional[np.ndarray] = None
  stages: Optional[Dict[str, np.ndarray]] = None

  @property
  def num_episodes(self) -> int:
    return int(self.accuracy.size)

  @property
  def mean(self) -> float:
    return float(self.accuracy.mean())

  @property
  def ci95(self) -> float:
    return confidence_interval_95(self.accuracy)

  def robustness_losses(self, delta: float = 1e-3) -> np.ndarray:
    """TAFL's L_AR per episode: max(CE_adv − CE_clean, δ) after adaptation."""
    if self.clean_loss is None:
      raise ConfigError("this result has no clean-query loss to compare with.")
    return np.maximum(self.loss - self.clean_loss, delta)

  def summary(self) -> Dict[str, float]:
    out = {"accuracy": self.mean, "accuracy_ci95": self.ci95,
           "loss": float(self.loss.mean()), "episodes": self.num_episodes,
           "step_accuracy": self.step_accuracy.mean(0).tolist(),
           "step_loss": self.step_loss.mean(0).tolist()}
    if self.stages:
      out["stages"] = self.stage_summary()
    return out

  def stage_summary(self) -> Dict[str, Dict[str, float]]:
    """`{stage: {"accuracy", "accuracy_ci95"}}` of AutoAttack's stages."""
    return {name: {"accuracy": float(v.mean()),
                   "accuracy_ci95": confidence_interval_95(v)}
            for name, v in (self.stages or {}).items()}


def episode_keys(seed: int, start: int, count: int) -> jax.Array:
  """Keys of episodes `start .. start+count-1` of the meta-test with `seed`."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(
      jnp.arange(start, start + count))


def _check_protocol_args(inner_steps, num_episodes, batch_size):
  if int(inner_steps) != inner_steps or inner_steps < 0:
    raise ConfigError(f"inner_steps must be an integer >= 0, got {inner_steps}.")
  if int(num_episodes) != num_episodes or num_episodes < 1:
    raise ConfigError(f"num_episodes must be an integer >= 1, got "
                      f"{num_episodes}.")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size}.")


def resolve_episodes_at_once(episodes_at_once: Optional[int]) -> int:
  """`episodes_at_once`, or the backend's value when None
  (`autotune.backend_entry().episodes_at_once`: one at a time on the CPU,
  the whole call vmapped on an accelerator)."""
  if episodes_at_once is None:
    return autotune.backend_entry().episodes_at_once
  if int(episodes_at_once) != episodes_at_once or episodes_at_once < 0:
    raise ConfigError(f"episodes_at_once must be an integer >= 0 (0: every "
                      f"episode of a call at once), got {episodes_at_once}.")
  return int(episodes_at_once)


@functools.lru_cache(maxsize=None)
def _compiled_case(adaptation: adaptations.Adaptation, case: TestCase,
                   attack: Optional[Attack], n_way: int, k_shot: int,
                   q_query: int, inner_steps: int, curves: bool,
                   episodes_at_once: int = 0):
  """The jitted `(params, keys, source) -> per-episode metrics` of a case.

  The call's episodes run `episodes_at_once` at a time: 0 (or as many as
  the call holds) vmaps them all; n maps over rounds of n (`lax.map`, each
  round vmapped). On the CPU one at a time is the fastest: each episode's
  adapted kernels then make plain convolutions (docs/performance.md,
  "Meta-test vs PyTorch (CPU)").

  Cached, so learners that share an `Adaptation` (every MAML-style learner of
  one architecture) and an attack compile each case once per process.
  """
  @jax.jit
  def run_batch(params, keys, src):
    def one(key):
      task_key, attack_key = jax.random.split(key)
      task = episodes.sample_task(task_key, src, n_way=n_way, k_shot=k_shot,
                                  q_query=q_query)
      return evaluate_case(adaptation, params, task, attack_key, case=case,
                           attack=attack, inner_steps=inner_steps,
                           n_way=n_way, curves=curves)
    if episodes_at_once == 0 or episodes_at_once >= keys.shape[0]:
      return jax.vmap(one)(keys)
    return jax.lax.map(one, keys, batch_size=(
        None if episodes_at_once == 1 else episodes_at_once))
  return run_batch


def run_case(adaptation: adaptations.Adaptation, params,
             source: episodes.EpisodeSource, *, case: TestCase,
             attack: Optional[Attack], n_way: int, k_shot: int, q_query: int,
             inner_steps: int, num_episodes: int, batch_size: int = 20,
             seed: int = 0, curves: bool = False,
             episodes_at_once: Optional[int] = None) -> MetaTestResult:
  """Meta-tests `params` under one test case on `num_episodes` tasks.

  Args:
    adaptation: the learner's `adaptations.Adaptation`.
    params: meta-trained parameters.
    source: the meta-test split on device (`episodes.make_source`).
    case: the `TestCase`.
    attack: `(logits_fn, x, y, *, key) -> x_adv` (`attacks.make_attack`);
      None for the clean/clean case.
    n_way, k_shot, q_query: the episode shape.
    inner_steps: test-time adaptation steps.
    num_episodes: number of tasks (600 in MAML/ADML, 2000 for a final table).
    batch_size: tasks per compiled call (results do not depend on it).
    seed: selects the episodes and the attacks' random starts.
    curves: also record the query loss/accuracy before and after every inner
      step.
    episodes_at_once: episodes of a call computed at once (0: all of them,
      vmapped; n: rounds of n); None: the backend's value
      (`resolve_episodes_at_once`). Speed and memory only.

  Returns:
    A `MetaTestResult`.
  """
  _check_protocol_args(inner_steps, num_episodes, batch_size)
  episodes_at_once = resolve_episodes_at_once(episodes_at_once)
  if case.support == "mixed":
    mixed_support_mask(jnp.zeros((n_way * k_shot,), jnp.int32), n_way, k_shot)
  if case.needs_attack and attack is None:
    raise ConfigError(f"test case {case} needs an attack; none was given.")
  batch_size = min(batch_size, num_episodes)
  run_batch = _compiled_case(adaptation, case, attack, n_way, k_shot, q_query,
                             inner_steps, curves, episodes_at_once)
  chunks: List[Dict[str, np.ndarray]] = []
  for start in range(0, num_episodes, batch_size):
    keys = episode_keys(seed, start, batch_size)  # fixed shape: one compile
    chunks.append(jax.device_get(run_batch(params, keys, source)))
  out = {k: np.concatenate([c[k] for c in chunks])[:num_episodes]
         for k in chunks[0]}
  stages = {k[len(STAGE_PREFIX):]: out[k][:, -1] for k in out
            if k.startswith(STAGE_PREFIX)}
  if stages:   # jit returns dicts in sorted order: put them as they ran
    order = ("clean",) + attacks.autoattack_stage_order(stages)
    stages = {name: stages[name] for name in order if name in stages}
  return MetaTestResult(accuracy=out["query_accuracy"][:, -1],
                        loss=out["query_loss"][:, -1],
                        step_accuracy=out["query_accuracy"],
                        step_loss=out["query_loss"],
                        clean_loss=out["clean_query_loss"][:, -1],
                        clean_accuracy=out["clean_query_accuracy"][:, -1],
                        stages=stages or None)


def meta_test(apply_fn: Callable, params, source: episodes.EpisodeSource, *,
              n_way: int, k_shot: int, q_query: int, inner_lr: float,
              inner_steps: int, num_episodes: int, batch_size: int = 20,
              seed: int = 0, curves: bool = False) -> MetaTestResult:
  """Clean meta-test of a MAML-style model `apply_fn` (SGD adaptation).

  The clean/clean case of `run_case` with `adaptations.gradient_adaptation`;
  see `run_case` for the arguments.
  """
  adaptation = adaptations.gradient_adaptation(apply_fn, inner_lr=inner_lr)
  return run_case(adaptation, params, source, case=TestCase(), attack=None,
                  n_way=n_way, k_shot=k_shot, q_query=q_query,
                  inner_steps=inner_steps, num_episodes=num_episodes,
                  batch_size=batch_size, seed=seed, curves=curves)


# --- a trained run ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """A test-time attack: its registry name and hyperparameters (flag strings
  or numbers, as `attacks.make_attack` takes them), and a `tag` that names
  it in tables instead of its name (two settings of one attack, e.g. the
  reference C&W and `cw_l2_strong`)."""
  name: str
  hparams: Tuple[Tuple[str, object], ...] = ()
  tag: str = ""

  @classmethod
  def of(cls, name: str, *, tag: str = "", **hparams) -> "AttackSpec":
    return cls(name, tuple(sorted(hparams.items())), tag)

  @property
  def eps(self) -> Optional[str]:
    """The budget as written: "8/255", or "l2:0.5" for an L2 attack."""
    hparams = dict(self.hparams)
    eps = hparams.get("eps")
    return None if eps is None else attacks.budget_text(eps,
                                                        hparams.get("norm"))

  @property
  def kind(self) -> str:
    """The attack as tables and the papers' cells name it: the tag or the
    registry name."""
    return self.tag or self.name

  @property
  def label(self) -> str:
    """`pgd ε=8/255` (the ε as written), or the name for an ε-free attack."""
    return self.kind if self.eps is None else f"{self.kind} ε={self.eps}"

  def build(self) -> Attack:
    """The attack function (the same object for equal specs)."""
    return _build_attack(self)

  def shrunk(self) -> "AttackSpec":
    """This attack at toy scale: loop lengths capped by its registry entry
    (`toy_caps`; C&W's Adam and binary-search steps)."""
    capped = attacks.get(self.name).shrink(dict(self.hparams))
    return AttackSpec(self.name, tuple((k, capped[k]) for k, _ in self.hparams),
                      self.tag)


@functools.lru_cache(maxsize=None)
def _build_attack(spec: AttackSpec) -> Attack:
  return attacks.make_attack(spec.name, dict(spec.hparams))


def default_test_attack(name: str, eps: Optional[str], num_steps: int = 20,
                        apgd_steps: int = 100,
                        square_queries: int = 5000) -> AttackSpec:
  """The test-time attack `name` at budget `eps` with the protocol defaults.

  Each attack's registry entry gives its settings from ε and the budgets
  (`attacks.get(name).test`, listed in docs/attacks.md): `num_steps` steps
  for PGD (step ε/4, random start) and MI-FGSM (steps of ε/T); `apgd_steps`
  iterations (AutoAttack's 100) for APGD-CE, APGD-T and FAB-T; Square with
  `square_queries` queries (5000); `autoattack` the standard ensemble with
  those settings and its per-stage report (`MetaTestResult.stages`); C&W-L2
  (no ε) TAFL's reference (`attacks.CW_TAFL_REFERENCE`). A preset
  (`cw_l2_strong`) is its entry's settings under its own name.
  """
  budget = attacks.Budget(eps, num_steps, apgd_steps, square_queries)
  attack, hparams, tag = attacks.meta_test_setting(name, budget)
  return AttackSpec.of(attack, tag=tag, **hparams)


# The built-in test attacks and presets (`attacks.meta_test_attacks()` also
# lists the ones registered later).
TEST_ATTACKS = attacks.meta_test_attacks()
PRESETS = {name: default_test_attack(name, None)
           for name in attacks.registry.presets()}


def adaptation_for(config, exp=None) -> adaptations.Adaptation:
  """The test-time `Adaptation` of a run's learner (a `config.Config`)."""
  return (exp or builders.build(config)).learner.adaptation


def meta_test_config(config, params, split: str = "test", *,
                     num_episodes=None, inner_steps=None, seed=None,
                     curves: bool = False, data=None,
                     case: TestCase = TestCase(),
                     attack: Optional[AttackSpec] = None) -> MetaTestResult:
  """Meta-tests `params` of a run of `config` (a `config.Config`).

  Loads `split` of the run's dataset (unless `data`, an already loaded
  `ClassSplit`, is given) and uses the run's episode shape and learner; the
  number of episodes, test-time inner steps and seed default to the config's
  `eval_episodes`, `eval_inner_steps` and `seed`. `case` and `attack` select
  the test case (default clean/clean).
  """
  if data is None:
    data = builders.load_split(config, split)
  return run_case(
      adaptation_for(config), params, episodes.make_source(data), case=case,
      attack=None if attack is None else attack.build(), n_way=config.n_way,
      k_shot=config.k_shot, q_query=config.q_query,
      inner_steps=config.eval_inner_steps if inner_steps is None
      else inner_steps,
      num_episodes=config.eval_episodes if num_episodes is None
      else num_episodes,
      batch_size=config.eval_batch_size,
      seed=config.seed if seed is None else seed, curves=curves)

