"""reproduce.atlas.plan: the work the atlas counts (the ablation pass against its parts, the
budget that sizes it) and the plan it prints."""

import pytest

from reproduce.atlas import default_config, plan
from reproduce.bench.figures import SHAPES
from reproduce.config import load_config
from reproduce.core.model import ModelConfig
from reproduce.figure.sources import Model

from tests.support.helpers import random_model


def test_layer_flops_count_the_projections_and_the_causal_scores():
  cfg = ModelConfig(n_layers=1, n_heads=2, d_head=3, d_model=5, d_vocab=7, n_ctx=8)
  T = 8
  projections = 4 * 2 * 5 * (2 * 3) * T  # Q, K, V, O: T rows × d_model × H·d_head, 2 FLOPs each
  scores_and_mixing = 2 * 2 * (2 * 3) * T * T / 2
  assert plan.layer_flops(cfg, T) == pytest.approx(projections + scores_and_mixing)
  assert plan.forward_flops(cfg, 3, T, 2) == pytest.approx(3 * (plan.layer_flops(cfg, T)
                                                                + 2 * 2 * 5 * 7))


def test_the_ablation_pass_is_sized_from_its_counted_work():
  config = default_config("cpu")
  small = ModelConfig.from_any(load_config("attn2l:cpu"))
  assert plan.ablation_windows(small, config) == config.icl_windows == 512  # as head_ablations
  big = ModelConfig(**SHAPES["paper"])
  windows = plan.ablation_windows(big, config)
  assert config.ablation_min_windows <= windows < config.icl_windows
  early, late, spread, positions = plan.scored_positions(big, config)
  assert (early, late) == (49, 499) and spread[0] == 0 and spread[-1] == late == max(positions)
  budget = config.ablation_budget_tflop * 1e12
  assert plan.ablation_flops(big, windows, positions) <= budget
  assert plan.ablation_flops(big, 2 * windows, positions) > budget
  # a group in layer l runs the layers above it again: one layer more of work per group below
  one, two = (ModelConfig(**{**SHAPES["paper"], "n_layers": n}) for n in (1, 2))
  assert plan.ablation_flops(two, 1, positions) > 2 * plan.ablation_flops(one, 1, positions)
  parts = plan.work(big, config, has_text=True)
  assert max(parts, key=parts.get) == "ablations" and all(v > 0 for v in parts.values())
  assert "ablations" not in plan.work(big, config, has_text=False)


def test_the_plan_names_each_model_what_it_measures_and_a_time():
  cfg, w = random_model(n_layers=2, pos="shortformer")
  text = plan.plan_text([Model("m", cfg, w, meta={})], default_config("test"), 1e11)
  assert text.startswith("atlas plan: 1 model(s), 6 heads") and "estimated" in text
  assert "no tokenizer" in text and "TFLOP" in text and "no training snapshots" in text
