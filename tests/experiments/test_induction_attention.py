"""experiments/induction_attention.py: value-weighted attention against loops, and the standalone
HTML page."""

import json

import numpy as np
import pytest

from reproduce.core.model import forward
from reproduce.figure.runner import figure_module
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
