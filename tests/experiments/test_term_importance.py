"""experiments/term_importance.py: each claim holds and fails on hand-made losses."""

import numpy as np

from reproduce.figure.runner import figure_config, figure_module


def _verdicts(losses=(5.5, 2.7, 2.6), full=2.6, layer_effect=(0.3, 2.6)):
  """A 2-layer model's L0, L1, L2 (marginals L(k−1) − Lk) and its layers' first-order effects."""
  term = figure_module("term_importance")
  losses = np.asarray(losses)
  claims = term.claims_of(figure_config("term_importance", "test"), "m", losses, full,
                          -np.diff(losses), np.asarray(layer_effect))
  return {c["id"].split(".")[1]: c["holds"] for c in claims}


def test_every_claim_holds_on_a_model_like_fws():
  assert _verdicts() == {"recursion_exact": True, "virtual_heads_small": True,
                         "layer1_matters_most": True}


def test_each_claim_fails_where_it_looks():
  assert not _verdicts(full=2.5)["recursion_exact"]  # L2 ≠ the full loss
  assert not _verdicts(losses=(5.5, 4.0, 2.6), full=2.6)["virtual_heads_small"]  # 2nd ≈ 1st
  assert not _verdicts(losses=(5.5, 5.3, 5.25), full=5.25)["virtual_heads_small"]  # heads idle
  assert not _verdicts(layer_effect=(2.0, 1.0))["layer1_matters_most"]  # layer 0 matters more
  assert _verdicts(layer_effect=(2.0, 2.5))["layer1_matters_most"]  # more: FW gives no ratio
  assert not _verdicts(layer_effect=(0.1, 0.3))["layer1_matters_most"]  # neither matters


def test_a_one_layer_model_gets_the_control_alone():
  term = figure_module("term_importance")
  claims = term.claims_of(figure_config("term_importance", "test"), "m", np.array([5.5, 3.0]),
                          3.0, np.array([2.5]), np.array([2.5]))
  assert [c["id"] for c in claims] == ["term_importance.recursion_exact.m"]
