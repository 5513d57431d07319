"""reproduce.figure.estimate: the training-time estimate and its durations by hand; the first-run
plan lists every seed's models and spots finished ones; a forced compute dtype trains into its
own run."""

import subprocess
import sys

import pytest

from reproduce.config import load_config
from reproduce.figure import estimate
from reproduce.figure.sources import ModelSource

from tests.support.paths import ROOT


@pytest.mark.slow  # measures the matmul peak; the arithmetic: test_the_training_time_estimate_...
def test_first_run_plan_lists_every_seeds_models_and_spots_finished_ones(tmp_path):
  from reproduce.figure.estimate import first_run_plan  # pylint: disable=import-outside-toplevel
  from reproduce.figure.runner import figure_config  # pylint: disable=import-outside-toplevel
  _, finished = ModelSource("test", models_dir=tmp_path, seed=1).run("attn2l")
  (finished / "checkpoints" / "30").mkdir(parents=True)  # the test preset trains 30 steps
  models = figure_config("eigen_hist", "test").models
  plan = first_run_plan(models, 1, ModelSource("test", models_dir=tmp_path), seeds=2).splitlines()
  assert "2 seeds" in plan[0] and "estimated" in plan[0]
  assert [line.split(", 0.0M tokens")[0] for line in plan[1:]] == [
      "  attn1l seed 0: train 30 steps", "  attn2l seed 0: train 30 steps",
      "  attn1l seed 1: train 30 steps", "  attn2l seed 1: trained, reused"]
  single = first_run_plan(models, 1, ModelSource("test", models_dir=tmp_path)).splitlines()
  assert single[1:] and all(line.startswith(("  attn1l: train", "  attn2l: train"))
                           for line in single[1:])  # seed 0 trains; seed 1 is not it


@pytest.mark.slow  # measures the matmul peak in two dtypes and starts the command
def test_forced_compute_dtype_trains_into_its_own_run_and_the_plan_says_so(tmp_path):
  from reproduce.figure.estimate import first_run_plan  # pylint: disable=import-outside-toplevel
  auto_config, auto_run = ModelSource("test", models_dir=tmp_path).run("attn2l")
  for dtype in ("float32", "bfloat16"):
    config, run = ModelSource("test", models_dir=tmp_path, compute_dtype=dtype).run("attn2l")
    assert config.train.compute_dtype == dtype and run != auto_run
    plan = first_run_plan(["attn2l"], 1, ModelSource("test", models_dir=tmp_path, compute_dtype=dtype)).splitlines()
    assert f"{dtype} products" in plan[1], plan
  assert auto_config.train.compute_dtype == "auto"
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram",
                        "--compute_dtype=float32", f"--checkpoint={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 2 and "--compute_dtype" in out.stderr


def test_the_training_time_estimate_by_hand():
  """steps × tokens a step × (model FLOPs / product speed + attention-score cost) per token over
  the peak, plus the start-up; durations read in minutes, hours or days."""
  config = load_config("attn2l:test")
  m, t = config.model, config.train
  flops = 6 * (m.d_model * m.d_vocab + 2 * 4 * m.d_model * m.n_heads * m.d_head) \
      + 12 * 2 * m.n_heads * m.d_head * m.n_ctx
  assert estimate.model_flops_per_token(m) == flops
  for dtype, speed, score in (("float32", 0.62, 480), ("bfloat16", 1.43, 640),
                              ("bfloat16_avx512", 1.42, 455)):
    per_token = flops / speed + score * 2 * m.n_heads * m.n_ctx / 2
    want = 3 + t.steps * t.batch_size * m.n_ctx * per_token / 1e9
    assert estimate.estimated_training_seconds(config, 1e9, dtype) == pytest.approx(want)
  assert [estimate.duration(s, 1) for s in (90, 3 * 3600, 5 * 86400)] == [
      "1.5 min", "3 hours", "5 days"]
  assert estimate.duration(7199) == "120 min" and estimate.duration(2 * 86400 - 1) == "48 hours"


def test_estimates_read_in_minutes_hours_or_days():
  assert estimate.duration(90) == "2 min" and estimate.duration(90, 1) == "1.5 min"
  assert estimate.duration(5 * 3600) == "5 hours"
  assert estimate.duration(505355 * 60) == "351 days"


@pytest.mark.slow  # measures the matmul peak
def test_the_paper_preset_planned_on_a_cpu_says_days_and_points_to_build(tmp_path):
  plan = estimate.first_run_plan(["attn2l"], 1, ModelSource("paper", models_dir=tmp_path))
  assert " days on this machine" in plan and "min on this machine" not in plan
  assert "10.5B tokens" in plan
  assert "made for accelerators" in plan and "BUILD.md" in plan


def test_bfloat16_without_amx_has_constants_of_its_own(monkeypatch):
  monkeypatch.setattr(estimate, "cpu_has_amx", lambda: False)
  assert estimate.product_kind("bfloat16", "cpu") == "bfloat16_avx512"
  assert estimate.product_kind("float32", "cpu") == "float32"
  assert estimate.product_kind("bfloat16", "gpu") == "bfloat16"
  monkeypatch.setattr(estimate, "cpu_has_amx", lambda: True)
  assert estimate.product_kind("bfloat16", "cpu") == "bfloat16"
