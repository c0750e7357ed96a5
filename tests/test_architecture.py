"""The package tree is the architecture: layers import only downward, no module cycle, public APIs only.

Read from the source with ``ast`` (imports inside functions count too), so nothing is imported here.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "jaxcl"

# Bottom to top; a package may import packages of lower layers only (and itself).
LAYERS = (
    ("extras",),
    ("losses", "augment", "models", "data"),
    ("methods",),
    ("report",),
    ("evaluate", "train"),
    ("serve",),
    ("experiment",),
    ("main",),
    ("__main__",),
)
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: pathlib.Path) -> str:
  parts = ("jaxcl",) + path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
  rel = pathlib.Path(*name.split(".")[1:])
  return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _imports(path: pathlib.Path) -> list[tuple[str, int, list[str]]]:
  """``(module, line, imported names)`` for every ``jaxcl`` import in the file."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxcl":
      out.append((node.module, node.lineno, [a.name for a in node.names]))
    elif isinstance(node, ast.Import):
      out += [(a.name, node.lineno, []) for a in node.names if a.name.split(".")[0] == "jaxcl"]
  return out


def _graph() -> dict[str, set[str]]:
  """Module -> the jaxcl modules it imports (``from P import m`` counts as P.m where m is a module)."""
  graph = {}
  for path in sorted(ROOT.rglob("*.py")):
    edges = set()
    for module, _, names in _imports(path):
      subs = [f"{module}.{n}" for n in names if _is_module(f"{module}.{n}")]
      edges.update(subs)
      if len(subs) < len(names) or not names:
        edges.add(module)
    graph[_module_name(path)] = edges - {_module_name(path)}
  return graph


def _package(module: str) -> str:
  return module.split(".")[1] if "." in module else ""


def test_every_package_has_a_layer():
  top = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
         if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
  assert top == set(LEVEL), "add the new package to LAYERS (and the README's architecture section)"


def test_the_root_holds_packages_and_the_entry_point_only():
  loose = sorted(p.name for p in ROOT.glob("*.py"))
  assert loose == ["__init__.py", "__main__.py", "main.py"]


def test_layers_import_only_downward():
  upward = []
  for module, edges in _graph().items():
    src = _package(module)
    for target in edges:
      dst = _package(target)
      if dst and dst != src and LEVEL[dst] >= LEVEL[src]:
        upward.append(f"{module} imports {target} (layer {LEVEL[src]} -> {LEVEL[dst]})")
  assert not upward, "\n".join(upward)


def test_no_import_cycle():
  graph = _graph()
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  def visit(node, path):
    state[node] = 1
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
      if nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 2
  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_no_private_import_across_packages():
  private = []
  for path in sorted(ROOT.rglob("*.py")):
    src = _package(_module_name(path))
    for module, line, names in _imports(path):
      if _package(module) == src:
        continue
      hidden = [p for p in module.split(".") if p.startswith("_")]
      hidden += [n for n in names if n.startswith("_")]
      if hidden:
        private.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} {hidden}")
  assert not private, "\n".join(private)


def test_no_private_jax_internals():
  hits = []
  for path in sorted(ROOT.rglob("*.py")):
    for i, line in enumerate(path.read_text().splitlines(), 1):
      if "jax._src" in line or ".mat." in line or "._src." in line:
        hits.append(f"{path.relative_to(ROOT.parent)}:{i}: {line.strip()}")
  assert not hits, "\n".join(hits)


# ---------------------------------------------------------------------------------------------------
# The top floor: tasks chosen by what a method declares, methods that see only their own section.

TASKS = ROOT / "experiment" / "tasks"
OTHER_SECTIONS = ("data", "train", "eval", "model", "augment", "optim", "batch_size", "steps")


def _literal(path: pathlib.Path, name: str):
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
      return ast.literal_eval(node.value)
  raise AssertionError(f"{name} is not assigned in {path}")


def test_every_kind_of_run_has_a_task_module():
  kinds = set(_literal(ROOT / "methods" / "base.py", "DATA_KINDS")) | {"captions"}
  modules = {p.stem for p in TASKS.glob("*.py")} - {"__init__", "base"}
  assert modules == kinds, "one module in jaxcl/experiment/tasks/ per data kind (and captions)"
  registry = next(n for n in ast.walk(ast.parse((TASKS / "__init__.py").read_text()))
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "TASKS")
  assert {k.value for k in registry.value.keys} == kinds


def test_tasks_sit_below_run_and_validation():
  """A task imports the parts and the other tasks, never the module that runs it."""
  above = {"jaxcl.experiment.run", "jaxcl.experiment.validation", "jaxcl.experiment.serve",
           "jaxcl.main"}
  graph = _graph()
  wrong = [f"{m} imports {t}" for m, edges in graph.items() if m.startswith("jaxcl.experiment.tasks")
           for t in edges if t in above]
  assert not wrong, "\n".join(wrong)
  assert "jaxcl.experiment.tasks" in graph["jaxcl.experiment.run"]


def test_run_holds_no_evaluator_and_no_branch_on_a_kind_or_method():
  tree = ast.parse((ROOT / "experiment" / "run.py").read_text())
  classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
  assert not classes, f"evaluators live in jaxcl/experiment/tasks/, not run.py: {classes}"
  names = set(_literal(ROOT / "methods" / "base.py", "DATA_KINDS")) | {"captions", "retrieval", "clip",
                                                                      "siglip", "cpc"}
  branches = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)
              and any(isinstance(c, ast.Constant) and c.value in names
                      for c in [n.left, *n.comparators])]
  assert not branches, f"run.py branches on a kind of run: {branches}"


def test_methods_read_only_their_own_config_section():
  """No method module names the experiment config or reads another section of it."""
  reads = []
  for path in sorted((ROOT / "methods").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Attribute) and node.attr in OTHER_SECTIONS
          and isinstance(node.value, ast.Name) and node.value.id == "config"):
        reads.append(f"{path.name}:{node.lineno}: config.{node.attr}")
      if isinstance(node, ast.arg) and node.arg == "config":
        reads.append(f"{path.name}:{node.lineno}: a parameter named 'config' (take method_config)")
  assert not reads, "\n".join(reads)
