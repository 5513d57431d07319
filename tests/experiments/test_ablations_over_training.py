"""experiments/ablations_over_training.py: the snapshot subset, the before-and-after vector, one
snapshot's measurements against the definitions with loops, and every verdict on hand-made
numbers, holding and failing."""

import json

import numpy as np
import pytest

from reproduce.core import scores
from reproduce.core.model import token_losses
from reproduce.figure.runner import figure_config, figure_module

from tests.support.helpers import random_model

figure = figure_module("ablations_over_training")


def test_the_snapshot_subset_is_evenly_spaced_with_the_ends_and_the_window():
  assert list(figure.choose_snapshots(6, 0)) == list(range(6))
  assert list(figure.choose_snapshots(6, 10)) == list(range(6))
  picked = list(figure.choose_snapshots(48, 8, keep=(22, 24)))
  assert picked[0] == 0 and picked[-1] == 47 and 22 in picked and 24 in picked
  assert len(picked) == 10 and picked == sorted(set(picked))


def test_the_before_and_after_vector_is_the_unit_loss_change_over_the_window():
  losses = np.zeros((4, 2, 3))
  losses[3] = [[0, 3, 0], [0, 0, 4]]  # end − start = (0, 3, 0, 0, 0, 4) / 5
  u = figure.before_and_after(losses, (1, 3, 0.9))
  np.testing.assert_allclose(u, [0, 0.6, 0, 0, 0, 0.8])
  assert figure.before_and_after(losses, None) is None
  assert figure.before_and_after(losses, (0, 1, 0.5)) is None  # no change: no direction


def test_one_snapshot_against_the_definitions():
  """ΔICL and its paired standard error, and the projection, from losses of the forward with
  overrides (``pattern_preserving_logits``) and of zero W_O, with loops over windows and tokens;
  the ICL windows (6) and the per-token windows (the first 4) as in the figure."""
  cfg, w = random_model(n_layers=2, n_heads=2, n_ctx=12, seed=1, pos="standard", std=0.6)
  rng = np.random.default_rng(2)
  inputs = rng.integers(0, cfg.d_vocab, (6, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (6, cfg.n_ctx))
  losses_of = lambda weights, group: np.asarray(token_losses(
      scores.pattern_preserving_logits(cfg, weights, inputs, group), targets))
  clean = losses_of(w, [])
  u = rng.normal(size=4 * cfg.n_ctx)
  u /= np.linalg.norm(u)
  groups = [[(0, 0)], [(1, 1)], [(0, 1), (1, 0)]]
  got = figure.ablate_snapshot(cfg, w, (inputs, targets), (inputs[:4], targets[:4]), clean[:4],
                               groups, 2, 10, u)
  score = [clean[k, 10] - clean[k, 2] for k in range(6)]
  assert got["icl"] == pytest.approx(sum(score) / 6, abs=1e-4)
  for g, group in enumerate(groups):
    kept, full = losses_of(w, group), losses_of(scores.zero_ablated(w, group), [])
    for key, losses in (("pp", kept), ("full", full)):
      per_window = [(losses[k, 10] - clean[k, 10]) - (losses[k, 2] - clean[k, 2])
                    for k in range(6)]
      mean = sum(per_window) / 6
      error = np.sqrt(sum((d - mean) ** 2 for d in per_window) / 5 / 6)
      assert got[key][g] == pytest.approx(mean, abs=1e-4)
      assert got[f"{key}_error"][g] == pytest.approx(error, abs=1e-4)
    dot = sum((kept[k, t] - clean[k, t]) * u[k * cfg.n_ctx + t]
              for k in range(4) for t in range(cfg.n_ctx))
    assert got["projection"][g] == pytest.approx(dot, abs=1e-4)
  assert abs(got["pp"][0] - got["full"][0]) > 1e-3  # a layer-0 head: the two differ
  assert got["pp"][1] == pytest.approx(got["full"][1], abs=1e-4)  # last layer: the same
  assert np.isnan(figure.ablate_snapshot(cfg, w, (inputs, targets), (inputs[:4], targets[:4]),
                                         clean[:4], groups[:1], 2, 10, None)["projection"]).all()


def test_the_verdicts_hold_and_fail():
  assert figure.share_removed([0.5, 0.4], [-0.5, -0.5]) == pytest.approx(0.9)
  assert np.isnan(figure.share_removed([0.1], [0.2]))  # no ICL to remove
  assert figure.removes_almost_all([0.5, 0.45], [-0.5, -0.5], 0.9)[0]
  assert not figure.removes_almost_all([0.3, 0.3], [-0.5, -0.5], 0.9)[0]  # most, not almost all
  assert figure.far_less_before(0.05, [0.4, 0.5], 0.25)[0]
  assert not figure.far_less_before(0.2, [0.4, 0.5], 0.25)[0]
  assert not figure.far_less_before(0.0, [-0.1, -0.1], 0.25)[0]  # removes nothing after
  assert figure.others_remove_little({"a": -0.05, "b": 0.02, "c": 0.5}, 0.1)[0]
  assert not figure.others_remove_little({"a": 0.3, "b": 0.02, "c": 0.5}, 0.1)[0]
  assert not figure.others_remove_little({}, 0.1)[0]
  assert figure.points_back([0.1, -0.5, -0.2], [False, True, False]) == (True, 1)
  assert not figure.points_back([0.1, -0.5, -0.2], [False, False, True])[0]
  assert not figure.points_back([0.1, 0.5, 0.2], [True, False, False])[0]  # never negative
  assert not figure.points_back([np.nan, np.nan], [True, False])[0]


def _numbers(induction_after=0.95, induction_start=0.05, other=-0.02, projection_induction=-2.0,
             formed=True):
  """``measure_model``'s numbers for a 2L × 2-head model made by hand: L1H0 the induction head,
  4 snapshots with the window from the second to the third; the ICL −1 nats throughout, and the
  share of it each ablation removes: ``induction_after`` after the window (the head alone and
  together), ``induction_start`` at its start, ``other`` for every other head."""
  heads = [(0, 0), (0, 1), (1, 0), (1, 1)]
  S = 4
  share = np.full((S, 5), other)
  share[:, 2] = share[:, 4] = induction_start
  share[2:, 2] = share[2:, 4] = induction_after
  projection = np.full((S, 5), -0.1)
  projection[2:, 2] = projection[2:, 4] = projection_induction
  return {"index": np.array([0, 3, 5, 7]), "tokens": np.array([0.0, 1e3, 2e3, 8e3]),
          "heads": heads, "induction": [(1, 0)], "icl": np.full(S, -1.0), "pp": share,
          "pp_error": np.full((S, 5), 0.01), "full": share, "full_error": np.full((S, 5), 0.01),
          "projection": projection, "gain": (3, 5), "formed": formed, "windows": 64,
          "positions": [2, 29], "same_tokens": True, "axis": "tokens", "layers": 2,
          "no_vector": "", "icl_windows": 512, "icl_standard_error": np.full(S, 0.1)}


def _verdicts(**kw):
  claims = figure.claims_of(figure_config("ablations_over_training", "test"), "m",
                            _numbers(**kw))
  return {c["id"].split(".")[1]: c["holds"] for c in claims}, claims


def test_every_claim_holds_when_the_induction_head_carries_the_in_context_learning():
  verdicts, claims = _verdicts()
  assert verdicts == {"induction_heads": True, "induction_heads_before": True,
                      "other_heads": True, "before_and_after": True}
  assert all(c["kind"] == "paper" and "Argument 3" in c["paper_says"] for c in claims)
  assert '"almost all"' in claims[0]["paper_says"]


def test_each_claim_fails_where_it_looks():
  assert not _verdicts(induction_after=0.7)[0]["induction_heads"]
  assert not _verdicts(induction_start=0.5)[0]["induction_heads_before"]
  assert not _verdicts(other=0.3)[0]["other_heads"]
  assert not _verdicts(projection_induction=0.0)[0]["before_and_after"]  # L0 heads' −0.1 lower


def test_without_a_formation_window_every_claim_fails():
  verdicts, claims = _verdicts(formed=False)
  assert not any(verdicts.values())
  assert all("no formation window" in c["measured"] for c in claims)


def test_the_plot_draws_the_induction_heads_and_the_window(tmp_path):
  """Hand-made numbers with an induction head, its group and a window; one model without a
  before-and-after vector."""
  config = figure_config("ablations_over_training", "test")
  without = dict(_numbers(), projection=np.full((4, 5), np.nan), no_vector="other tokens")
  figure.plot(config, {"two": _numbers(), "other": without}, {"two": (1e3, 2e3), "other": None},
              tmp_path)
  assert (tmp_path / "ablations_over_training.png").stat().st_size > 5000


def test_a_model_without_snapshots_is_skipped_before_any_pass(tmp_path, monkeypatch):
  from reproduce.core.model import ModelConfig
  from reproduce.figure.sources import Model
  formation = figure_module("induction_formation")
  monkeypatch.setattr(formation, "formation", lambda *a: pytest.fail("a pass was made"))
  cfg = ModelConfig(2, 2, 4, 8, 11, 16)
  model = Model("m", cfg, None, {}, tokens=object())
  figure.run(figure_config("ablations_over_training", "test"), {"m": model}, tmp_path)
  got = json.loads((tmp_path / "ablations_over_training.json").read_text())
  assert got == {"m": {"missing": "training snapshots"}, "before_and_after": None}
