"""The package's shape: the analysis core imports none of the runner or its heavy libraries, no
module imports itself back through another, and function-local imports stay rare."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

CORE_PUBLIC = ("weights", "model", "kernels", "circuits", "paths", "scores", "tl_format",
               "loading", "torch_zip", "tl_config", "model_folder")
NOT_IN_CORE = ("orbax", "optax", "matplotlib", "flax", "reproduce.train", "reproduce.figure",
               "reproduce.experiments", "reproduce.bench", "reproduce.data", "reproduce.cli")


def test_importing_the_core_imports_no_runner_and_no_heavy_library():
  code = ("import sys\n"
          + "".join(f"import reproduce.core.{m}\n" for m in CORE_PUBLIC)
          + "import reproduce\nreproduce.load, reproduce.forward\n"
          + f"bad = [m for m in sys.modules if any(m == p or m.startswith(p + '.') "
            f"for p in {NOT_IN_CORE!r})]\nprint(sorted(bad))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "[]", out


def _module_name(path: Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  if parts[0] in ("configs", "experiments"):  # installed as reproduce.configs / .experiments
    parts = ["reproduce"] + parts
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _sources():
  for folder in ("reproduce", "experiments", "configs"):
    for path in sorted((ROOT / folder).rglob("*.py")):
      yield path


def _top_level_imports(tree: ast.Module, known) -> set:
  """Project modules imported at module level (what runs on import)."""
  found = set()
  for node in tree.body:
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in known)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        full = f"{node.module}.{a.name}"
        found.add(full if full in known else node.module)
  return {m for m in found if m in known}


def test_no_import_cycles():
  trees = {_module_name(p): ast.parse(p.read_text()) for p in _sources()}
  known = set(trees)
  graph = {m: _top_level_imports(t, known) - {m} for m, t in trees.items()}
  state = {}

  def visit(m, stack):
    state[m] = "open"
    for n in sorted(graph[m]):
      assert state.get(n) != "open", "import cycle: " + " → ".join(stack + [m, n])
      if n not in state:
        visit(n, stack + [m])
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m, [])


def test_core_imports_nothing_from_the_runner():
  for path in sorted((ROOT / "reproduce" / "core").rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reproduce"):
        assert node.module.startswith("reproduce.core"), f"{path.name} imports {node.module}"


def test_function_local_imports_are_few():
  """Only optional heavy dependencies are imported inside functions (at most five places)."""
  local = []
  for path in _sources():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        local += [f"{path.name}:{n.lineno}" for n in ast.walk(node)
                  if isinstance(n, (ast.Import, ast.ImportFrom))]
  local = sorted(set(local))
  assert len(local) <= 5, local


def test_readme_layout_names_every_module():
  """README's "Layout" picture has a line for every module of the package."""
  readme = (ROOT / "README.md").read_text()
  layout = readme[readme.index("## Layout"):]
  layout = layout[:layout.index("\n## ", 1)]
  missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "reproduce").rglob("*.py"))
             if p.name not in ("__main__.py",) and not p.is_symlink()
             and not any(part in ("configs", "experiments") for part in p.relative_to(ROOT).parts)
             and p.name not in layout]
  assert not missing, f"README's Layout does not mention {missing}"
