"""experiments/induction_attention.py: value-weighted attention against loops, and the standalone
HTML page."""

import json

import numpy as np
import pytest

from reproduce.core.model import forward
from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import Model

from tests.support.helpers import random_model


def test_value_weighted_attention_keeps_row_magnitudes():
  """A_ij·‖x_j W_V W_O‖ from explicit loops (x_j: the layer's input stream), scaled by one
  number per head and sequence: rows keep their relative magnitudes (per-row scaling made every
  row reach 1, drawing a head that rests on a small-valued BOS as a solid BOS column)."""
  induction_attention = figure_module("induction_attention")
  cfg, w = random_model(n_layers=2, n_heads=3, std=0.5, seed=4)
  model = Model("m", cfg, w, {})
  tokens = np.array([[0, 5, 7, 5, 7, 2, 9, 1], [0, 3, 3, 4, 8, 8, 2, 6]])
  patterns, weighted = induction_attention.value_weighted(model, tokens)
  _, ex = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
  g = lambda a: np.asarray(a, np.float64)
  x = g(w.W_E)[tokens]
  for l in range(cfg.n_layers):
    for b in range(len(tokens)):
      for h in range(cfg.n_heads):
        for j in range(tokens.shape[1]):
          norm = np.linalg.norm(x[b, j] @ g(w.W_V[l, h]) @ g(w.W_O[l, h]))
          np.testing.assert_allclose(weighted[l, b, h, :, j], patterns[l, b, h, :, j] * norm,
                                     rtol=1e-4, atol=1e-6)
    x = x + g(ex["head_outputs"][l]).sum(1)
  scaled, scale = induction_attention.per_head_scale(weighted)
  np.testing.assert_allclose(scale, weighted.max(axis=(-1, -2)), rtol=1e-6)
  np.testing.assert_allclose(scaled * scale[..., None, None], weighted, rtol=1e-5, atol=1e-7)
  row_max = scaled.max(-1)
  assert scaled.max() == pytest.approx(1) and (row_max < 0.9).any()


def test_induction_attention_writes_standalone_html(figures):
  folder = figures[0] / "induction_attention"
  page = (folder / "induction_attention_attn2l.html").read_text()
  assert "<script>" in page and "http" not in page.split("<script>")[1]  # no network needed
  # it opens on the strongest induction head, whose button shows its scores, and names BOS
  numbers = json.loads((folder / "induction_attn2l.json").read_text())
  induction = np.asarray(numbers["prefix_matching_scores"])  # the induction score of every figure
  stripe = np.asarray(numbers["stripe_scores"])
  first = int(page.split("let seq = 0, head = ")[1].split(";")[0])
  assert first == int(np.argmax(induction))
  views = json.loads(page.split("const V = ")[1].split(";\n")[0])
  assert views[0]["tokens"][0] == "BOS" and views[0]["bos"]
  assert f"ind {induction.ravel()[first]:.2f}" in views[0]["heads"][first]
  assert f"stripe {stripe.ravel()[first]:.2f}" in views[0]["heads"][first]


def _repeats(stripe_l1=0.45, later=2.5, first=7.0, n=20):
  """``on_repeats``' numbers made by hand: 2 layers × 2 heads, the best layer-1 stripe score
  ``stripe_l1`` (layer 0 at 0.9: a layer-0 head cannot be an induction head), mean losses on
  the first copy and on the repeats."""
  return {"n": n, "stripe": np.array([[0.9, 0.0], [0.1, stripe_l1]]), "first": first,
          "later": later, "names": {"repeated": f"BOS + {n} random tokens × 3"}}


def _verdicts(m, one_layer):
  induction_attention = figure_module("induction_attention")
  claims = induction_attention.claims_of(figure_config("induction_attention", "test"), "m", m,
                                         one_layer)
  return {c["id"].split(".")[1]: c["holds"] for c in claims}, claims


def test_the_stripe_claim_holds_above_the_threshold_in_a_layer_above_0_only():
  assert _verdicts(_repeats(), [9.0])[0]["stripe"]
  assert not _verdicts(_repeats(stripe_l1=0.2), [9.0])[0]["stripe"]  # layer 0's 0.9 does not count


def test_the_repeat_loss_claim_needs_the_repeats_below_the_one_layer_model():
  assert _verdicts(_repeats(later=2.5), [9.0])[0]["repeat_loss"]
  assert not _verdicts(_repeats(later=2.5), [2.0])[0]["repeat_loss"]  # 1L predicts them better
  assert not _verdicts(_repeats(later=7.5), [9.0])[0]["repeat_loss"]  # above the first copy
  # no number of the papers: log 20 = 3.0 is no longer a bar (the cpu 2L model sits at 5–7)
  assert _verdicts(_repeats(later=5.5), [11.0])[0]["repeat_loss"]


def test_without_a_one_layer_model_the_criterion_says_what_was_compared():
  verdicts, claims = _verdicts(_repeats(later=2.5), [])
  assert "no one-layer model was analysed" in claims[1]["criterion"]
  assert "1L model's loss" not in claims[1]["criterion"]
  assert claims[1]["value"]["one_layer"] is None
