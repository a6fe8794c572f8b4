"""Each paper's tables are one module of advmeta_jax/experiments/ that
registers them and shows the command of each in its docstring."""

import importlib
import pkgutil

from advmeta_jax import experiments
from advmeta_jax.config import ProtocolConfig

TABLE_MODULES = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                       if m.name not in ("base", "reproduction"))


def test_every_table_module_registers_tables_and_shows_their_command():
  seen = set()
  for name in TABLE_MODULES:
    module = importlib.import_module(f"advmeta_jax.experiments.{name}")
    mine = {e for e in experiments.names()
            if f"--experiment={e}" in (module.__doc__ or "")}
    assert mine, f"experiments/{name}.py shows the command of no table"
    seen |= mine
  assert seen == set(experiments.names())


def test_a_table_s_protocol_is_a_protocol_config_and_shrinks():
  for name in experiments.names():
    e = experiments.get(name)
    full, small = e.protocol(), e.protocol(shrink=True)
    assert isinstance(full, ProtocolConfig) and full.validate()
    assert (full.test_episodes, full.test_inner_steps) == (e.episodes,
                                                           e.inner_steps)
    assert small.test_episodes <= 4 and small.attack_steps <= 2
