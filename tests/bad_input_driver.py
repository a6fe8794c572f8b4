"""Runs one launcher on many command lines in one process, as `python -m`
would run each of them: the flags are parsed by absl's parser
(`app.parse_flags_with_usage`, which prints the one `FATAL Flags parsing
error` line), then `main` runs under `advmeta_jax.cli.common.user_errors_exit`, which
prints the one `error:` line of a user error.

  python tests/bad_input_driver.py launch.train < rows.json > results.json

rows.json: a list of argument lists; results.json: one `{"code", "stderr"}`
per row. tests/test_bad_input.py starts one of these per launcher (a few
seconds of imports each) instead of one process per row.
"""

import contextlib
import importlib
import io
import json
import pathlib
import sys
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top


def run_one(module, args):
  """`(exit code, stderr)` of `python -m <module> <args>`, in this process."""
  from advmeta_jax.cli import common  # pylint: disable=g-import-not-at-top
  err = io.StringIO()
  code = 0
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      flags.FLAGS.unparse_flags()
      app.parse_flags_with_usage([module.__name__] + list(args))
      common.user_errors_exit(module.main)([module.__name__])
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      code = 1
  return code, err.getvalue()


def main():
  module = importlib.import_module(sys.argv[1])
  rows = json.load(sys.stdin)
  results = [dict(zip(("code", "stderr"), run_one(module, args)))
             for args in rows]
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
