"""The package (reproduce/__init__.py): configs/ and experiments/ found from a clone used
elsewhere, a second clone on the path, and the installed package."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.runs import LIMIT, run_command as _run


def test_clone_works_from_another_directory(tmp_path):
  """configs/ and experiments/ are found as reproduce.configs / reproduce.experiments from a
  clone used elsewhere (they are not on sys.path: only the clone's root is)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  out = _run([sys.executable, "-c", (
      "import sys; from reproduce.config import load_config; from reproduce.figure import runner as figure; "
      "c = load_config('configs/attn2l.py:test'); assert c.model.n_layers == 2; "
      "assert figure.figure_module('bigram').DESCRIPTION; "
      "assert 'configs' not in sys.modules and 'experiments' not in sys.modules; print('OK')")],
      cwd=tmp_path, env=env)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr


@pytest.mark.slow  # copies the package and starts an interpreter
def test_a_second_clone_on_the_path_uses_its_own_configs_and_experiments(tmp_path):
  """A second checkout (a git worktree, say) put on PYTHONPATH imports its own configs/ and
  experiments/, not those of the clone the editable install was made from."""
  other = tmp_path / "other"
  for name in ("reproduce", "configs", "experiments"):
    shutil.copytree(ROOT / name, other / name, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy2(ROOT / "setup.cfg", other / "setup.cfg")
  out = _run([sys.executable, "-c", (
      "import reproduce.configs, reproduce.experiments; from reproduce.figure import runner as figure; "
      "print(reproduce.configs.__file__); print(reproduce.experiments.__file__); "
      "print(figure.figure_module('bigram').__file__)")],
      cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(other)))
  assert out.returncode == 0, out.stderr
  assert all(line.startswith(str(other)) for line in out.stdout.split()), out.stdout


@pytest.mark.slow
def test_installed_package_runs_readme_commands_from_elsewhere(tmp_path):
  """``pip install .`` into a throwaway venv: reproduce.configs / reproduce.experiments are
  installed, nothing generic at the top level, and README's commands work from another folder."""
  src = tmp_path / "src"
  files = _run(["git", "ls-files", "-co", "--exclude-standard"]).stdout.split()
  for f in files:
    if (ROOT / f).is_file():
      (src / f).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / f, src / f)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=LIMIT)
  python = str(venv / "bin" / "python")
  site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path).stdout.strip())
  (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # jax & co.
  install = _run([python, "-m", "pip", "install", "--no-deps", "-q",
                  str(src)], cwd=tmp_path)
  assert install.returncode == 0, install.stderr[-3000:]
  assert (site / "reproduce" / "configs" / "attn2l.py").is_file()
  assert (site / "reproduce" / "experiments" / "bigram.py").is_file()
  assert not (site / "configs").exists() and not (site / "experiments").exists()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  out = _run([python, "-m", "reproduce.figure", "--list"], cwd=elsewhere)
  assert out.returncode == 0 and "induction_formation" in out.stdout, out.stderr
  out = _run([python, "-m", "reproduce.train", "--config=configs/attn2l.py:test",
              f"--workdir={elsewhere / 'run'}", "--config.train.steps=3",
              f"--config.data.cache_dir={tmp_path / 'cache'}"], cwd=elsewhere)
  assert out.returncode == 0, out.stderr
  assert "step      3/3" in out.stdout
  imported = _run([python, "-c", "import reproduce.config as c; print(c.__file__)"],
                  cwd=elsewhere).stdout
  assert imported.startswith(str(site)), imported
