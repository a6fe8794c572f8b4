"""`auto` speed settings: resolved per backend from autotune.TABLE, and never
a different result than an explicit setting."""

import json

import chex
import jax
import jax.numpy as jnp
import pytest
from absl import flags

from advmeta_jax.config import autotune
from advmeta_jax import config as config_lib
from advmeta_jax.core import models
from advmeta_jax import training
from advmeta_jax.config import AUTO
from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError
from tests.conftest import random_tasks


def test_auto_is_the_default_of_the_speed_settings():
  loop = Config().loop
  assert (loop.conv_impl, loop.parallel_tasks, loop.remat) == (AUTO,) * 3


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_auto_resolves_to_the_backends_entry(backend):
  entry = autotune.TABLE[backend]
  assert entry.conv_impl in models.CONV_IMPLS
  assert entry.source
  resolved = autotune.resolve(Config.make(task_batch_size=4), backend=backend,
                              num_devices=1)
  assert resolved.loop.conv_impl == entry.conv_impl
  assert resolved.loop.remat is entry.remat
  assert resolved.loop.parallel_tasks == (
      entry.tasks_per_device if 0 < entry.tasks_per_device < 4 else 0)
  resolved.validate()
  line = autotune.describe(Config(), resolved, backend=backend)
  assert line.startswith(f"backend {backend}: conv_impl={entry.conv_impl} "
                         "(auto)"), line


def test_the_table_says_which_entries_are_measured():
  for backend in ("cpu", "gpu"):
    assert not autotune.TABLE[backend].source.startswith("unmeasured")
    assert "launch.benchmark" in autotune.TABLE[backend].source
  entry = autotune.TABLE["tpu"]
  assert entry.source.startswith("unmeasured")
  # The usual choice there: lax.conv, the whole task batch vmapped, no
  # rematerialization.
  assert (entry.conv_impl, entry.tasks_per_device, entry.remat) == (
      "xla", 0, False)
  # A backend the table does not know gets the unmeasured accelerator entry.
  assert autotune.backend_entry("some_plugin") == (
      autotune.UNMEASURED_ACCELERATOR)


def test_explicit_values_are_kept_and_rounds_follow_the_devices():
  explicit = Config.make(conv_impl="xla", parallel_tasks=2, remat=False)
  for backend in ("cpu", "gpu", "tpu"):
    assert autotune.resolve(explicit, backend=backend) == explicit
  cpu = lambda b, n: autotune.resolve(Config.make(task_batch_size=b),
                                      backend="cpu", num_devices=n)
  per = autotune.TABLE["cpu"].tasks_per_device
  if per:
    # One round holds `per` tasks per device; the whole batch when a round
    # would not divide it or covers it.
    assert cpu(8, 2).loop.parallel_tasks == 2 * per
    assert cpu(2, 2).loop.parallel_tasks == 0
    assert cpu(6, 4).loop.parallel_tasks == 0
  for b, n in ((8, 2), (2, 2), (6, 4), (4, 1)):
    config = cpu(b, n)
    config.validate()
    training.check_task_batch(b, jax.make_mesh((1,), ("tasks",)),
                              config.loop.parallel_tasks)


def test_flags_take_auto_true_false_and_integers():
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  cases = {
      (): (AUTO, AUTO, AUTO),
      ("--remat",): (True, AUTO, AUTO),
      ("--noremat", "--parallel_tasks=2", "--conv_impl=matmul"): (
          False, 2, "matmul"),
      ("--remat=true", "--parallel_tasks=0"): (True, 0, AUTO),
      ("--remat=auto", "--parallel_tasks=auto", "--conv_impl=auto"): (
          AUTO, AUTO, AUTO),
  }
  for argv, want in cases.items():
    fv.unparse_flags()
    fv(["prog", *argv])
    loop = config_lib.from_flags(fv).loop
    assert (loop.remat, loop.parallel_tasks, loop.conv_impl) == want, argv
  for bad, message in (("--remat=maybe", "should be auto, true or false"),
                       ("--parallel_tasks=two", "should be auto or an integer"),
                       ("--conv_impl=cudnn", "should be one of")):
    fv.unparse_flags()
    with pytest.raises(flags.IllegalFlagValueError, match=message):
      fv(["prog", bad])
  with pytest.raises(ConfigError, match="remat must be auto, true or false"):
    Config.make(remat="yes").validate()


def test_saved_configs_with_concrete_values_still_load():
  """config.json of runs before `auto` holds concrete values: they load,
  are kept, and may resume a run whose settings are `auto` (loop section)."""
  old = Config.make(remat=False, parallel_tasks=0, conv_impl="matmul")
  again = Config.from_dict(json.loads(json.dumps(old.to_dict())))
  assert again == old and again.loop.remat is False
  assert Config().resume_differences(again) == []
  assert Config.from_dict(old.flat()) == old


def _loss_and_grads(config):
  exp = training.build(config)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  fn = training.batch_value_and_grad(
      exp.learner, parallel_tasks=exp.config.loop.parallel_tasks)
  return jax.jit(fn)(params, random_tasks(), jax.random.key(2))


def test_auto_gives_the_loss_and_meta_gradient_of_every_explicit_setting():
  """On the CPU, as the train step takes them (`batch_value_and_grad`):
  `auto` resolved for the cpu entry and for the gpu/tpu entry, and explicit
  settings that between them take each value of conv_impl, parallel_tasks
  (the whole batch vmapped, rounds of one task with per-task meta-gradients)
  and remat, compute the same loss and meta-gradient (second order, one
  inner step, through AQ's attack: MAML's inner loop and the attack's input
  gradients both run under each setting)."""
  base = Config.make(
      learner="aq", dataset="cifar_fs", image_size=16, n_way=3, k_shot=1,
      q_query=2, filters=4, task_batch_size=2, inner_steps=1, inner_lr=0.1,
      train_attack_steps=1)
  want = _loss_and_grads(base)   # auto, resolved for this (CPU) backend
  assert jnp.isfinite(want[0][0])
  speed = lambda c: (c.loop.conv_impl, c.loop.parallel_tasks, c.loop.remat)
  cpu = speed(autotune.resolve(base, backend="cpu", num_devices=1))
  gpu = speed(autotune.resolve(base, backend="gpu", num_devices=1))
  settings = {cpu, gpu, ("xla", 1, False)}
  assert {s[0] for s in settings} == set(models.CONV_IMPLS), settings
  assert {s[1] for s in settings} == {0, 1}, settings
  assert {s[2] for s in settings} == {False, True}, settings
  for c, p, r in sorted(settings - {cpu}, key=str):
    config = base.replace(conv_impl=c, parallel_tasks=p, remat=r)
    chex.assert_trees_all_close(_loss_and_grads(config), want, rtol=2e-5,
                                atol=2e-6)


