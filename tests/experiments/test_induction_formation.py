"""experiments/induction_formation.py: the phase-change claims' criteria on synthetic curves: the
loss-bump test (loss_bump) must not extrapolate and must say when it cannot be tested; the ICL
share is of the fall from initialisation."""

import types

import numpy as np
import pytest

from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import Model


formation = figure_module("induction_formation")


def curve(end, bump=0.0, lo=4e6, hi=8e6, seed=0):
  """(tokens, loss) every 200k tokens up to ``end``: a smooth power law, plus (``bump`` > 0) an
  extra fall of ``bump`` nats spread evenly over [lo, hi], plus small noise."""
  tokens = np.arange(2e5, end + 1, 2e5)
  extra = bump * np.clip(np.log(tokens / lo) / np.log(hi / lo), 0, 1)
  noise = np.random.default_rng(seed).normal(0, 0.005, len(tokens))
  return np.stack([tokens, 2.5 + 8 * (tokens / 1e5) ** -0.5 - extra + noise], 1)


def claim(train_loss, lo=4e6, hi=8e6):
  return formation._loss_bump_claim(figure_config("induction_formation", "test"), "m", lo, hi,
                                    formation.loss_bump(train_loss, lo, hi))


def test_a_window_at_the_end_of_training_cannot_be_tested():
  """With no logged loss after the window the old cubic was extrapolated into it; now the claim
  says it cannot be tested (and does not hold)."""
  c = claim(curve(8e6, bump=0.3))
  assert c["measured"].startswith("cannot be tested: no usable after neighbour")
  assert c["value"]["testable"] is False and c["holds"] is False


def test_a_bump_holds_and_a_smooth_decay_does_not():
  bumped, smooth = claim(curve(16e6, bump=0.3)), claim(curve(16e6))
  assert bumped["value"]["testable"] and bumped["holds"], bumped["measured"]
  assert smooth["value"]["testable"] and not smooth["holds"], smooth["measured"]


def test_slopes_are_least_squares_per_decade():
  tokens = np.array([1e6, 2e6, 4e6, 8e6])
  slope, error, n = formation.interval_slope(tokens, 3 - 0.5 * np.log10(tokens), 1e6, 8e6)
  assert n == 4 and abs(slope + 0.5) < 1e-9 and error < 1e-9


def test_the_icl_share_is_of_the_fall_from_initialisation_not_from_an_early_spike():
  icl = np.array([0.0, 0.3, -0.1, -0.5, -0.9, -1.0])  # a brief rise at the 2nd snapshot
  share, total = formation.icl_share(icl, 2, 4)
  assert np.isclose(total, 1.0) and np.isclose(share, 0.8)


TOKENS = np.array([0, 1e6, 2e6, 3e6, 4e6, 6e6, 8e6, 12e6, 16e6])  # snapshots, step 0 first


def _phase_change(best, icl, loss=None):
  """The 2L claims of ``_phase_change_claims`` on hand-made snapshot curves: the best head's
  prefix matching ``best`` and the ICL score ``icl`` at ``TOKENS``; the training loss a smooth
  curve to 16M tokens (a bump of 0.3 nats over the formation window when ``loss`` is "bump")."""
  config = figure_config("induction_formation", "test")
  best, icl = np.asarray(best, float), np.asarray(icl, float)
  gain = formation.steepest_gain(TOKENS, best, config.window_ratio)
  lo, hi = (TOKENS[gain[0]], TOKENS[gain[1]]) if gain else (4e6, 8e6)
  train_loss = curve(16e6, bump=0.3 if loss == "bump" else 0.0, lo=lo, hi=hi)
  claims = formation._phase_change_claims(config, "m", TOKENS, best, icl,
                                          (train_loss, "training loss"), gain, {}, "tokens")
  return {c["id"].split(".")[1]: c["holds"] for c in claims}


SUDDEN = [0.0, 0.02, 0.03, 0.04, 0.05, 0.55, 0.6, 0.62, 0.65]  # most of the rise from 4M to 6M
GRADUAL = [0.0, 0.08, 0.16, 0.24, 0.32, 0.40, 0.48, 0.56, 0.65]
ICL_IN = [0.0, -0.02, -0.03, -0.04, -0.05, -0.85, -0.88, -0.9, -0.9]  # 0.89 of it from 4M to 6M
ICL_MOST = [0.0, -0.1, -0.15, -0.2, -0.25, -0.85, -0.88, -0.9, -0.9]  # 0.67: most, not > 75%
ICL_SPREAD = [0.0, -0.2, -0.3, -0.4, -0.5, -0.7, -0.8, -0.85, -0.9]  # 0.22 of it from 4M to 6M


def test_the_phase_change_claims_hold_on_a_sudden_formation_with_a_bump():
  assert _phase_change(SUDDEN, ICL_IN, loss="bump") == {
      "abrupt": True, "icl_in_window": True, "loss_bump": True}


def test_each_phase_change_claim_fails_where_it_looks():
  verdicts = _phase_change(GRADUAL, ICL_IN, loss="bump")
  assert not verdicts["abrupt"]  # the best pair ≤ 2× apart holds ≤ 0.25 of the rise
  assert not _phase_change(SUDDEN, ICL_SPREAD, loss="bump")["icl_in_window"]
  assert not _phase_change(SUDDEN, ICL_MOST, loss="bump")["icl_in_window"]  # IH: more than 75%
  assert not _phase_change(SUDDEN, ICL_IN)["loss_bump"]  # a smooth decay: no bump
  assert not _phase_change([0.3] * 9, ICL_IN)["abrupt"]  # never rises: no window at all


def test_the_one_layer_claims_hold_and_fail():
  config = figure_config("induction_formation", "test")
  assert formation._none_in_1l_claim(config, "m", np.array([[0.02, 0.05], [0.03, 0.04]]))["holds"]
  assert not formation._none_in_1l_claim(config, "m", np.array([[0.02, 0.2], [0.03, 0.04]]))["holds"]
  below = formation._icl_2l_below_1l_claim({"attn1l": (1, -0.3), "attn2l": (2, -0.7)})
  above = formation._icl_2l_below_1l_claim({"attn1l": (1, -0.7), "attn2l": (2, -0.3)})
  assert below["holds"] and not above["holds"]
  assert formation._icl_2l_below_1l_claim({"attn2l": (2, -0.7)}) is None  # nothing to compare


def _bump_claim(train_loss, lo, hi, clear):
  config = figure_config("induction_formation", "test")
  bump = formation.loss_bump(train_loss, lo, hi, clear=clear)
  return formation._loss_bump_claim(config, "m", lo, hi, bump)


def test_a_bump_inside_the_constant_learning_rate_phase_counts():
  """Constant learning rate from 1M to 10M tokens (the decay after): a bump from 3M to 6M holds,
  its after-neighbour cut at 10M still reaching half way (8.5M)."""
  c = _bump_claim(curve(16e6, bump=0.3, lo=3e6, hi=6e6), 3e6, 6e6, clear=(1e6, 10e6))
  assert c["value"]["testable"] and c["holds"], c["measured"]
  assert "constant learning rate from 1,000,000 to 10,000,000 tokens" in c["measured"]
  assert "constant-learning-rate phase" in c["criterion"]


def test_a_bump_only_in_the_decay_does_not_count():
  """A faster fall from 10M to 14M tokens, where the learning rate decays: without the schedule
  it reads as a bump; with it the window overlaps a learning-rate change and cannot be tested."""
  decay_fall = curve(20e6, bump=0.3, lo=10e6, hi=14e6)
  assert _bump_claim(decay_fall, 10e6, 14e6, clear=None)["holds"]  # the confound
  c = _bump_claim(decay_fall, 10e6, 14e6, clear=(1e6, 10e6))
  assert not c["holds"] and not c["value"]["testable"]
  assert c["measured"].startswith("cannot be tested: the window overlaps a learning-rate change")
  # a window in the constant phase whose after-neighbour would reach into the decay is cut
  # there; cut short of half way it is not usable
  c = _bump_claim(decay_fall, 6e6, 9e6, clear=(1e6, 10e6))
  assert not c["holds"] and "no usable after neighbour" in c["measured"]


def test_the_constant_phase_comes_from_the_runs_config():
  """The cpu 2L recipe: 4,500 steps × 4,096 tokens, 200 warm-up steps, the cosine from update
  3,426 on; the loss is logged as the mean of 50 steps, so records from step 250 to 3,426."""
  train = {"steps": 4500, "warmup_steps": 200, "decay_fraction": 0.25, "batch_size": 16,
           "log_every": 50}
  model = types.SimpleNamespace(meta={"config": {"train": train}}, workdir=None, snapshots=None,
                                cfg=types.SimpleNamespace(n_ctx=256))
  assert formation.constant_phase(model) == (250 * 4096, 3426 * 4096)
  model.meta = {}
  assert formation.constant_phase(model) is None  # a downloaded folder: schedule unknown
  c = _bump_claim(curve(16e6, bump=0.3, lo=3e6, hi=6e6), 3e6, 6e6, clear=None)
  assert "learning-rate schedule is unknown" in c["criterion"]


def test_a_window_is_shaded_only_where_a_head_forms():
  config = figure_config("induction_formation", "test")
  tokens = np.array([0, 1e6, 2e6, 4e6, 8e6])
  formed = {"gain": (2, 3, 0.8), "best_head": 5, "best": np.array([0.0, 0.02, 0.05, 0.5, 0.6]),
            "tokens": tokens}
  assert formation.formed_window(config, formed) == (2e6, 4e6)
  never = dict(formed, best=np.array([0.0, 0.01, 0.02, 0.05, 0.04]))  # a 1L model's best head
  assert formation.formed_window(config, never) is None
  assert formation.formed_window(config, dict(formed, gain=None)) is None


def test_the_trajectory_is_measured_once_per_model_and_setting():
  calls = []
  model = Model("m", None, None, {})
  original = formation._formation
  try:
    formation._formation = lambda config, m: calls.append(m) or {"n": len(calls)}
    config = figure_config("induction_formation", "test")
    first = formation.formation(config, model)
    assert formation.formation(config, model) is first and len(calls) == 1
    other = config.copy_and_resolve_references()
    other.unlock()
    other.icl_windows = config.icl_windows + 1
    assert formation.formation(other, model) is not first and len(calls) == 2
  finally:
    formation._formation = original


def test_a_pass_without_token_loss_or_previous_token_windows_skips_them(monkeypatch):
  from reproduce.core import scores
  from tests.support.helpers import random_model
  cfg, w = random_model(n_layers=2, n_ctx=40, d_vocab=23)
  tokens = np.random.default_rng(0).integers(2, 23, (6, 41))
  config = figure_config("induction_formation", "test").copy_and_resolve_references()
  model = types.SimpleNamespace(bos_id=1)
  pool = np.arange(2, 23)
  full = formation.measure(config, model, cfg, w, tokens[:, :-1], tokens[:, 1:], pool)
  with config.unlocked():
    config.token_loss_windows = 0
    config.previous_token_windows = 0
  for skipped in ("sequence_losses", "previous_token_on"):
    monkeypatch.setattr(scores, skipped, lambda *a, **k: pytest.fail("computed what is skipped"))
  lean = formation.measure(config, model, cfg, w, tokens[:, :-1], tokens[:, 1:], pool)
  assert lean["token_losses"].shape == (0, 40)
  assert np.isnan(lean["previous_token"]).all() and np.isnan(lean["k_composition_trace"]).all()
  assert full["token_losses"].shape[1] == 40 and np.isfinite(full["previous_token"]).all()
  for same in ("icl", "icl_standard_error", "loss"):
    assert lean[same] == full[same]
  np.testing.assert_array_equal(lean["prefix"], full["prefix"])


def test_a_smeared_key_model_gets_no_k_composition_trace():
  """W_Q, W_K do not give a smeared-key model's keys (``circuits`` refuses them): its pass
  measures everything else and leaves the trace NaN."""
  import dataclasses
  from tests.support.helpers import random_model
  cfg, w = random_model(n_layers=2, n_ctx=40, d_vocab=23)
  cfg, w = dataclasses.replace(cfg, smear_keys=True), w.replace(smear=np.zeros((2, 3), np.float32))
  tokens = np.random.default_rng(0).integers(2, 23, (6, 41))
  config = figure_config("induction_formation", "test")
  got = formation.measure(config, types.SimpleNamespace(bos_id=1), cfg, w, tokens[:, :-1],
                          tokens[:, 1:], np.arange(2, 23))
  assert np.isnan(got["k_composition_trace"]).all()
  assert np.isfinite(got["previous_token"]).all() and np.isfinite(got["icl"])
