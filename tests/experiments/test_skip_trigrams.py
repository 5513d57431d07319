"""experiments/skip_trigrams.py: each unseen trigram is one bug; the tables are readable."""

import json

import numpy as np

from reproduce.core import scores
from reproduce.figure.runner import figure_config, figure_module


def test_find_bugs_counts_each_unseen_trigram_once():
  """Two witnesses of one unseen "s … d1 → o2" make one bug, not two."""
  skip_trigrams = figure_module("skip_trigrams")
  s, d1, d2, d3, o1, o2, x = 1, 2, 3, 4, 5, 6, 7
  text = []
  for _ in range(6):  # every pair seen but s … d1 → o2, which d2 and d3 both witness
    text += [s, d1, o1, x, s, d2, o2, x, s, d3, o2, x, s, d2, o1, x, s, d3, o1, x]
  counter = scores.SkipTrigramCounter(np.array(text), window=3)
  ranked = {"dest": np.array([[[d1, d2, d3]]]),
            "source": np.array([[[[s], [s], [s]]]]),
            "out": np.array([[[[[o1, o2]], [[o1, o2]], [[o1, o2]]]]])}
  bugs = skip_trigrams.find_bugs(ranked, counter, min_seen=5)
  assert [(b["source"], b["d1"], b["o2"]) for b in bugs] == [(s, d1, o2)]


def test_skip_trigram_tables_are_readable(mechanism_figures):
  out = mechanism_figures[0] / "skip_trigrams"
  L, H = mechanism_figures[2].cfg.n_layers, mechanism_figures[2].cfg.n_heads
  markdown = (out / "skip_trigrams_attn2l.md").read_text()
  assert markdown.count("\n## L") == L * H and "| destination |" in markdown
  page = (out / "skip_trigrams_attn2l.html").read_text()
  assert page.count("<table>") == L * H and "<script" not in page
  numbers = json.loads((out / "skip_trigrams_attn2l.json").read_text())
  config = figure_config("skip_trigrams", "test")
  assert len(numbers["heads"]["L0H0"]) == config.destinations_per_head
  assert len(numbers["heads"]["L0H0"][0]["sources"]) == config.top_k


def _tables(rank, auc, bugs=1, init_bugs=0):
  """``skip_trigrams``'s numbers for a 1-layer model of 4 heads, made by hand: median own-logit
  ranks and median follower AUCs per head (random init: ranks 0.47 … 0.53, AUCs 0.45 … 0.55),
  and ``bugs`` (``init_bugs``) factored-form bugs found in the trained (random-init) tables."""
  bug = {"head": "L0H1", "source": 1, "d1": 2, "o1": 3, "d2": 4, "o2": 5, "seen_d1_o1": 9,
         "seen_d2_o2": 7}
  return {"rank": np.array([rank]), "init_rank": np.array([[0.47, 0.5, 0.53, 0.49]]),
          "head_auc": np.array([auc]), "init_head_auc": np.array([[0.45, 0.5, 0.55, 0.52]]),
          "bugs": [bug] * bugs, "init_bugs": [bug] * init_bugs,
          "names": {i: f"t{i}" for i in range(6)}, "allowed": np.arange(100),
          "searched_tokens": 100_000, "init_source": "hand-made"}


def test_each_skip_trigram_claim_holds_and_fails_on_hand_made_numbers():
  """Copying: a majority of heads rank their own token high in its OV row; plausible next
  tokens: a majority of heads' median AUC above every random-init head's; bugs: more than the
  random-init tables have."""
  skip_trigrams = figure_module("skip_trigrams")
  config = figure_config("skip_trigrams", "test")
  verdicts = lambda t: {c["id"].split(".")[1]: c["holds"]
                        for c in skip_trigrams.claims_of(config, "attn1l", t)}
  assert verdicts(_tables([0.95, 0.97, 0.93, 0.3], [0.8, 0.7, 0.9, 0.4])) == {
      "most_heads_copy": True, "attends_to_plausible_next_tokens": True,
      "factored_form_bug": True}
  assert verdicts(_tables([0.95, 0.3, 0.2, 0.4], [0.8, 0.5, np.nan, 0.4], bugs=1,
                          init_bugs=1)) == {
      "most_heads_copy": False, "attends_to_plausible_next_tokens": False,
      "factored_form_bug": False}
  assert not verdicts(_tables([0.95] * 4, [0.8] * 4, bugs=0))["factored_form_bug"]


def test_copying_is_judged_against_the_row_median_and_the_random_init_heads():
  """FW gives no number: a head copies when the token's own logit sits above the row's median
  output and above every random-init head's median rank (0.53 here)."""
  skip_trigrams = figure_module("skip_trigrams")
  config = figure_config("skip_trigrams", "test")
  copies = lambda t: skip_trigrams.claims_of(config, "attn1l", t)[0]
  modest = _tables([0.6, 0.6, 0.6, 0.3], [0.8] * 4)
  assert copies(modest)["holds"] and copies(modest)["value"]["bar"] == 0.53
  modest["init_rank"] = np.array([[0.47, 0.5, 0.65, 0.49]])  # a random-init head at 0.65
  assert not copies(modest)["holds"]
