"""reproduce.atlas.measure: the QK split and the positional distance against plain loops and
the circuits, the token pairs a head attends to on text, and the ablation pass's plan."""

import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.atlas import default_config, measure
from reproduce.bench.figures import SHAPES
from reproduce.core import circuits
from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import SmearedKeysError
from reproduce.figure.sources import Model

from tests.support.helpers import random_model


def test_qk_split_of_layer_0_is_the_circuits_terms():
  """Layer 0's content, cross and position–position terms, read off the stream, are the full
  QK circuit, ``circuits.token_position_qk`` and ``circuits.positional_qk``: the shares from
  those (computed here with loops) equal ``measure.qk_term_shares``'s."""
  cfg, w = random_model(n_layers=1, n_heads=2, d_head=4, d_model=12, d_vocab=23, n_ctx=10,
                        pos="shortformer", std=0.6)
  model = Model("m", cfg, w, meta={})
  tokens = np.random.default_rng(0).integers(0, 23, (3, 10))
  _, ex = forward(cfg, w, tokens, return_head_outputs=True)
  shares = measure.qk_term_shares(model, jnp.asarray(tokens), ex["head_outputs"])
  qk = circuits.qk_circuit(w)
  token_pos, pos_token = circuits.token_position_qk(w)
  positional = np.asarray(circuits.positional_qk(w), np.float64)
  root = np.sqrt(cfg.d_head)
  for h in range(cfg.n_heads):
    sums = {"content": 0.0, "cross": 0.0, "position": 0.0}
    total_sq = 0.0
    for t in tokens:
      terms = {"content": np.asarray(qk.left[0, h][t] @ qk.right[0, h][:, t]) / root,
               "cross": (np.asarray(token_pos.left[0, h][t] @ token_pos.right[0, h][:, :10])
                         + np.asarray(pos_token.left[0, h][:10] @ pos_token.right[0, h][:, t]))
               / root,
               "position": positional[0, h, :10, :10]}
      for i in range(1, 10):
        row = {k: v[i, : i + 1] - v[i, : i + 1].mean() for k, v in terms.items()}
        total = sum(row.values())
        total_sq += float(total @ total)
        for k in sums:
          sums[k] += float(row[k] @ total)
    for k in sums:
      assert shares[k][0, h] == pytest.approx(sums[k] / total_sq, abs=2e-4), (h, k)
    assert sum(shares[k][0, h] for k in sums) == pytest.approx(1.0, abs=1e-4)



def test_the_qk_split_refuses_a_smeared_key_model():
  """With smeared keys the stream's x W_K is not the key: the split would be wrong; it refuses."""
  cfg, w = random_model(n_layers=1, n_heads=2, d_head=4, d_model=12, d_vocab=23, n_ctx=10)
  w = w.replace(smear=jnp.zeros((1, 2)))
  tokens = jnp.zeros((1, 10), jnp.int32)
  with pytest.raises(SmearedKeysError, match="QK term shares"):
    measure.qk_term_shares(Model("m", cfg, w, meta={}), tokens, None)

def test_positional_distance_is_the_mean_total_variation_from_the_positional_pattern():
  cfg, w = random_model(n_layers=2, n_heads=2, d_head=4, d_model=12, d_vocab=23, n_ctx=10,
                        pos="shortformer", std=0.6)
  model = Model("m", cfg, w, meta={})
  tokens = np.random.default_rng(1).integers(0, 23, (2, 9))
  _, ex = forward(cfg, w, tokens, return_patterns=True)
  tv = measure.positional_distance(model, ex["patterns"])
  A = np.asarray(ex["patterns"], np.float64)
  for l in range(2):
    P = np.asarray(circuits.positional_attention(w, 9), np.float64)[l]
    for h in range(2):
      rows = [0.5 * np.abs(A[l, b, h, i] - P[h, i]).sum() for b in range(2) for i in range(1, 9)]
      assert tv[l, h] == pytest.approx(np.mean(rows), abs=1e-5)
  assert measure.positional_terms(model) is None and measure.separable_qk(model) is None
  standard = Model("s", ModelConfig(**{**cfg.to_dict(), "pos": "standard"}), w, meta={})
  assert "residual stream" in measure.positional_terms(standard)


def test_the_ablation_plan_takes_every_icl_window_of_a_small_model_and_fewer_of_a_large_one():
  config = default_config("cpu")
  small = ModelConfig(n_layers=2, n_heads=4, d_head=32, d_model=128, d_vocab=2048, n_ctx=256)
  plan = measure.ablation_plan(small, config)
  assert plan.windows == plan.icl_windows == 512  # as head_ablations
  assert (plan.early, plan.late) == (24, 249) and len(plan.spread) == 16
  assert plan.positions == tuple(sorted(set(plan.spread) | {24, 249}))
  big = measure.ablation_plan(ModelConfig(**SHAPES["paper"]), config)
  assert config.ablation_min_windows <= big.windows < 512 and "budget" in big.note
