"""The attack registry: an entry carries what the library knows of an attack,
so a new attack is its function and one entry (+ its docs row), and
docs/attacks.md's tables are the registry's."""

import inspect
import pathlib
import re

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax import attacks
from advmeta_jax import config as config_lib
from advmeta_jax import evaluation
from advmeta_jax import training
from advmeta_jax.attacks import registry
from advmeta_jax.benchmarks import benchmark
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import TestCase

from conftest import tiny_config

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "attacks.md"


# --- a toy attack, registered here and nowhere else ---------------------------

def noise(logits_fn, x, y, *, eps, key, scale=1.0):
  """Uniform sign noise of ε·scale: a toy attack (no gradients)."""
  del logits_fn, y
  signs = jax.random.rademacher(key, x.shape, x.dtype)
  return jnp.clip(x + jnp.minimum(eps * scale, eps) * signs, 0.0, 1.0)


def noise_entry(name="noise", trains=True, settings=True):
  return attacks.AttackEntry(
      name, noise, "random sign noise of size ε, a toy",
      dict(eps=registry.EPS, scale=registry.unit(closed_low=False)),
      aliases=(f"{name}-alias",), trains=trains,
      test=(lambda b: dict(eps=b.eps, scale=0.5)) if settings else None,
      test_help="half of ε",
      benchmark=(lambda b: {"eps": b.eps, "scale": 1.0}) if settings
      else None)


@pytest.fixture
def toy():
  """Registers `noise` (trains, test and benchmark settings) and `quiet`
  (none of them) for one test."""
  entries = (attacks.register(noise_entry()),
             attacks.register(noise_entry("quiet", trains=False,
                                          settings=False)))
  yield entries
  for entry in entries:
    attacks.unregister(entry.name)


def test_a_registered_attack_is_a_test_attack_with_its_defaults(toy):
  assert attacks.get("noise") is toy[0]
  assert attacks.get("noise-alias") is toy[0]
  assert {"noise", "quiet"} <= set(attacks.names())
  assert attacks.meta_test_attacks()[-1] == "noise"
  assert "quiet" not in attacks.meta_test_attacks()
  with pytest.raises(ConfigError, match="no protocol defaults for attack "
                     "'quiet'; choose one of: fgsm, .*, cw_l2_strong, noise"):
    evaluation.default_test_attack("quiet", "8/255")
  spec = evaluation.default_test_attack("noise", "4/255")
  assert spec == AttackSpec.of("noise", eps="4/255", scale=0.5)
  from advmeta_jax.cli import common  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  common.define_protocol_flags(flag_values=flag_values)
  assert "noise (random sign noise of size ε, a toy)" in (
      flag_values["attacks"].help)
  specs = common.attack_specs(["noise", "cw_l2"], ["4/255", "8/255"])
  assert [(s.name, s.eps) for s in specs] == [
      ("noise", "4/255"), ("noise", "8/255"), ("cw_l2", None)]
  with pytest.raises(ConfigError, match="noise: scale must lie in"):
    attacks.make_attack("noise", eps="8/255", scale="2")
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  x_adv = spec.build()(lambda z: z.reshape(4, -1)[:, :5], x, jnp.zeros(4, int),
                       key=jax.random.key(1))
  np.testing.assert_allclose(jnp.abs(x_adv - x).max(), 2 / 255, rtol=1e-5)


def test_a_registered_attack_runs_in_the_meta_test(toy, digits_test):
  del toy
  config = tiny_config(filters=4, q_query=3, eval_batch_size=2)
  built = training.build(config)
  params = models.init_params(built.model, jax.random.key(0),
                              built.image_shape)
  result = evaluation.meta_test_config(
      config, params, data=digits_test, case=TestCase("clean", "adv"),
      attack=evaluation.default_test_attack("noise", "8/255"),
      num_episodes=2, inner_steps=1)
  assert result.accuracy.shape == (2,) and result.clean_accuracy is not None


def test_a_registered_attack_trains_as_its_entry_says(toy):
  del toy
  assert "noise" in attacks.train_attacks()
  assert "quiet" not in attacks.train_attacks()
  assert config_lib.train_attacks() == attacks.train_attacks()
  config = tiny_config(learner="adml", train_attack="noise",
                       train_eps="4/255").validate()
  attack = training.make_train_attack(config)
  assert attack.__name__ == "noise_attack"
  assert attack.hparams == {"eps": pytest.approx(4 / 255)}
  with pytest.raises(ConfigError, match="unknown train_attack 'quiet'"):
    tiny_config(learner="adml", train_attack="quiet").validate()


def test_a_registered_attack_has_its_benchmark_budget(toy):
  del toy
  assert benchmark.attack_hparams("noise") == {"eps": "8/255", "scale": 1.0}
  assert "noise" in attacks.benchmark_attacks()
  for name in ("noise-alias", "quiet"):
    with pytest.raises(ConfigError, match=f"no benchmark settings for "
                       f"'{name}'"):
      benchmark.attack_hparams(name)


def test_the_toy_entries_are_gone_after_the_test():
  assert "noise" not in attacks.names()
  assert "noise" not in attacks.train_attacks()


# --- what an entry must hold ---------------------------------------------------

def test_an_entry_declares_each_hyperparameter():
  with pytest.raises(ConfigError, match="kinds must name each keyword-only "
                     "hyperparameter of noise but key: eps, scale"):
    attacks.AttackEntry("bad", noise, "", dict(eps=registry.EPS))


def test_names_aliases_and_presets_are_unique():
  with pytest.raises(ConfigError, match="already taken"):
    attacks.register(noise_entry("pgd"))
  entry = noise_entry()
  with pytest.raises(ConfigError, match="name.s. cw already taken"):
    attacks.register(attacks.AttackEntry(
        "other", noise, "", entry.kinds, aliases=("cw", "noise-alias")))
  assert "other" not in attacks.names()


def test_entries_hold_the_functions_defaults():
  for entry in attacks.entries():
    assert attacks.ATTACKS[entry.name] is entry.fn
    params = inspect.signature(entry.fn).parameters
    for h in entry.hparams:
      assert h.default == params[h.name].default, (entry.name, h.name)
    assert entry.uses_eps == ("eps" in params)
  assert attacks.train_attacks() == ("apgd", "fgsm", "mi_fgsm", "pgd")
  x = jnp.full((2, 4, 4, 1), 0.5)
  logits_fn = lambda z: z.reshape(2, -1)[:, :3]
  np.testing.assert_array_equal(   # calling an entry calls its function
      attacks.get("fgsm")(logits_fn, x, jnp.zeros(2, int), eps=0.0), x)


# --- docs/attacks.md -----------------------------------------------------------

def _generated(name: str) -> str:
  text = DOCS.read_text()
  found = re.search(rf"<!-- {name}: .*?-->\n(.*?)\n<!-- end {name} -->",
                    text, re.S)
  assert found, f"docs/attacks.md has no '<!-- {name}: ... -->' block"
  return found.group(1)


@pytest.mark.parametrize("name,table", [
    ("attacks table", registry.markdown_table),
    ("settings table", registry.settings_table)])
def test_the_docs_tables_are_the_registrys(name, table):
  assert _generated(name) == table(), (
      f"docs/attacks.md's {name} differs from the registry; paste the output "
      "of python -c 'from advmeta_jax.attacks import registry; "
      f"print(registry.{table.__name__}())'")


def test_an_eps_above_one_gets_the_right_hint():
  from advmeta_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="for 2 grey levels write 2/255"):
    attacks.parse_eps("2", "eps")
  with pytest.raises(ConfigError, match=r"'300/255'; 300/255 is more than the "
                     r"whole range \(255/255\)"):
    attacks.parse_eps("300/255", "eps")
