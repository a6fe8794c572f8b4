"""Adversarial attacks as pure, jit-able, batched JAX functions.

Every attack has the same shape

    attack(logits_fn, x, y, *, <keyword-only hyperparameters>) -> x_adv

  logits_fn: maps a batch `[N, H, W, C]` of images in [0, 1] to logits
      `[N, classes]`. It may close over parameters (e.g. `lambda z:
      apply_fn(params, z)`); the attacks differentiate w.r.t. the images only.
  x: float images `[N, H, W, C]` in [0, 1].
  y: integer labels `[N]`.
  x_adv: the shape and dtype of `x`, in [0, 1]; for the ε attacks also inside
      the ε-ball of their norm around `x`. ε = 0 returns `x` exactly.

Threat models: L∞ by default. fgsm, pgd, apgd, apgd_t, fab, square and
autoattack take `norm="L2"` (any case) for their L2 versions, ε then being
an L2 radius in the same [0, 1]-pixel units (>= 0, at most √d); as flag text
an L2 budget is written `l2:0.5` (budgets.py). The norm-specific steps,
projections and random starts are in norms.py.

Attacks implemented (untargeted unless stated):
  fgsm               Goodfellow et al. 2015 (ADML's training attack); L2: FGM.
  pgd                Madry et al. 2018, with random start (AQ/TAFL); L2:
                     torchattacks' PGDL2.
  mi_fgsm            Dong et al. 2018, momentum iterative FGSM (TAFL Table 1).
  carlini_wagner_l2  Carlini & Wagner 2017, L2, tanh space, Adam, binary search.
  apgd               Croce & Hein 2020, APGD-CE / APGD-DLR, the step-size-free
                     evaluation attack of AutoAttack.
  apgd_t             APGD-T: APGD on the targeted DLR loss, one run per target
                     class (the N−1 others of an N-way task, at most 9).
  fab                Croce & Hein 2020 (ICML), FAB-T (targeted, default) / FAB,
                     the minimum-norm boundary attack, at a fixed ε.
  square             Andriushchenko et al. 2020, Square Attack, score-based
                     random search: forward passes only, no gradients.
  autoattack         Croce & Hein 2020, the standard ensemble APGD-CE, APGD-T,
                     FAB-T, Square on the points still correct;
                     `autoattack_with_report` adds robust accuracy per stage.

Conventions that hold for all of them:
  * The loss whose gradient drives an attack is the SUM over the batch of the
    per-example losses, so each example's gradient is not scaled by 1/N.
  * conv4's BatchNorm is transductive (models.py): the logits of one image
    depend on the whole batch. The attacks therefore attack the batch jointly,
    as the reference MAML/AQ code does. Per-example bookkeeping (APGD's best
    point, C&W's smallest successful perturbation) assembles the returned
    batch from different iterations: for APGD re-evaluating it changes the
    accuracy by about a point (measured); C&W's minimal perturbations sit on
    the boundary and need a check in the returned batch (see
    `carlini_wagner_l2`, `batch_consistent`). APGD-T, FAB, Square and
    AutoAttack run on the examples not fooled yet through masks (static
    shapes): the others stay in the attacked batch, held at their adversarial
    example (or at `x`), and an example counts as fooled when misclassified
    in the batch assembled after a run; `autoattack_with_report` reports the
    re-evaluated accuracy of the returned batch next to that bookkeeping.
    Without batch coupling these coincide with the reference algorithms.
  * Loops over steps are `lax.fori_loop`/`lax.scan`; `num_steps` (and C&W's
    `binary_search_steps`) must be Python ints. ε, step sizes and `c` may be
    traced values (e.g. an ε sweep under one `jax.jit`).
  * The functions are not jitted: compose them under your own `jit`/`vmap`.
    Batch over tasks with `jax.vmap` (each task its own `logits_fn`
    parameters, images, labels and key).
  * The caller applies `jax.lax.stop_gradient` to the result before it
    enters a loss of the model parameters: the attack is a constant of
    that loss, no gradient flows through it into the parameters.
  * Hyperparameters that are concrete Python/NumPy numbers are validated and a
    `ConfigError` names the value and what is allowed; traced values are not
    checked (they cannot be without breaking `jit`).

Flags map to attacks through the registry (registry.py): one `AttackEntry`
per attack holds its function, aliases, hyperparameters (kinds, defaults,
checks), meta-test settings, whether it may train, its benchmark budget and
a one-line description; `get(name)` returns it, `register(entry)` adds one.
`make_attack(name, hparams)` builds a uniform `(logits_fn, x, y, *,
key=None)` callable from flag values, `parse_eps("8/255")` reads a budget.
A new attack is its algorithm file, one `register(AttackEntry(...))` in
registry.py and its row in docs/attacks.md (a test compares the table with
`registry.markdown_table()`).

`check_attack_strength` runs the sanity checks of Carlini et al. 2019 ("On
Evaluating Adversarial Robustness", §5) that reveal gradient masking: PGD at
least as strong as FGSM, more steps never weaker, APGD at least as strong as
PGD, Square (gradient-free) no stronger than PGD, accuracy non-increasing in ε
and ~0 at a large ε.

Modules (everything public is re-exported here; import from
`advmeta_jax.attacks`):
  linf      fgsm, pgd, mi_fgsm, apgd, apgd_checkpoints, apgd_t; the losses
            margin, cross_entropy_per_example, dlr_loss, dlr_targeted_loss;
            Array, LogitsFn (the gradient attacks, L∞ and L2).
  norms     NORMS, canonical_norm, project_l2, the L2 starts and steps.
  budgets   parse_eps, parse_budget ("l2:0.5"), split_budget, budget_text.
  cw        carlini_wagner_l2.
  fab       fab, project_linf_hyperplane, project_l2_hyperplane.
  square    square, square_fraction, square_sizes, square_sizes_l2,
            eta_window.
  autoattack  autoattack, autoattack_with_report, robust_accuracies, stages.
  registry  AttackEntry, register, get, names, make_attack, parse_eps,
            train_attacks, meta_test_attacks, meta_test_setting, ATTACKS, ...
  builtin   the entries of the attacks above; CW_TAFL_REFERENCE, CW_STRONG.
  masking   check_attack_strength, StrengthReport, attack_accuracy.
  checks    validation of hyperparameters and inputs.
"""

from advmeta_jax.attacks.autoattack import autoattack
from advmeta_jax.attacks.autoattack import autoattack_with_report
from advmeta_jax.attacks.autoattack import robust_accuracies
from advmeta_jax.attacks.autoattack import stages as autoattack_stages
from advmeta_jax.attacks.autoattack import version_of as autoattack_stage_order
from advmeta_jax.attacks.budgets import budget_text
from advmeta_jax.attacks.budgets import parse_budget
from advmeta_jax.attacks.budgets import parse_eps
from advmeta_jax.attacks.budgets import split_budget
from advmeta_jax.attacks.builtin import CW_STRONG
from advmeta_jax.attacks.builtin import CW_TAFL_REFERENCE
from advmeta_jax.attacks.cw import carlini_wagner_l2
from advmeta_jax.attacks.fab import fab
from advmeta_jax.attacks.fab import project_l2_hyperplane
from advmeta_jax.attacks.fab import project_linf_hyperplane
from advmeta_jax.attacks.linf import APGD_LOSSES
from advmeta_jax.attacks.linf import apgd
from advmeta_jax.attacks.linf import apgd_checkpoints
from advmeta_jax.attacks.linf import apgd_t
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import cross_entropy_per_example
from advmeta_jax.attacks.linf import dlr_loss
from advmeta_jax.attacks.linf import dlr_targeted_loss
from advmeta_jax.attacks.linf import fgsm
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import margin
from advmeta_jax.attacks.linf import mi_fgsm
from advmeta_jax.attacks.linf import pgd
from advmeta_jax.attacks.masking import attack_accuracy
from advmeta_jax.attacks.masking import check_attack_strength
from advmeta_jax.attacks.masking import StrengthReport
from advmeta_jax.attacks.norms import canonical_norm
from advmeta_jax.attacks.norms import NORMS
from advmeta_jax.attacks.norms import project_l2
from advmeta_jax.attacks.registry import ATTACKS
from advmeta_jax.attacks.registry import AttackEntry
from advmeta_jax.attacks.registry import benchmark_attacks
from advmeta_jax.attacks.registry import BenchmarkBudget
from advmeta_jax.attacks.registry import Budget
from advmeta_jax.attacks.registry import canonical_name
from advmeta_jax.attacks.registry import describe
from advmeta_jax.attacks.registry import entries
from advmeta_jax.attacks.registry import get
from advmeta_jax.attacks.registry import Hparam
from advmeta_jax.attacks.registry import hyperparameters
from advmeta_jax.attacks.registry import Kind
from advmeta_jax.attacks.registry import make_attack
from advmeta_jax.attacks.registry import meta_test_attacks
from advmeta_jax.attacks.registry import meta_test_setting
from advmeta_jax.attacks.registry import names
from advmeta_jax.attacks.registry import Preset
from advmeta_jax.attacks.registry import register
from advmeta_jax.attacks.registry import runs_at_each_eps
from advmeta_jax.attacks.registry import unregister
from advmeta_jax.attacks.square import square
from advmeta_jax.attacks.square import square_fraction
from advmeta_jax.attacks.square import eta_window
from advmeta_jax.attacks.square import square_sizes
from advmeta_jax.attacks.square import square_sizes_l2
from advmeta_jax.attacks.registry import train_attacks

__all__ = [
    "APGD_LOSSES", "ATTACKS", "AttackEntry", "BenchmarkBudget", "Budget",
    "CW_STRONG", "CW_TAFL_REFERENCE", "Hparam", "Kind", "NORMS", "Preset",
    "StrengthReport", "apgd", "budget_text", "canonical_norm", "eta_window",
    "parse_budget", "project_l2", "project_l2_hyperplane", "split_budget",
    "square_sizes_l2", "apgd_checkpoints", "apgd_t", "attack_accuracy",
    "autoattack", "autoattack_stage_order", "autoattack_stages",
    "autoattack_with_report", "benchmark_attacks", "canonical_name",
    "carlini_wagner_l2", "check_attack_strength", "cross_entropy_per_example",
    "describe", "dlr_loss", "dlr_targeted_loss", "entries", "fab", "fgsm", "get",
    "hyperparameters", "make_attack", "margin", "meta_test_attacks",
    "meta_test_setting", "mi_fgsm", "names", "parse_eps", "pgd",
    "project_linf_hyperplane", "register", "robust_accuracies",
    "runs_at_each_eps", "square", "square_fraction", "square_sizes",
    "train_attacks", "unregister",
]

from advmeta_jax import config as _config  # pylint: disable=g-bad-import-order
_config.register_choices("train_attack", train_attacks)
_config.register_choices("test_attack", meta_test_attacks, describe=describe)
_config.register_check("eps", parse_eps)
_config.register_check("budget", parse_budget)
