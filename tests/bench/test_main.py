"""python -m reproduce.bench: the ahead-of-time plan of the paper preset's step fits its budget."""

import json
import subprocess
import sys

import jax
import numpy as np

from reproduce.config import load_config
from reproduce.train.step import initial_weights

from tests.support.paths import ROOT


# Per-device budget the paper preset's step must fit (GPU rules, XLA attention, one device):
# well inside a 40 GB A100 and an 80 GB H100.
PAPER_STEP_BUDGET_GIB = 24


def test_plan_compiles_paper_step_within_budget():
  proc = subprocess.run(
      [sys.executable, "-m", "reproduce.bench", "plan", "--config=configs/attn2l.py:paper",
       "--platform=gpu"], cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  plan = json.loads(proc.stdout)
  paper = load_config("attn2l:paper")
  assert plan["shape"]["n_ctx"] == paper.model.n_ctx  # reads whatever the preset says
  assert plan["shape"]["tokens_per_step"] == paper.train.batch_size * paper.model.n_ctx
  memory = plan["memory_per_device"]
  assert 0 < memory["peak_estimate_gib"] <= PAPER_STEP_BUDGET_GIB, memory
  params = sum(np.prod(a.shape) for a in jax.tree.leaves(
      jax.eval_shape(lambda: initial_weights(paper))))
  assert memory["arguments_gib"] >= 3 * params * 4 / 2 ** 30  # weights + Adam's two moments
  assert plan["xla_flops_per_device"] > 0 and plan["step_time_floor_s"] > 0
