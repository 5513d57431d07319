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
