"""Meta-testing and what is made of it.

    metatest.py   adapt to unseen tasks, attack, score: mean ± 95% CI
    protocol.py   trained runs × test cases × attacks on shared episodes
    stats.py      paired CIs and tests, CVaR, sample sizes (NumPy)
    comparisons.py  paired differences, worst tasks and seeds of a report
    tables.py     Markdown tables
    reports.py    tables (Markdown, CSV, JSON)
    plots.py      figures (matplotlib)
    smoothing.py  randomized smoothing: PREDICT and CERTIFY (Cohen et al.)
    certify.py    certified accuracy of trained runs (advmeta-certify)
"""

from advmeta_jax.evaluation import comparisons
from advmeta_jax.evaluation import metatest
from advmeta_jax.evaluation import plots
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import reports
from advmeta_jax.evaluation import stats
from advmeta_jax.evaluation import smoothing
from advmeta_jax.evaluation import certify
from advmeta_jax.evaluation.metatest import adaptation_for
from advmeta_jax.evaluation.metatest import ALL_CASES
from advmeta_jax.evaluation.metatest import Attack
from advmeta_jax.evaluation.metatest import attack_support
from advmeta_jax.evaluation.metatest import AttackSpec
from advmeta_jax.evaluation.metatest import cases_for_shots
from advmeta_jax.evaluation.metatest import confidence_interval_95
from advmeta_jax.attacks import CW_STRONG
from advmeta_jax.attacks import CW_TAFL_REFERENCE
from advmeta_jax.evaluation.metatest import default_test_attack
from advmeta_jax.evaluation.metatest import episode_keys
from advmeta_jax.evaluation.metatest import evaluate_case
from advmeta_jax.evaluation.metatest import format_accuracy
from advmeta_jax.evaluation.metatest import meta_test
from advmeta_jax.evaluation.metatest import meta_test_config
from advmeta_jax.evaluation.metatest import MetaTestResult
from advmeta_jax.evaluation.metatest import mixed_adv_count
from advmeta_jax.evaluation.metatest import MIXED_ADV_FRACTION
from advmeta_jax.evaluation.metatest import mixed_support_mask
from advmeta_jax.evaluation.metatest import ONE_SHOT_CASES
from advmeta_jax.evaluation.metatest import parse_cases
from advmeta_jax.evaluation.metatest import PRESETS
from advmeta_jax.evaluation.metatest import QUERY_MODES
from advmeta_jax.evaluation.metatest import resolve_episodes_at_once
from advmeta_jax.evaluation.metatest import run_case
from advmeta_jax.evaluation.metatest import STAGE_PREFIX
from advmeta_jax.evaluation.metatest import SUPPORT_MODES
from advmeta_jax.evaluation.metatest import TEST_ATTACKS
from advmeta_jax.evaluation.metatest import TestCase
