"""The meta-test flags mean the same in every launcher; the earlier names of
launch.evaluate's test-time flags still work, with one line saying so."""

from absl import flags
import pytest

from advmeta_jax.cli import common


def _parse(*argv, **kw):
  fv = flags.FlagValues()
  common.define_protocol_flags(flag_values=fv, **kw)
  fv(["prog", *argv])
  return fv


@pytest.mark.parametrize("old, new, attr", [
    ("--episodes=7", "test_episodes", 7), ("--inner_steps=3", "test_inner_steps", 3),
    ("--seed=5", "test_seed", 5)])
def test_a_deprecated_name_sets_its_test_flag_with_one_line(old, new, attr,
                                                            capsys):
  protocol = common.protocol_from_flags(_parse(old, deprecated=True))
  assert getattr(protocol, new) == attr
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"warning: {old.split('=')[0]} is deprecated; use --{new} "
                 "(same meaning)."]


def test_the_new_name_wins_over_the_deprecated_one(capsys):
  protocol = common.protocol_from_flags(
      _parse("--seed=5", "--test_seed=9", deprecated=True))
  assert protocol.test_seed == 9
  assert "deprecated" in capsys.readouterr().err


def test_a_launcher_with_training_flags_keeps_only_the_test_seed():
  fv = _parse(cases=None, run_flags=False)
  assert "test_seed" in fv and "cases" not in fv
  assert "test_episodes" not in fv and "test_inner_steps" not in fv
  assert common.protocol_from_flags(fv).test_seed == 0


def test_training_flags_of_the_same_name_are_not_taken_for_the_old_names(
    capsys):
  """launch.sweep defines the training flags (--inner_steps, --seed) next to
  the protocol's: those keep their training meaning, with no warning."""
  fv = flags.FlagValues()
  flags.DEFINE_integer("inner_steps", 5, "training", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "training", flag_values=fv)
  common.define_protocol_flags(cases=None, run_flags=False, flag_values=fv)
  fv(["prog", "--inner_steps=1", "--seed=3"])
  assert common.protocol_from_flags(fv).test_seed == 0
  assert capsys.readouterr().err == ""
