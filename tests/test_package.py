"""Installed like a library: the wheel and the sdist build, the wheel installs
into a fresh environment with its console scripts, and each script runs.

The venv reuses this machine's site-packages for the dependencies (no
download) and gets the wheel itself from the local build; it runs outside
the checkout, so it imports the installed copy, not the source tree.
"""

import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ("advmeta-train", "advmeta-evaluate", "advmeta-reproduce",
           "advmeta-sweep", "advmeta-prepare-data", "advmeta-benchmark",
           "advmeta-certify")
# The quickstart's first steps, small: 2 meta-steps, 4 test episodes.
QUICK = ("--num_steps=2", "--eval_episodes=4", "--filters=4",
         "--task_batch_size=2", "--q_query=2", "--eval_batch_size=4",
         "--conv_impl=xla", "--parallel_tasks=0", "--noremat")


def _run(args, cwd, env=None, timeout=900):
  return subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                        timeout=timeout, check=False,
                        env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """`(venv bin directory, the dist directory)` with the wheel installed."""
  root = tmp_path_factory.mktemp("package")
  dist = root / "dist"
  built = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                str(dist), str(REPO)], cwd=root)
  assert built.returncode == 0, built.stderr[-3000:]
  venv = root / "venv"
  made = _run([sys.executable, "-m", "venv", "--system-site-packages",
               str(venv)], cwd=root)
  assert made.returncode == 0, made.stderr
  (wheel,) = dist.glob("advmeta_jax-*.whl")
  pip = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
             cwd=root)
  assert pip.returncode == 0, pip.stderr[-3000:]
  return venv / "bin", dist


@pytest.mark.integration
def test_the_wheel_and_sdist_hold_the_package_and_no_top_level_launch(
    installed):
  _, dist = installed
  (wheel,) = dist.glob("advmeta_jax-*.whl")
  assert len(list(dist.glob("advmeta_jax-*.tar.gz"))) == 1
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names}
  assert "advmeta_jax" in tops and "launch" not in tops, tops
  assert "advmeta_jax/cli/train.py" in names
  entry_points = next(n for n in names if n.endswith("entry_points.txt"))
  text = zipfile.ZipFile(wheel).read(entry_points).decode()
  for script in SCRIPTS:
    assert f"{script} = advmeta_jax.cli." in text, script


@pytest.mark.integration
def test_every_console_script_runs_from_the_installed_wheel(installed,
                                                              tmp_path):
  bin_dir, _ = installed
  where = _run([str(bin_dir / "python"), "-c",
                "import advmeta_jax; print(advmeta_jax.__file__)"],
               cwd=tmp_path)
  assert str(bin_dir.parent) in where.stdout, where.stdout   # not the checkout
  for script in SCRIPTS:
    # absl prints the flags and exits with 1 after --helpfull.
    result = _run([str(bin_dir / script), "--helpfull"], cwd=tmp_path)
    assert "Traceback" not in result.stderr, (script, result.stderr[-2000:])
    assert f"advmeta_jax.cli.{script[8:].replace('-', '_')}:" in (
        result.stdout), (script, result.stdout[:500])
  short = _run([str(bin_dir / "advmeta-train"), "--help"], cwd=tmp_path)
  assert "Meta-trains a learner" in short.stdout + short.stderr


@pytest.mark.integration
def test_advmeta_train_prints_the_table_python_m_launch_train_prints(
    installed, tmp_path):
  """The quickstart's command, small, both ways: the same one-row table."""
  bin_dir, _ = installed
  script = _run([str(bin_dir / "advmeta-train"),
                 f"--workdir={tmp_path / 'a'}", *QUICK], cwd=tmp_path)
  module = _run([sys.executable, "-m", "launch.train",
                 f"--workdir={tmp_path / 'b'}", *QUICK], cwd=REPO)
  rows = []
  for result in (script, module):
    assert result.returncode == 0, result.stderr[-3000:]
    rows.append(re.findall(r"^\| maml \| digits \| .*\|$", result.stdout,
                           re.MULTILINE))
  assert len(rows[0]) == 1 and rows[0] == rows[1], rows
