"""experiments/positional_heads.py: present-or-previous attention against a loop, and the claim
reading FW's "either"."""

import numpy as np
import pytest

from reproduce.core import circuits, scores
from reproduce.figure.runner import figure_config, figure_module

from tests.support.helpers import random_model


def test_present_or_previous_sums_the_two_offsets_against_a_loop():
  positional = figure_module("positional_heads")
  cfg, w = random_model(n_layers=1, n_heads=3, std=0.8, seed=3)
  pattern = np.asarray(circuits.positional_attention(w), np.float64)
  T = pattern.shape[-1]
  got = positional.present_or_previous(scores.positional_offsets(w))
  for h in range(3):
    expect = np.mean([pattern[0, h, i, i] + pattern[0, h, i, i - 1] for i in range(1, T)])
    assert got[0, h] == pytest.approx(expect, rel=1e-5)


def test_positional_claim_counts_present_and_previous_together():
  """FW's head attends to "either" the present or the previous token: 0.3 + 0.3 holds, though
  neither offset alone reaches 0.5; 0.2 + 0.2 does not."""
  positional = figure_module("positional_heads")
  config = figure_config("positional_heads", "test")
  split = {"offset0": np.array([[0.3, 0.1]]), "offset1": np.array([[0.3, 0.1]])}
  assert positional.positional_claim(config, "m", split)["holds"]
  weak = {"offset0": np.array([[0.2, 0.1]]), "offset1": np.array([[0.2, 0.1]])}
  assert not positional.positional_claim(config, "m", weak)["holds"]
