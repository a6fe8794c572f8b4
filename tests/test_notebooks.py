"""The Colab notebooks: executed top to bottom at a tiny scale, on the CPU.

Each notebook has one code cell tagged "parameters". Like papermill, the test
inserts a cell after it that overrides those values (a tiny model, a few steps
and episodes, a temporary workdir) and runs every cell in a fresh Jupyter
kernel with nbclient; a cell that raises fails the test with its traceback.
The kernel imports the library from this checkout (PYTHONPATH).
"""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = ("quickstart", "robustness_analysis")

TINY = {
    "quickstart": dict(
        NUM_STEPS=2, TASKS_PER_DEVICE=2, FILTERS=4, EPISODES=4,
        TEST_INNER_STEPS=2, PGD_STEPS=2),
    "robustness_analysis": dict(
        K_SHOT=2, LEARNERS=("tafl",), NUM_STEPS=2, TASKS_PER_DEVICE=2,
        FILTERS=4, EPISODES=4, TEST_INNER_STEPS=2, PGD_STEPS=2,
        # γ=2, k=1 is the trained "tafl" row's config: one compile is shared.
        GAMMAS=(2.0,), KS=(1.0, 4.0), SWEEP_STEPS=2, SWEEP_EPISODES=4),
}

# What a notebook may not contain: it uses the library, it does not re-derive
# it (no transforms, no array maths, no function definitions).
FORBIDDEN = (r"\bdef\s", r"\blambda\b", r"jax\.(grad|vmap|jit|value_and_grad)",
             r"\bjnp\.", r"\blax\.", r"\boptax\b", r"\bnp\.")


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)


def _code(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def _parameters_index(nb):
  tagged = [i for i, c in enumerate(nb.cells)
            if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
  return tagged[0]


def _outputs_text(cell):
  parts = []
  for out in cell.get("outputs", []):
    if out.output_type == "stream":
      parts.append(out.text)
    elif out.output_type in ("display_data", "execute_result"):
      parts.append(out.data.get("text/markdown", ""))
      parts.append(out.data.get("text/plain", ""))
  return "".join(parts)


def _images(nb):
  return sum("image/png" in out.get("data", {})
             for c in _code(nb) for out in c.get("outputs", []))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  for cell in _code(nb):
    assert cell.outputs == [] and cell.execution_count is None, (
        f"{name}.ipynb has outputs in git; clear them before committing.")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_only_calls_the_library(name):
  nb = _read(name)
  parameters = _parameters_index(nb)
  params_src = nb.cells[parameters].source
  for key in TINY[name]:
    assert re.search(rf"^{key} = ", params_src, re.M), (
        f"{key} is not a parameter of {name}.ipynb")
  for cell in _code(nb):
    for pattern in FORBIDDEN:
      assert not re.search(pattern, cell.source), (
          f"{name}.ipynb contains {pattern!r}; notebooks call the library, "
          f"they do not implement it:\n{cell.source}")


@pytest.mark.parametrize("name", NAMES)
def test_readme_and_notebook_link_to_colab(name):
  url = ("https://colab.research.google.com/github/advmeta-jax/advmeta_jax/"
         f"blob/main/notebooks/{name}.ipynb")
  with open(os.path.join(ROOT, "README.md")) as f:
    assert url in f.read()
  assert url in _read(name).cells[0].source


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_at_tiny_scale(name, tmp_path,
                                                   monkeypatch):
  nb = _read(name)
  overrides = dict(TINY[name], WORKDIR=str(tmp_path / "work"))
  injected = nbformat.v4.new_code_cell(
      "# Parameters injected by tests/test_notebooks.py\n" + "\n".join(
          f"{k} = {v!r}" for k, v in overrides.items()))
  injected.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(_parameters_index(nb) + 1, injected)
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  client.execute()   # raises CellExecutionError (with the traceback)

  text = "\n".join(_outputs_text(c) for c in _code(nb))
  assert "backend: cpu" in text
  learners = TINY[name].get("LEARNERS", ("maml", "tafl"))
  for learner in learners:
    assert re.search(rf"\| {learner} \| \d+\.\d\d ± \d+\.\d\d \|", text), (
        f"no result row for {learner} in the outputs:\n{text}")
  if name == "quickstart":
    assert "clean/adv (pgd ε=8/255)" in text
    assert _images(nb) == 2        # training curves, per-step curves
    assert (tmp_path / "work" / "report" / "results.csv").exists()
  else:
    for case in ("adv/clean", "mixed/clean", "mixed/adv"):
      assert case in text
    assert "mean L_AR" in text and "% of tasks above 1" in text
    assert "γ \\ k" in text        # the sweep's table
    assert _images(nb) == 3        # KDE, per-step curves, heatmap
    assert (tmp_path / "work" / "sweep" / "sensitivity_heatmap.png").exists()
