"""A real full disk: `launch.train` on a tmpfs too small for a checkpoint.

Integration tier; skipped where the test cannot mount a tmpfs (it needs
root, as in CI's container). tests/test_faults.py simulates ENOSPC in-process
for the unit tier.
"""

import os
import re
import subprocess
import sys

import pytest

from tests.test_launch import REPO

pytestmark = pytest.mark.integration

# An absl INFO record (possibly after a progress bar's carriage return).
_ABSL_INFO = re.compile(r"I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+\.py:\d+\]")

TINY = ("--filters=8", "--q_query=3", "--task_batch_size=2",
        "--inner_steps=1", "--num_steps=3", "--log_every=1",
        "--checkpoint_every=2", "--eval_episodes=0")


def _mount(target, size):
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                         "tmpfs", str(target)], capture_output=True,
                        check=False).returncode == 0


def _train(workdir):
  return subprocess.run(
      [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *TINY],
      cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
      capture_output=True, text=True, timeout=300)


def test_a_full_disk_is_one_line_and_the_same_command_resumes(tmp_path):
  target = tmp_path / "small"
  target.mkdir()
  if not _mount(target, "48k"):
    pytest.skip("cannot mount a tmpfs here (needs root)")
  try:
    result = _train(target / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "no space left on the device" in errors[0], errors[0]
    # Besides absl's info lines (the run's settings, a stored iteration
    # loaded, when the first step started): 8 lines measured (the progress
    # bar and its blank redraws, one ignored-exception line from a
    # finalizer, the error) instead of hundreds.
    other = [l for l in result.stderr.splitlines() if not _ABSL_INFO.search(l)]
    assert len(other) <= 10, result.stderr[-3000:]
    # Space freed: the same command finishes the run.
    subprocess.run(["mount", "-o", "remount,size=64m", str(target)],
                   check=True)
    again = _train(target / "run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(os.listdir(target / "run" / "checkpoints")) == ["2", "3"]
  finally:
    subprocess.run(["umount", str(target)], check=False)
