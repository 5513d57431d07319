"""python -m reproduce.bench: the ahead-of-time plan of a step (FLOPs and memory as XLA counts
them, the step plan) in process at the `test` preset, and (slow) the paper preset's step fits its
budget."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from reproduce.bench import __main__ as bench_command
from reproduce.config import load_config
from reproduce.figure.estimate import model_flops_per_token
from reproduce.train.step import initial_weights

from tests.support.paths import ROOT


# Per-device budget the paper preset's step must fit (GPU rules, XLA attention, one device):
# well inside a 40 GB A100 and an 80 GB H100.
PAPER_STEP_BUDGET_GIB = 24


@pytest.mark.slow  # compiles the paper-scale step
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


def test_plan_of_the_test_step_in_process():
  config = load_config("attn2l:test")
  plan = bench_command.plan_train_step(config, platform="cpu")
  m, t = config.model, config.train
  assert plan["shape"] == {"n_layers": 2, "d_model": m.d_model, "n_heads": m.n_heads,
                           "d_head": m.d_head, "d_vocab": m.d_vocab, "n_ctx": m.n_ctx,
                           "batch_size": t.batch_size, "tokens_per_step": t.batch_size * m.n_ctx}
  assert plan["analytic_flops_per_step"] == model_flops_per_token(m) * t.batch_size * m.n_ctx
  assert plan["xla_flops_per_device"] > 0 and plan["compiled_for"] == "cpu"
  assert plan["step_plan"]["attention"] in ("explicit", "blocked") and plan["step_plan"]["choices"]
  assert set(plan["memory_per_device"]) >= {"arguments_gib", "peak_estimate_gib"}
  with pytest.raises(ValueError, match=f"--devices=99 but JAX sees {len(jax.devices())} device"):
    bench_command.plan_train_step(config, n_devices=99)
