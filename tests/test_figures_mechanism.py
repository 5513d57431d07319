"""The mechanism figures (ablations, induction heads, skip-trigrams) end to end on the `test`
preset, and their scoring functions against slow NumPy loops."""

import json

import numpy as np
import pytest

from helpers import random_model
from reproduce.core import scores
from reproduce import experiment
from reproduce.figure import figure_config, figure_module
from reproduce.core.model import forward

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


def test_block_moments_against_the_dense_block():
  rng = np.random.default_rng(1)
  f = scores.circuits.Factored(rng.normal(size=(2, 3, 9, 4)), rng.normal(size=(2, 3, 4, 11)))
  rows, cols = np.array([0, 3, 4, 8]), np.array([1, 2, 5, 6, 10])
  mean, std = scores.block_moments(f, rows, cols)
  dense = (np.asarray(f.left) @ np.asarray(f.right))[..., rows, :][..., cols]
  np.testing.assert_allclose(mean, dense.mean(axis=(-1, -2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(std, dense.std(axis=(-1, -2)), rtol=1e-4, atol=1e-5)


def test_ranked_skip_trigrams_against_every_triple():
  cfg, w = random_model(n_layers=1, n_heads=2, d_vocab=15)
  tokens = np.array([1, 2, 4, 5, 7, 8, 9, 11, 13])
  got = scores.ranked_skip_trigrams(w, tokens, n_sources=4, k=2, chunk=4)
  E, U = np.asarray(w.W_E, np.float64), np.asarray(w.W_U, np.float64)
  for h in range(2):
    qk = E @ np.asarray(w.W_Q[0, h]) @ np.asarray(w.W_K[0, h]).T @ E.T / np.sqrt(cfg.d_head)
    ov = E @ np.asarray(w.W_V[0, h]) @ np.asarray(w.W_O[0, h]) @ U
    qk, ov = qk[np.ix_(tokens, tokens)], ov[np.ix_(tokens, tokens)]
    qk = qk - qk.mean(axis=1, keepdims=True)  # per destination, over sources
    ov = ov - ov.mean(axis=1, keepdims=True)  # per source, over outputs
    zq, zo = (qk - qk.mean()) / qk.std(), (ov - ov.mean()) / ov.std()
    best = {}  # source → best score over every (dest, out)
    for si, s in enumerate(tokens):
      best[s] = max(zq[di, si] + zo[si, oi] for di in range(len(tokens))
                    for oi in range(len(tokens)))
    ranked = sorted(best, key=lambda s: -best[s])[:4]
    assert list(got["source"][0, h]) == ranked
    np.testing.assert_allclose(got["score"][0, h], [best[s] for s in ranked], rtol=1e-4)
    for r, s in enumerate(ranked):
      si = list(tokens).index(s)
      assert got["dest"][0, h, r, 0] == tokens[np.argmax(zq[:, si])]
      assert got["out"][0, h, r, 0] == tokens[np.argmax(zo[si])]


def test_own_logit_column_rank_against_loops():
  _, w = random_model(n_layers=1, n_heads=2, d_vocab=13)
  tokens = np.array([0, 2, 3, 6, 7, 12])
  got = scores.own_logit_column_rank(w, tokens, chunk=4)
  E, U = np.asarray(w.W_E, np.float64), np.asarray(w.W_U, np.float64)
  for h in range(2):
    ov = E @ np.asarray(w.W_V[0, h]) @ np.asarray(w.W_O[0, h]) @ U
    ov = ov - ov[:, tokens].mean(axis=1, keepdims=True)  # each source's row over the tokens
    for ti, t in enumerate(tokens):
      below = sum(ov[s, t] < ov[t, t] for s in tokens if s != t)
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
    at_d = [before(s, p) for p in range(len(tokens)) if tokens[p] == d]
    anywhere = [before(s, p) for p in range(len(tokens))]
    assert counter.lift(s, d) == pytest.approx(np.mean(at_d) / np.mean(anywhere))


@pytest.fixture(scope="module")
def mechanism_figures(tmp_path_factory, trained_2l):
  """Each mechanism figure's run() on the session's trained 2L `test` model (no extra training;
  the figures accept any depth: skip_trigrams and induction_heads read every layer)."""
  workdir = tmp_path_factory.mktemp("mechanism")
  model = experiment.model_from_run("attn2l", trained_2l.workdir, tokens=trained_2l.tokens)
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
  assert markdown.count("\n## L") == L * H and "| source |" in markdown
  page = (out / "skip_trigrams_attn2l.html").read_text()
  assert page.count("<table>") == L * H and "<script" not in page
  numbers = json.loads((out / "skip_trigrams_attn2l.json").read_text())
  assert len(numbers["heads"]["L0H0"]) == figure_config("skip_trigrams", "test").sources_per_head


def test_head_ablations_needs_two_layers(tmp_path):
  cfg, w = random_model(n_layers=1)
  one_layer = experiment.Model("one", cfg, w, meta={})
  with pytest.raises(experiment.FigureError, match="at least 2 layer"):
    figure_module("head_ablations").run(figure_config("head_ablations", "test"),
                                        {"one": one_layer}, tmp_path)
