"""experiments/head_ablations.py: the ablated group is every head passing the induction
criterion; one layer is refused."""

import numpy as np
import pytest

from reproduce.figure.roles import HeadRoles
from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import FigureError, Model

from tests.support.helpers import random_model


def test_group_ablation_takes_every_head_passing_the_induction_criterion():
  ablations = figure_module("head_ablations")
  roles = HeadRoles(previous_token=np.array([[0.2, 0.9, 0.1], [0.0, 0.0, 0.0]]),
                               induction=np.array([[0.9, 0.0, 0.0], [0.45, 0.05, 0.31]]),
                               threshold=0.3)
  heads, prev, fallback = ablations.roles_to_ablate(roles)
  assert heads == [(1, 0), (1, 2)] and prev == (0, 1) and not fallback  # layer 0 never counts
  none = HeadRoles(roles.previous_token, np.array([[0.9, 0, 0], [0.1, 0.2, 0.0]]), 0.3)
  heads, _, fallback = ablations.roles_to_ablate(none)
  assert heads == [(1, 1)] and fallback


def test_head_ablations_needs_two_layers(tmp_path):
  cfg, w = random_model(n_layers=1)
  one_layer = Model("one", cfg, w, meta={})
  with pytest.raises(FigureError, match="at least 2 layer"):
    figure_module("head_ablations").run(figure_config("head_ablations", "test"),
                                        {"one": one_layer}, tmp_path)
