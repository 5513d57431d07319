"""The mechanism figures (ablations, induction heads, skip-trigrams) end to end on the `test`
preset, and their scoring functions against slow NumPy loops."""

import json

import numpy as np
import pytest

from helpers import random_model
from reproduce.core import scores
from reproduce.core.model import forward
from reproduce.figure.plotting import place_labels, pyplot, show_token
from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import FigureError, Model, model_from_run

MECHANISM = ("head_ablations", "induction_heads", "skip_trigrams")


def numpy_logits(cfg, w, tokens, ablated=()):
  """One sequence's logits from explicit loops over layers, heads and positions, float64, with
  the heads in ``ablated`` contributing nothing to the residual stream."""
  g = lambda a: np.asarray(a, np.float64)
  T = len(tokens)
  x, pos = g(w.W_E)[tokens], g(w.W_pos)[:T]
  if cfg.pos == "standard":
    x = x + pos
  for l in range(cfg.n_layers):
    qk_in = x + pos if cfg.pos == "shortformer" else x
    write = np.zeros_like(x)
    for h in range(cfg.n_heads):
      if (l, h) in ablated:
        continue
      Q, K, V, O = g(w.W_Q[l, h]), g(w.W_K[l, h]), g(w.W_V[l, h]), g(w.W_O[l, h])
      for i in range(T):
        s = np.array([(qk_in[i] @ Q) @ (qk_in[j] @ K) for j in range(i + 1)]) / np.sqrt(cfg.d_head)
        a = np.exp(s - s.max())
        a /= a.sum()
        write[i] += sum(a[j] * (x[j] @ V) for j in range(i + 1)) @ O
    x = x + write
  return x @ g(w.W_U)


def test_zero_ablated_removes_the_head_and_later_layers_read_the_ablated_stream():
  cfg, w = random_model()
  tokens = np.array([0, 5, 7, 5, 7, 2, 9, 1])
  for heads in ([(0, 1)], [(1, 2)], [(0, 0), (1, 1)]):
    got = np.asarray(forward(cfg, scores.zero_ablated(w, heads), tokens)[0][0])
    np.testing.assert_allclose(got, numpy_logits(cfg, w, tokens, heads), rtol=1e-4, atol=1e-4)
  assert not np.allclose(numpy_logits(cfg, w, tokens, [(0, 1)]), numpy_logits(cfg, w, tokens))


def test_attention_by_offset_first_occurrences_and_bos_attention_against_loops():
  rng = np.random.default_rng(0)
  L, B, H, T = 2, 3, 2, 7
  patterns = rng.random((L, B, H, T, T))
  tokens = rng.integers(1, 4, (B, T))
  tokens[:, 0] = 0
  by_offset = scores.attention_by_offset(patterns, 3)
  for o in range(3):
    expect = np.mean([[patterns[:, b, :, i, i - o] for i in range(3, T)] for b in range(B)],
                     axis=(0, 1))
    np.testing.assert_allclose(by_offset[..., o], expect)
  first = scores.first_occurrences(tokens)
  for b in range(B):
    for i in range(T):
      assert first[b, i] == (i >= 1 and tokens[b, i] not in tokens[b, 1:i])
  picked = [(b, i) for b in range(B) for i in range(T) if first[b, i]]
  np.testing.assert_allclose(scores.bos_attention(patterns, first),
                             np.mean([patterns[:, b, :, i, 0] for b, i in picked], axis=0))


def dense_circuits(cfg, w, layer, head, tokens):
  """The head's QK (scaled) and OV circuits over ``tokens`` × ``tokens``, dense, float64."""
  E, U = np.asarray(w.W_E, np.float64), np.asarray(w.W_U, np.float64)
  g = lambda a: np.asarray(a[layer, head], np.float64)
  qk = E @ g(w.W_Q) @ g(w.W_K).T @ E.T / np.sqrt(cfg.d_head)
  ov = E @ g(w.W_V) @ g(w.W_O) @ U
  return qk[np.ix_(tokens, tokens)], ov[np.ix_(tokens, tokens)]


def test_ranked_skip_trigrams_against_every_row():
  """Each destination's sources are the top of its own QK row (centred over sources), each
  source's outputs the top of its own OV row; destinations by their row's top gain."""
  cfg, w = random_model(n_layers=2, n_heads=2, d_vocab=15)
  tokens = np.array([1, 2, 4, 5, 7, 8, 9, 11, 13])
  got = scores.ranked_skip_trigrams(w, tokens, n_destinations=4, k=2, chunk=4)
  for l in range(2):
    for h in range(2):
      qk, ov = dense_circuits(cfg, w, l, h, tokens)
      qk = qk - qk.mean(axis=1, keepdims=True)  # per destination, over sources
      ov = ov - ov.mean(axis=1, keepdims=True)  # per source, over outputs
      chosen = sorted(range(len(tokens)), key=lambda d: -qk[d].max())[:4]
      assert list(got["dest"][l, h]) == list(tokens[chosen])
      for r, d in enumerate(chosen):
        np.testing.assert_allclose(got["dest_row"][l, h, r], qk[d], rtol=1e-4, atol=1e-5)
        sources = np.argsort(-qk[d])[:2]
        assert list(got["source"][l, h, r]) == list(tokens[sources])
        np.testing.assert_allclose(got["source_gain"][l, h, r], qk[d, sources], rtol=1e-4)
        for i, s in enumerate(sources):
          outs = np.argsort(-ov[s])[:2]
          assert list(got["out"][l, h, r, i]) == list(tokens[outs])
          np.testing.assert_allclose(got["out_gain"][l, h, r, i], ov[s, outs], rtol=1e-4)


def test_a_destinations_sources_depend_on_its_own_row_only():
  """Sharpening one destination's query (its QK row) must leave every other destination's
  sources as they were: the old ranking compared QK entries across destinations, so one sharp
  row became every source's top destination."""
  cfg, w = random_model(n_layers=1, n_heads=1, d_model=20, d_vocab=20, std=0.5, seed=3)
  w = w.replace(W_E=np.eye(20, dtype=np.float32))  # one-hot: W_Q's row t is token t's query
  tokens = np.arange(1, 20)
  before = scores.ranked_skip_trigrams(w, tokens, n_destinations=19, k=3)
  sharp = np.array(w.W_Q)
  sharp[0, 0, 5] *= 20
  after = scores.ranked_skip_trigrams(w.replace(W_Q=sharp), tokens, n_destinations=19, k=3)
  assert after["dest"][0, 0, 0] == 5  # the sharpened row is now the most selective
  sources = lambda r: {int(d): list(s) for d, s in zip(r["dest"][0, 0], r["source"][0, 0])}
  b, a = sources(before), sources(after)
  assert all(a[d] == b[d] for d in b if d != 5)


def test_own_logit_row_rank_against_loops():
  cfg, w = random_model(n_layers=1, n_heads=2, d_vocab=13)
  tokens = np.array([0, 2, 3, 6, 7, 12])
  got = scores.own_logit_row_rank(w, tokens, chunk=4)
  for h in range(2):
    _, ov = dense_circuits(cfg, w, 0, h, tokens)
    for ti in range(len(tokens)):
      below = sum(ov[ti, o] < ov[ti, ti] for o in range(len(tokens)) if o != ti)
      assert got[0, h, ti] == pytest.approx(below / (len(tokens) - 1))


def test_skip_trigram_counter_against_loops():
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 5, 400)
  counter = scores.SkipTrigramCounter(tokens, window=6)
  before = lambda s, p: s in tokens[max(p - 6, 0):p]
  for s, d, o in [(0, 1, 2), (3, 3, 3), (4, 0, 1), (2, 2, 0)]:
    expect = sum(tokens[p] == d and tokens[p + 1] == o and before(s, p)
                 for p in range(len(tokens) - 1))
    assert counter.count(s, d, o) == expect
  short = np.array([3, 1, 4, 1, 5, 9, 2, 6, 1, 4])
  assert list(scores.SkipTrigramCounter(short, 2).followers(1)) == [4, 5]


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


def test_show_token_keeps_indents_apart():
  """Newline-plus-indent tokens of different depth read differently at every width the figures
  use (they were cut to the same ↵·······… before)."""
  show = show_token
  assert show("\n" + " " * 20) == "↵+20sp" and show(" " * 10) == "10sp"
  assert show(" if") == "·if" and show("\t") == "→" and show("\x01") == "¤"
  for width in (9, 10, 14, 24):
    assert len({show("\n" + " " * n, width) for n in range(4, 40)}) == 36
  assert show("):\n" + " " * 24, 6).endswith("+24sp")


def test_placed_labels_do_not_overlap():
  """Heads that share a point (L1H2 used to hide under L1H0 in ov_qk_scatter) keep every label
  readable: no two labels' boxes overlap, and none leaves the axes."""
  from matplotlib.text import Text
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(4, 4))
  x = np.array([0.5] * 5 + [0.52, 0.48, 0.98, 0.02])
  y = np.array([0.5] * 5 + [0.51, 0.49, 0.98, 0.02])
  ax.scatter(x, y); ax.set_xlim(0, 1); ax.set_ylim(0, 1)
  labels = place_labels(ax, x, y, [f"L1H{i} (0.{i}2)" for i in range(len(x))])
  renderer, boxes = fig.canvas.get_renderer(), []
  for label in labels:  # the text alone, without its leader line
    label.update_positions(renderer)
    boxes.append(Text.get_window_extent(label))
  frame = ax.get_window_extent(renderer)
  plt.close(fig)
  assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i))
  assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)


@pytest.fixture(scope="module")
def mechanism_figures(tmp_path_factory, trained_2l):
  """Each mechanism figure's run() on the session's trained 2L `test` model (no extra training;
  the figures accept any depth: skip_trigrams and induction_heads read every layer)."""
  workdir = tmp_path_factory.mktemp("mechanism")
  model = model_from_run("attn2l", trained_2l.workdir, tokens=trained_2l.tokens)
  claims = {}
  for name in MECHANISM:
    (workdir / name).mkdir()
    claims[name] = figure_module(name).run(figure_config(name, "test"), {"attn2l": model},
                                           workdir / name)
  return workdir, claims, model


@pytest.mark.parametrize("name", MECHANISM)
def test_mechanism_figure_writes_picture_numbers_and_claims(mechanism_figures, name):
  workdir, claims, _ = mechanism_figures
  out = workdir / name
  assert [p for p in out.glob("*.png") if p.stat().st_size > 5000] and list(out.glob("*.svg"))
  assert list(out.glob("*.json"))
  ids = [c["id"] for c in claims[name]]
  assert claims[name] and len(set(ids)) == len(ids)
  # <figure>.<what>.<model label> even for a single model
  assert all(i.startswith(f"{name}.") and i.endswith(".attn2l") and i.count(".") == 2
             for i in ids), ids
  for c in claims[name]:
    assert c["kind"] in ("paper", "control") and c["source"].startswith(("FW", "IH"))
    assert c["criterion"] and isinstance(c["holds"], bool)
    json.dumps(c)  # plain JSON


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


def test_head_ablations_needs_two_layers(tmp_path):
  cfg, w = random_model(n_layers=1)
  one_layer = Model("one", cfg, w, meta={})
  with pytest.raises(FigureError, match="at least 2 layer"):
    figure_module("head_ablations").run(figure_config("head_ablations", "test"),
                                        {"one": one_layer}, tmp_path)


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
