"""Bad input gets one line that says what was wrong and what is allowed.

The table of docs/reliability.md is the list: every row is a command and the
one line it must print. The rows run through the launchers' own flag parser
and `main`, one process per launcher (tests/bad_input_driver.py), so the
table costs a few processes, not one per row; one row runs as the user types
it (`python -m ...`) to prove the exit itself.
"""

import collections
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from advmeta_jax import attacks
from advmeta_jax import datasets
from advmeta_jax import experiments
from advmeta_jax import learners

REPO = pathlib.Path(__file__).resolve().parent.parent
DRIVER = REPO / "tests" / "bad_input_driver.py"
TIMEOUT_S = 300
_ROW = "| `"


def bad_input_rows():
  """`(command, message)` of every row of the table in docs/reliability.md."""
  text = (REPO / "docs" / "reliability.md").read_text()
  table = text.split("<!-- bad-input table -->")[1]
  rows = []
  for line in table.splitlines():
    if not line.startswith(_ROW):
      continue
    cells = re.split(r"(?<!\\)\|", line)[1:3]   # cells; \| is a pipe in a cell
    command, message = [c.strip().strip("`").replace("\\|", "|")
                        for c in cells]
    rows.append((command, message))
  return rows


def _words(command, tmp):
  words = command.replace("$TMP", str(tmp)).split()
  assert words[:2] == ["python", "-m"], command
  return words[2], words[3:]


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _prepare(tmp):
  (tmp / "notarun").mkdir()
  (tmp / "badjson").mkdir()
  (tmp / "badjson" / "config.json").write_text("{")
  (tmp / "afile").write_text("")


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
  """Runs every row, one driver process per launcher, all at once;
  `{command: (exit code, stderr)}`."""
  tmp = tmp_path_factory.mktemp("bad_input")
  _prepare(tmp)
  by_module = collections.defaultdict(list)
  for command, _ in bad_input_rows():
    module, args = _words(command, tmp)
    by_module[module].append((command, args))
  started = {
      module: subprocess.Popen(
          [sys.executable, str(DRIVER), module], cwd=REPO, env=_env(),
          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True)
      for module in by_module}
  results = {}
  for module, process in started.items():
    rows = by_module[module]
    stdout, stderr = process.communicate(
        json.dumps([args for _, args in rows]), timeout=TIMEOUT_S)
    assert process.returncode == 0, stderr[-3000:]
    for (command, _), out in zip(rows, json.loads(stdout)):
      results[command] = (out["code"], out["stderr"])
  return results


def _one_line(stderr):
  return [l for l in stderr.splitlines()
          if l.startswith(("error: ", "FATAL Flags parsing error"))]


def test_the_table_has_rows_for_every_launcher():
  modules = {_words(c, "")[0] for c, _ in bad_input_rows()}
  assert len(bad_input_rows()) >= 25
  assert {"launch.train", "launch.evaluate", "launch.reproduce",
          "launch.sweep", "launch.prepare_data"} <= modules, modules


@pytest.mark.parametrize("command,message", bad_input_rows())
def test_bad_input_gets_one_line_and_no_traceback(bad_input_results, command,
                                                  message):
  code, stderr = bad_input_results[command]
  assert code not in (0, None), stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = _one_line(stderr)
  assert len(lines) == 1, stderr[-3000:]
  expected = message.replace("$TMP", "")
  for fragment in expected.split(" … "):
    assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("flag,names", [
    ("learner", lambda: learners.names()),
    ("dataset", lambda: datasets.names()),
    ("experiment", lambda: experiments.names()),
    ("train_attack", lambda: attacks.train_attacks()),
])
def test_the_rows_of_unknown_choices_list_the_registrys(flag, names):
  """A row refusing an unknown --learner/--dataset/--experiment/
  --train_attack lists exactly the registered choices, in their order."""
  messages = [m for c, m in bad_input_rows() if f" --{flag}=" in c
              and "value should be one of" in m]
  assert messages, flag
  for message in messages:
    listed = re.search(r"value should be one of <([^>]*)>", message)[1]
    assert listed.split("|") == list(names()), message


def test_a_command_as_the_user_types_it_exits_with_the_one_line(tmp_path):
  command, message = bad_input_rows()[0]
  module, args = _words(command, tmp_path)
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                          env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert _one_line(result.stderr) == [message], result.stderr[-2000:]
  assert result.stdout == ""


def test_the_driver_reports_a_traceback_as_one(tmp_path):
  """The driver does not swallow a crash: a launcher that raises something
  other than a user error comes back as a traceback and exit 1."""
  sys.path.insert(0, str(REPO / "tests"))
  import bad_input_driver  # pylint: disable=g-import-not-at-top

  class _Launcher:
    __name__ = "broken"

    @staticmethod
    def main(argv):
      del argv
      raise RuntimeError("boom")

  code, stderr = bad_input_driver.run_one(_Launcher, [])
  assert code == 1 and "Traceback" in stderr and "boom" in stderr
