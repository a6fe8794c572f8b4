"""The attacks the library ships, one `registry.AttackEntry` each.

Registering is all an attack needs to be an `--attacks` choice with its
meta-test defaults, a `--train_attack` (where `trains`), a benchmark row and a
row of docs/attacks.md. `advmeta_jax.attacks` imports this module, so the
entries exist as soon as the package does.
"""

from __future__ import annotations

from advmeta_jax.attacks.autoattack import VERSIONS
from advmeta_jax.attacks.autoattack import autoattack
from advmeta_jax.attacks.autoattack import autoattack_with_report
from advmeta_jax.attacks.cw import carlini_wagner_l2
from advmeta_jax.attacks.fab import fab
from advmeta_jax.attacks.linf import APGD_LOSSES
from advmeta_jax.attacks.linf import apgd
from advmeta_jax.attacks.linf import apgd_t
from advmeta_jax.attacks.linf import fgsm
from advmeta_jax.attacks.linf import mi_fgsm
from advmeta_jax.attacks.linf import pgd
from advmeta_jax.attacks.registry import AttackEntry
from advmeta_jax.attacks.registry import BOOL
from advmeta_jax.attacks.registry import EPS
from advmeta_jax.attacks.registry import NON_NEGATIVE
from advmeta_jax.attacks.registry import NORM
from advmeta_jax.attacks.registry import POSITIVE
from advmeta_jax.attacks.registry import Preset
from advmeta_jax.attacks.registry import choice
from advmeta_jax.attacks.registry import register
from advmeta_jax.attacks.registry import steps
from advmeta_jax.attacks.registry import unit
from advmeta_jax.attacks.square import square

# The C&W-L2 of TAFL Table 1: advertorch's CarliniWagnerL2Attack as the TAFL
# authors' code builds it with its flag defaults (initial_const = --attack-eps
# = 0.05, max_iterations = --attack-step = 10) and advertorch's defaults
# otherwise (9 binary-search steps, lr 0.01, confidence 0, abort early,
# per-example bookkeeping).
CW_TAFL_REFERENCE = dict(c=0.05, num_steps=10, binary_search_steps=9,
                         learning_rate=0.01, confidence=0.0, abort_early=True,
                         batch_consistent=False)
# Our stronger C&W-L2: c = 1, 100 Adam steps, successes checked in the
# returned batch (transductive BatchNorm).
CW_STRONG = dict(c=1.0, num_steps=100, batch_consistent=True)

register(AttackEntry(
    "fgsm", fgsm, "FGSM, Goodfellow et al. 2015: one signed-gradient step "
    "of ε, ADML's training attack; norm='L2' gives FGM",
    dict(eps=EPS, norm=NORM), trains=True,
    test=lambda b: b.eps_hparams(), test_help="one step of ε",
    benchmark=lambda b: {"eps": b.eps}))
register(AttackEntry(
    "pgd", pgd, "PGD, Madry et al. 2018: L∞ projected gradient descent from "
    "a random start, AQ's and TAFL's attack; norm='L2' gives PGD-L2",
    dict(eps=EPS, step_size=POSITIVE, num_steps=steps(0), random_start=BOOL,
         norm=NORM),
    trains=True,
    test=lambda b: dict(b.eps_hparams(), step_size=b.radius / 4,
                        num_steps=b.num_steps),
    test_help="step ε/4 (2/255 at 8/255; L2: a quarter of the radius), "
    "`--attack_steps` (20) steps, random start",
    benchmark=lambda b: {"eps": b.eps, "step_size": "2/255",
                         "num_steps": b.pgd_steps}))
register(AttackEntry(
    "mi_fgsm", mi_fgsm, "MI-FGSM, Dong et al. 2018: momentum iterative FGSM "
    "with steps of ε/T by default, in TAFL Table 1",
    dict(eps=EPS, num_steps=steps(0), decay=NON_NEGATIVE, step_size=POSITIVE),
    trains=True,
    test=lambda b: dict(eps=b.eps, num_steps=b.num_steps),
    test_help="`--attack_steps` steps of ε/T, μ = 1",
    benchmark=lambda b: {"eps": b.eps, "num_steps": b.pgd_steps}))
register(AttackEntry(
    "apgd", apgd, "APGD-CE, Croce & Hein 2020: step-size-free Auto-PGD; "
    "loss='dlr' gives APGD-DLR, norm='L2' the L2 APGD",
    dict(eps=EPS, num_steps=steps(0), loss=choice(APGD_LOSSES, "APGD loss"),
         norm=NORM),
    aliases=("apgd_ce", "apgd-ce"), trains=True,
    test=lambda b: dict(b.eps_hparams(), num_steps=b.apgd_steps),
    test_help="APGD-CE, `--apgd_steps` (100) iterations",
    benchmark=lambda b: {"eps": b.eps, "num_steps": b.pgd_steps}))
register(AttackEntry(
    "apgd_t", apgd_t, "APGD-T, Croce & Hein 2020: APGD on the targeted DLR "
    "loss, one run per target class",
    dict(eps=EPS, num_steps=steps(0), num_target_classes=steps(1),
         norm=NORM),
    aliases=("apgd-t",),
    test=lambda b: dict(b.eps_hparams(), num_steps=b.apgd_steps),
    test_help="`--apgd_steps` iterations, the N−1 other classes of an "
    "N-way task as targets (9 capped at classes − 1)"))
register(AttackEntry(
    "fab", fab, "FAB-T, Croce & Hein 2020: the targeted minimum-norm "
    "boundary attack at a fixed ε; targeted=False gives FAB",
    dict(eps=EPS, num_steps=steps(0), targeted=BOOL,
         num_target_classes=steps(1), num_restarts=steps(1),
         alpha_max=unit(closed_low=True), eta=POSITIVE,
         beta=unit(closed_low=False), norm=NORM),
    aliases=("fab-t", "fab_t"),
    test=lambda b: dict(b.eps_hparams(), num_steps=b.apgd_steps,
                        targeted=True),
    test_help="FAB-T, `--apgd_steps` iterations, the targets of APGD-T"))
register(AttackEntry(
    "square", square, "Square, Andriushchenko et al. 2020: score-based random "
    "search, forward passes only",
    dict(eps=EPS, num_queries=steps(0), p_init=unit(closed_low=False),
         rescale_schedule=BOOL, shared_squares=BOOL, norm=NORM),
    test=lambda b: dict(b.eps_hparams(), num_queries=b.square_queries),
    test_help="`--square_queries` (5000) queries, p_init 0.8, the "
    "reference's unscaled schedule"))
register(AttackEntry(
    "autoattack", autoattack, "AutoAttack, Croce & Hein 2020: APGD-CE, "
    "APGD-T, FAB-T, Square on the points still correct, with a per-stage "
    "report",
    dict(eps=EPS, version=choice(VERSIONS, "AutoAttack version"),
         num_steps=steps(1), num_queries=steps(1),
         num_target_classes=steps(1), eot_iter=steps(1), norm=NORM),
    test=lambda b: dict(b.eps_hparams(), version="standard",
                        num_steps=b.apgd_steps, num_queries=b.square_queries),
    test_help="the standard ensemble with the settings of apgd, apgd_t, fab "
    "and square, in that order, each on the examples still correct; its "
    "per-stage robust accuracy goes into the report",
    benchmark=lambda b: {"eps": b.eps, "version": "standard",
                         "num_steps": b.autoattack_steps,
                         "num_queries": b.autoattack_queries,
                         "num_target_classes": b.autoattack_targets},
    report=autoattack_with_report))
register(AttackEntry(
    "cw_l2", carlini_wagner_l2, "C&W-L2, Carlini & Wagner 2017: L2, tanh "
    "space, Adam, optional binary search over c, in TAFL Table 1; no ε",
    dict(c=NON_NEGATIVE, num_steps=steps(0), learning_rate=POSITIVE,
         confidence=NON_NEGATIVE, binary_search_steps=steps(1),
         batch_consistent=BOOL, abort_early=BOOL),
    aliases=("carlini_wagner_l2", "cw"),
    test=lambda b: dict(CW_TAFL_REFERENCE),
    test_help="TAFL's reference C&W (`CW_TAFL_REFERENCE`): c₀ = 0.05, 10 "
    "Adam steps, 9 binary-search steps, learning rate 0.01, κ = 0, abort "
    "early",
    presets=(Preset("cw_l2_strong", CW_STRONG,
                    "C&W-L2 with c = 1, 100 Adam steps, one search round, "
                    "batch-consistent bookkeeping: CW_STRONG"),),
    benchmark=lambda b: {"c": 1.0, "num_steps": b.cw_steps},
    toy_caps=dict(num_steps=5, binary_search_steps=5)))


__all__ = ["CW_STRONG", "CW_TAFL_REFERENCE"]
