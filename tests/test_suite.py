"""The suite itself: no test that can never run, the tiers as documented.

* A test file that defines a name twice is refused at the start of every run
  (conftest.py): Python keeps the last definition, so the first never runs.
* Every `module.name` a test reads from a module of the library exists, so a
  test of the slow or integration tier cannot rot unseen when code moves (it
  would fail on an AttributeError only when someone runs that tier).
* The README's test commands are what CI runs.
"""

import ast
import importlib
import pathlib
import re
import types

import pytest

from tests.conftest import duplicated_names

REPO = pathlib.Path(__file__).resolve().parent.parent
TESTS = sorted((REPO / "tests").glob("test_*.py"))


def test_a_name_defined_twice_is_found(tmp_path):
  path = tmp_path / "test_twice.py"
  path.write_text("def test_a():\n  pass\n\n\ndef test_b():\n  pass\n\n\n"
                  "def test_a():\n  pass\n")
  assert duplicated_names(path) == ["test_a"]
  assert all(duplicated_names(p) == [] for p in TESTS)


def _library_modules(tree):
  """`{local name: module}` of the library modules a test file imports."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
        "advmeta_jax"):
      for a in node.names:
        try:
          value = importlib.import_module(f"{node.module}.{a.name}")
        except ImportError:
          value = getattr(importlib.import_module(node.module), a.name, None)
        if isinstance(value, types.ModuleType):
          names[a.asname or a.name] = value
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("advmeta_jax") and a.asname:
          names[a.asname] = importlib.import_module(a.name)
  return names


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_every_library_name_a_test_reads_exists(path):
  tree = ast.parse(path.read_text())
  modules = _library_modules(tree)
  missing = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
        and isinstance(node.value, ast.Name) and node.value.id in modules
        and not hasattr(modules[node.value.id], node.attr)):
      missing.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
  assert not missing, missing


def test_the_checks_find_a_name_that_is_gone(tmp_path):
  path = tmp_path / "test_rot.py"
  path.write_text("from advmeta_jax.experiments import reproduction\n\n\n"
                  "def test_x():\n  reproduction.no_such_function()\n")
  tree = ast.parse(path.read_text())
  modules = _library_modules(tree)
  assert "reproduction" in modules
  assert not hasattr(modules["reproduction"], "no_such_function")


def test_ci_runs_the_readmes_test_commands():
  readme = (REPO / "README.md").read_text()
  ci = (REPO / ".ci" / "run").read_text()
  commands = re.findall(r"^python -m pytest .*$", readme, re.MULTILINE)
  tiers = [c for c in commands if "-m slow" not in c]
  assert tiers == ["python -m pytest -q", "python -m pytest -q -m integration"]
  for command in tiers:
    assert re.search(rf"^{re.escape(command)}$", ci, re.MULTILINE), command


def test_the_default_run_is_the_unit_tier():
  text = (REPO / "pyproject.toml").read_text()
  assert "-m 'not slow and not integration'" in text
  assert '"integration: ' in text and '"slow: ' in text
