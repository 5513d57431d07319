"""Running the command lines in subprocesses (each with a time limit) and copying trained runs."""

import shutil
import subprocess
import sys

from tests.support.paths import ROOT


LIMIT = 240  # seconds for any one subprocess


def train_command(workdir, cache_dir, *extra, module="reproduce.train"):
  return [sys.executable, "-m", module, "--config=configs/attn2l.py:test",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}", *extra]


def run_command(args, cwd=ROOT, **kw):
  return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=LIMIT, **kw)


def copy_run(trained, tmp_path, name="copy"):
  workdir = tmp_path / name
  shutil.copytree(trained.workdir, workdir)
  (workdir / "lock").unlink(missing_ok=True)
  return workdir
