"""experiments/eigen_hist.py: each claim holds and fails on hand-made positivities."""

import numpy as np

from reproduce.figure.runner import figure_config, figure_module


def _verdicts(trained, random):
  eigen_hist = figure_module("eigen_hist")
  config = figure_config("eigen_hist", "test")
  return {c["id"].split(".")[1]: c["holds"] for c in eigen_hist.claims_of(
      config, "m", np.asarray(trained), np.asarray(random), "hand-made")}


def test_copying_majority_needs_more_than_half_above_half_and_above_random_init():
  random = [[-0.1, 0.05, 0.1, -0.2]]  # largest 0.1: the bar is max(0.5, 0.1) = 0.5
  assert _verdicts([[0.9, 0.8, 0.7, -0.3]], random)["copying_majority"]  # 3 of 4
  assert not _verdicts([[0.9, 0.8, 0.3, -0.3]], random)["copying_majority"]  # 2 of 4: not most
  # a random-init head at 0.85 raises the bar above 0.8 and 0.7
  assert not _verdicts([[0.9, 0.8, 0.7, -0.3]], [[0.85, 0.0, 0.0, 0.0]])["copying_majority"]


def test_copying_majority_is_claimed_of_one_layer_models_only():
  trained = [[0.9, 0.8, 0.7, -0.3], [0.9, 0.9, 0.9, 0.9]]
  assert "copying_majority" not in _verdicts(trained, np.zeros((2, 4)))


def test_random_init_control_holds_near_zero_and_fails_on_a_biased_init():
  assert _verdicts([[0.9] * 4], [[-0.1, 0.05, 0.1, -0.2]])["random_init_near_zero"]
  assert not _verdicts([[0.9] * 4], [[0.4, 0.3, 0.5, 0.2]])["random_init_near_zero"]
