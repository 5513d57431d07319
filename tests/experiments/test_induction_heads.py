"""experiments/induction_heads.py: the averaging profile against a loop, and the averaging-head
claim reading FW's "last several tokens"."""

import numpy as np

from reproduce.figure.runner import figure_config, figure_module


def _profile_loop(offsets, window):
  mass, spread = [], []
  for p in offsets:
    m = sum(p[:window])
    entropy = -sum((q / m) * np.log(q / m) for q in p[:window] if q > 0)
    mass.append(m)
    spread.append(np.exp(entropy))
  return np.array(mass), np.array(spread)


def _averaging_inputs(offsets, k, init_max=0.1, induction=((1, 0),)):
  heads = figure_module("induction_heads")
  window = figure_config("induction_heads", "test").averaging_window
  mass, spread = heads.averaging_profile(np.asarray(offsets), window)
  return {"offsets": np.asarray(offsets), "mass": mass, "spread": spread,
          "k_layer0": np.asarray(k), "init_k_max": init_max, "induction": list(induction)}


def test_averaging_profile_against_a_loop():
  heads = figure_module("induction_heads")
  rng = np.random.default_rng(2)
  offsets = rng.random((3, 8)) / 8
  for window in (4, 8):
    mass, spread = heads.averaging_profile(offsets, window)
    ref_mass, ref_spread = _profile_loop(offsets, window)
    np.testing.assert_allclose(mass, ref_mass, rtol=1e-9)
    np.testing.assert_allclose(spread, ref_spread, rtol=1e-6)


def test_averaging_head_claim_reads_fw_last_several_tokens():
  """FW: a head "which attends to the last several tokens, rather than just the previous
  token", which induction heads rely on.  Within the last 8 tokens, spread over ≥ 3 of them, and
  K-composed into an induction head above random init."""
  heads = figure_module("induction_heads")
  config = figure_config("induction_heads", "test")
  claim = lambda *a, **kw: heads.averaging_head_claim(config, "m", _averaging_inputs(*a, **kw))
  six_back = [0, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 0]  # beyond the old 4-token window
  previous = [0, 1, 0, 0, 0, 0, 0, 0]
  two = [0.5, 0.5, 0, 0, 0, 0, 0, 0]
  assert claim([six_back, previous], [[0.3], [0.5]])["holds"]
  assert not claim([previous, two], [[0.3], [0.5]])["holds"]  # one or two tokens: not several
  assert not claim([six_back, previous], [[0.05], [0.5]])["holds"]  # no induction head uses it
  assert not claim([six_back, previous], [[0.3], [0.5]], induction=())["holds"]


def _heads(copying=0.7, bos_random=0.8, bos_text=0.35, rival_text=0.2, prefix_1l=0.05,
           induction=((1, 0),)):
  """``head_scores``' numbers made by hand for a 2-layer × 2-head model (L1H0 the induction
  head: its copying score, its attention on BOS from first occurrences on random tokens and on
  text, and on text the attention on the one other position that takes most) and for the 1L
  model's largest prefix-matching score ``prefix_1l``."""
  copy = np.array([[0.1, -0.2], [copying, 0.0]])
  return {"induction": list(induction), "copying": copy,
          "init_copying": np.array([[-0.03, 0.01], [np.nan, -0.02]]),
          "bos_probe": np.array([[0.1, 0.2], [bos_random, 0.1]]),
          "bos_text": np.array([[0.1, 0.2], [bos_text, 0.1]]),
          "rival_probe": np.array([[0.5, 0.5], [0.1, 0.5]]),
          "rival_text": np.array([[0.5, 0.5], [rival_text, 0.5]]),
          "baseline": {"probe": 0.11, "text": 0.04},
          "prefix": np.array([[prefix_1l, 0.01]]), "init_prefix": np.array([[0.02, 0.03]])}


def _verdicts(n_layers=2, **kw):
  heads = figure_module("induction_heads")
  m = _heads(**kw)
  config = figure_config("induction_heads", "test")
  claims = (heads.claims_of(config, "m", 1, m) if n_layers == 1
            else heads.induction_claims(config, "m", m))
  return {c["id"].split(".")[1]: c["holds"] for c in claims}


def test_the_induction_head_claims_hold_on_a_copying_head_resting_on_bos():
  """Resting on BOS: BOS takes more of the head's attention than any one other position (0.35
  against 0.2 on text holds: FW gives no number, and the old bar of 0.5 was our own)."""
  assert _verdicts() == {"induction_heads_copy": True, "induction_heads_rest_on_bos_random": True,
                         "induction_heads_rest_on_bos_text": True}


def test_each_induction_head_claim_fails_where_it_looks():
  assert not _verdicts(copying=-0.01)["induction_heads_copy"]  # within the random-init range
  assert not _verdicts(copying=np.nan)["induction_heads_copy"]  # no defined induction head
  assert not _verdicts(bos_random=0.08)["induction_heads_rest_on_bos_random"]  # below 0.1 elsewhere
  assert not _verdicts(bos_text=0.3, rival_text=0.4)["induction_heads_rest_on_bos_text"]
  assert not any(_verdicts(induction=()).values())  # no induction head at all


def test_a_one_layer_model_has_no_prefix_matching_head():
  assert _verdicts(n_layers=1) == {"no_prefix_matching_in_1l": True}
  assert _verdicts(n_layers=1, prefix_1l=0.4) == {"no_prefix_matching_in_1l": False}
