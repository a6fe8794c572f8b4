"""The config: one declaration per field, generated flags, the resume rule."""

import dataclasses
import json
import os
import pathlib
import re

from absl import flags
import pytest

from advmeta_jax.training import checkpoints
from advmeta_jax import config as config_lib
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError
from tests.conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(list((ROOT / "advmeta_jax").rglob("*.py"))
                 + list((ROOT / "launch").glob("*.py")))


def _all_fields():
  return list(config_lib.fields())


def test_every_field_has_one_flat_name_a_default_and_help():
  names = [f.name for _, f in _all_fields()]
  assert len(names) == len(set(names)), "flat names must be unique"
  assert set(names) == set(config_lib.SECTION_OF)
  for _, f in _all_fields():
    help_ = f.metadata["help"]
    help_ = help_() if callable(help_) else help_
    assert isinstance(help_, str) and len(help_) > 10, f.name
    assert f.default is not dataclasses.MISSING, f.name


def test_every_field_is_declared_once_in_the_code():
  """A field's name is declared as a dataclass field once (in config/settings.py), and
  its help text is written once: no parallel help table or re-declaration."""
  declaration = re.compile(r"^\s+(\w+): [\w\[\]., ]+ = (?:setting|dataclasses"
                           r"\.field)\(", re.M)
  declared = {}
  for path in SOURCES:
    for name in declaration.findall(path.read_text()):
      declared.setdefault(name, []).append(path.name)
  for _, f in _all_fields():
    assert declared.get(f.name) == ["settings.py"], (f.name, declared.get(f.name))
    help_ = f.metadata["help"]
    if callable(help_):
      continue
    snippet = help_[:25]
    hits = [p.name for p in SOURCES if snippet in p.read_text()]
    assert hits == ["settings.py"], (f.name, hits)


def test_flags_are_generated_from_the_declaration():
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  fv(["prog", "--learner=tafl", "--tafl_gamma=0.5", "--k_shot=5",
      "--train_eps=4/255", "--remat", "--image_size=32",
      "--train_attack=pgd"])
  for _, f in _all_fields():
    assert f.name in fv, f.name
    help_ = f.metadata["help"]
    help_ = help_() if callable(help_) else help_
    assert fv[f.name].help.endswith(help_)   # enums prefix the choices
  config = config_lib.from_flags(fv)
  assert config == Config.make(learner="tafl", tafl_gamma=0.5, k_shot=5,
                               train_eps="4/255", remat=True, image_size=32,
                               train_attack="pgd")
  assert config.meta.tafl_gamma == 0.5 and config.data.k_shot == 5
  assert isinstance(fv["filters"].value, int)
  assert isinstance(fv["inner_lr"].value, float)
  with pytest.raises(flags.IllegalFlagValueError, match="should be one of"):
    fv(["prog", "--conv_impl=cudnn"])


def test_flat_and_nested_access_and_round_trip():
  config = Config.make(learner="protonet", robust="tafl", tafl_k=2.0,
                       num_steps=7)
  assert config.tafl_k == config.meta.tafl_k == 2.0
  assert config.num_steps == config.loop.num_steps == 7
  assert config.learner_label == "protonet+tafl"
  assert config.replace(tafl_k=3.0).meta.tafl_k == 3.0
  assert config.replace(tafl_k=3.0).loop == config.loop
  assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
  # config.json of earlier versions was flat.
  assert Config.from_dict(config.flat()) == config
  assert hash(config) == hash(Config.make(**config.flat()))
  with pytest.raises(ConfigError, match=r"unknown config fields \['tafl_x'\]"):
    Config.make(tafl_x=1)
  with pytest.raises(AttributeError):
    config.not_a_field  # pylint: disable=pointless-statement


def test_resume_rule_is_over_sections():
  old = tiny_config()
  for name in ("num_steps", "log_every", "checkpoint_every", "num_devices",
               "remat", "parallel_tasks", "data_dir", "cache_dir", "eval_episodes",
               "eval_batch_size", "eval_inner_steps", "conv_impl",
               "keep_checkpoints"):
    section = config_lib.SECTION_OF[name]
    assert section in Config.RESUMABLE_SECTIONS, name
  changed = old.replace(num_steps=9, eval_episodes=3, conv_impl="xla")
  assert changed.resume_differences(old) == []
  refused = old.replace(filters=16, tafl_gamma=0.5, num_steps=9)
  assert refused.resume_differences(old) == [
      "filters: 8 -> 16", "tafl_gamma: 2.0 -> 0.5"]


def test_resume_accepts_loop_and_eval_changes_and_refuses_the_rest(
    tmp_path, digits_train):
  workdir = str(tmp_path)
  training.train(tiny_config(num_steps=1), workdir, train_split=digits_train,
                 progress=False)
  state = training.train(
      tiny_config(num_steps=2, log_every=2, checkpoint_every=1,
                  eval_episodes=3, eval_batch_size=3, keep_checkpoints=5),
      workdir, train_split=digits_train, progress=False)
  assert int(state.step) == 2
  with pytest.raises(ConfigError,
                     match=r"different config \(from config\.json: inner_lr: "
                     r"0\.01 -> 0\.02; seed: 0 -> 1\)"):
    training.train(tiny_config(num_steps=3, inner_lr=0.02, seed=1), workdir,
                   train_split=digits_train, progress=False)
  # The config is stored with each checkpoint.
  mgr = checkpoints.manager(workdir)
  try:
    assert checkpoints.restore_config(mgr, 2).meta == tiny_config().meta
  finally:
    mgr.close()
  saved = json.loads((tmp_path / checkpoints.CONFIG_FILE).read_text())
  assert set(saved) == set(config_lib.SECTIONS)
  assert os.path.isdir(tmp_path / checkpoints.CHECKPOINT_DIR / "2")


def test_the_protocol_settings_are_declared_once_and_generate_their_flags():
  """launch.evaluate, launch.sweep and launch.reproduce define the meta-test
  flags from `ProtocolConfig`: same names, defaults and checks everywhere."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_lib.define_protocol_flags(fv, cases="all")
  fv(["prog", "--attacks=pgd,fgsm", "--eps=8/255,2/255", "--test_seed=3",
      "--test_inner_steps=4"])
  p = config_lib.protocol_from_flags(fv)
  assert p.cases == "all"                                # a launcher default
  assert p.attack_names == ("pgd", "fgsm")
  assert p.eps_values == ("8/255", "2/255")
  assert (p.test_seed, p.test_inner_steps, p.test_episodes) == (3, 4, None)
  assert {f.name for f in dataclasses.fields(config_lib.ProtocolConfig)} == set(
      fv)


@pytest.mark.parametrize("field, value, message", [
    ("attack_steps", 0, "attack_steps must be a positive integer"),
    ("apgd_steps", 0, "apgd_steps must be a positive integer"),
    ("test_episodes", 0, "test_episodes must be a positive integer"),
    ("eps", ("8/255", "x"), "eps"),
    ("attacks", (), "attacks must name at least one value"),
])
def test_the_protocol_refuses_bad_values_in_one_line(field, value, message):
  with pytest.raises(ConfigError, match=message):
    dataclasses.replace(config_lib.ProtocolConfig(), **{field: value}).validate()
