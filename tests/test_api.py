"""The public names earlier versions documented keep their import paths."""

import importlib

import pytest

PUBLIC = {
    "advmeta_jax.attacks": ("fgsm", "pgd", "mi_fgsm", "carlini_wagner_l2",
                            "apgd", "make_attack", "parse_eps",
                            "check_attack_strength", "names", "get"),
    "advmeta_jax.learners": ("tafl_weights", "register", "get", "names"),
    "advmeta_jax.datasets": ("load",),
    "advmeta_jax.experiments": ("get",),
    "advmeta_jax.training": ("train", "build", "make_train_step"),
    "advmeta_jax.evaluation": ("meta_test",),
    "advmeta_jax": ("Config", "meta_test", "tafl_weights", "adapt"),
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import(module):
  mod = importlib.import_module(module)
  for name in PUBLIC[module]:
    assert callable(getattr(mod, name)), f"{module}.{name}"


def test_the_version_is_declared_once():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import advmeta_jax  # pylint: disable=g-import-not-at-top
  assert advmeta_jax.__version__ == importlib.metadata.version("advmeta_jax")
