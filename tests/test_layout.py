"""The package's shape: the analysis core imports none of the runner or its heavy libraries, no
module imports itself back through another, function-local imports stay rare, and the tests mirror
the package (every module has tests/<package>/test_<module>.py with a test in the default suite,
every figure runs end to end there)."""

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


# Modules of reproduce/ whose tests are not in their mirrored file, each with the reason; every
# other module needs tests/<package>/test_<module>.py with at least one test outside the slow set.
# (__init__.py and __main__.py are left out: the package's lazy names and clone folders are
# tested in tests/test_package.py, the commands in tests/<package>/test_main.py.)
UNMIRRORED = {}


def _mirror(path: Path) -> Path:
  """reproduce/core/scores/patterns.py → tests/core/scores/test_patterns.py."""
  rel = path.relative_to(ROOT / "reproduce")
  return ROOT / "tests" / rel.parent / f"test_{rel.stem}.py"


def _is_slow(node) -> bool:
  return any("slow" in ast.unparse(d) for d in getattr(node, "decorator_list", []))


def _fast_tests(test_file: Path) -> list:
  """The test functions of ``test_file`` that the default suite runs (not marked slow, in a module
  not marked slow as a whole)."""
  tree = ast.parse(test_file.read_text())
  if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
         and "slow" in ast.unparse(n.value) for n in tree.body):
    return []
  return [n.name for n in tree.body if isinstance(n, ast.FunctionDef)
          and n.name.startswith("test_") and not _is_slow(n)]


def test_every_module_has_a_mirrored_test_file_with_a_fast_test():
  missing, slow_only = [], []
  for path in sorted((ROOT / "reproduce").rglob("*.py")):
    rel = path.relative_to(ROOT).as_posix()
    if path.name in ("__init__.py", "__main__.py") or rel in UNMIRRORED:
      continue
    test = _mirror(path)
    if not test.is_file():
      missing.append(f"{rel} (no {test.relative_to(ROOT).as_posix()})")
    elif not _fast_tests(test):
      slow_only.append(f"{rel} ({test.relative_to(ROOT).as_posix()} has only slow tests)")
  assert not missing and not slow_only, "\n".join(missing + slow_only)
  assert all((ROOT / p).is_file() for p in UNMIRRORED), "an exception names no module"


def test_every_figure_runs_end_to_end_in_the_default_suite():
  """tests/figure/test_runner.py runs every figure module (``figure_names()``, each module of
  experiments/) on the `test` preset, outside the slow set."""
  tree = ast.parse((ROOT / "tests" / "figure" / "test_runner.py").read_text())
  test = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
              and n.name == "test_figure_writes_picture_numbers_and_claims")
  assert not _is_slow(test)
  assert any("parametrize('name', FIGURES)" in ast.unparse(d) for d in test.decorator_list)
  assert any(isinstance(n, ast.Assign) and ast.unparse(n) == "FIGURES = figure_names()"
             for n in tree.body)
  modules = {p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_")}
  from reproduce.figure.runner import figure_names  # pylint: disable=import-outside-toplevel
  assert set(figure_names()) == {m for m in modules
                                 if "def run(" in (ROOT / "experiments" / f"{m}.py").read_text()}
