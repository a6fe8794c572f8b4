"""The package's shape: folders are layers and imports go one way.

Every import in every module (lazy ones inside functions too) is read from the
source. A module may import from its own layer or the layers below it, never
from a layer above; the module graph has no circle; no module reaches into
another module's private names; the library never imports its measurement
tools (benchmarks/), which only the command-line programs (cli/, the top
layer) run.
"""

import ast
import pathlib
from typing import Dict, Iterator, Set, Tuple

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "advmeta_jax"

# Bottom to top. Folders on one rank may not import each other either.
LAYERS = (("errors",), ("config",), ("datasets",), ("core", "attacks"),
          ("learners",), ("training",), ("evaluation",), ("experiments",),
          ("benchmarks",), ("cli",))
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _modules() -> Dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = ("advmeta_jax",) + path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


MODULES = _modules()


def _imports(name: str) -> Iterator[Tuple[str, str, int]]:
  """(imported module, imported name or "", line) of every import in `name`."""
  tree = ast.parse(MODULES[name].read_text())
  package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("advmeta_jax"):
          yield a.name, "", node.lineno
    elif isinstance(node, ast.ImportFrom):
      module = node.module or ""
      if node.level:
        base = package.split(".")
        base = base[:len(base) - node.level + 1]
        module = ".".join(base + ([module] if module else []))
      if not module.startswith("advmeta_jax"):
        continue
      for a in node.names:
        sub = f"{module}.{a.name}"
        if sub in MODULES:
          yield sub, "", node.lineno
        else:
          yield module, a.name, node.lineno


def _layer(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _graph() -> Dict[str, Set[str]]:
  return {m: {target for target, _, _ in _imports(m) if target != "advmeta_jax"}
          for m in MODULES}


def test_every_module_sits_in_a_layer():
  for module in MODULES:
    layer = _layer(module)
    assert module == "advmeta_jax" or layer in RANK, (
        f"{module} is in no layer of {LAYERS}")


def test_no_import_goes_up_a_layer_or_across_one():
  bad = []
  for module in MODULES:
    if module == "advmeta_jax":
      continue   # the package re-exports its public API
    mine = _layer(module)
    for target, _, line in _imports(module):
      theirs = _layer(target)
      if theirs == mine or target == "advmeta_jax":
        continue
      if RANK[theirs] >= RANK[mine]:
        bad.append(f"{module}:{line} imports {target}")
  assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_module_graph_has_no_circle():
  graph = _graph()
  index, low, stack, on_stack, circles = {}, {}, [], set(), []

  def visit(v):   # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        circles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  assert not circles, f"modules that import each other in a circle: {circles}"


def test_no_module_imports_a_private_name_of_another():
  bad = [f"{m}:{line} imports {target}.{name}"
         for m in MODULES for target, name, line in _imports(m)
         if name.startswith("_") and not name.startswith("__")]
  assert not bad, "\n".join(bad)


def test_no_module_reads_a_private_name_of_an_imported_module():
  bad = []
  for module, path in MODULES.items():
    tree = ast.parse(path.read_text())
    aliases = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
          "advmeta_jax"):
        for a in node.names:
          if f"{node.module}.{a.name}" in MODULES or node.module == "advmeta_jax":
            aliases.add(a.asname or a.name)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        bad.append(f"{module}:{node.lineno} reads {node.value.id}.{node.attr}")
  assert not bad, "\n".join(bad)


def test_the_library_never_imports_its_measurement_tools():
  bad = [f"{m}:{line}" for m in MODULES for target, _, line in _imports(m)
         if _layer(target) == "benchmarks"
         and _layer(m) not in ("benchmarks", "cli")]
  assert not bad, bad


def test_the_settings_import_nothing_of_the_library_but_errors():
  for module in MODULES:
    if _layer(module) != "config":
      continue
    outside = {t for t, _, _ in _imports(module)
               if _layer(t) not in ("config", "errors")}
    assert not outside, (module, outside)


def test_the_checks_find_what_they_look_for(tmp_path):
  """The graph test is not vacuous: a module that imports up a layer, one
  that imports a private name, and a circle are each found."""
  fake = tmp_path / "advmeta_jax"
  (fake / "core").mkdir(parents=True)
  (fake / "training").mkdir()
  (fake / "core" / "models.py").write_text(
      "from advmeta_jax.training import loop\n")
  (fake / "training" / "loop.py").write_text(
      "from advmeta_jax.core.models import _private\n")
  global MODULES  # pylint: disable=global-statement
  saved, MODULES = MODULES, {
      "advmeta_jax.core.models": fake / "core" / "models.py",
      "advmeta_jax.training.loop": fake / "training" / "loop.py"}
  try:
    for check in (test_no_import_goes_up_a_layer_or_across_one,
                  test_the_module_graph_has_no_circle,
                  test_no_module_imports_a_private_name_of_another):
      try:
        check()
      except AssertionError:
        continue
      raise AssertionError(f"{check.__name__} missed the planted fault")
  finally:
    MODULES = saved


def _body_lines(node) -> int:
  """A function's lines without its docstring."""
  lines = node.end_lineno - node.lineno + 1
  first = node.body[0]
  if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
      and isinstance(first.value.value, str)):
    lines -= first.end_lineno - first.lineno + 1
  return lines


def test_training_and_evaluation_keep_their_functions_short():
  """The loop is state, step and loop: no function of training/ or
  evaluation/ runs over 60 lines (its docstring aside)."""
  long = [f"{m}.{n.name}: {_body_lines(n)} lines"
          for m, path in MODULES.items()
          if _layer(m) in ("training", "evaluation")
          for n in ast.walk(ast.parse(path.read_text()))
          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
          and _body_lines(n) > 60]
  assert not long, long
