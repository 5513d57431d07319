"""reproduce.core.circuits: circuit maths against the dense maths, on small sizes."""

import jax
import numpy as np
import pytest

from reproduce.core import circuits
from reproduce.core.weights import SmearedKeysError

from tests.support.helpers import (dense_head_circuits as _dense, nonzero_eigs as _nonzero_eigs,
                                   random_model, same_multiset as _same_multiset)


@pytest.fixture
def model():
  return random_model(n_layers=2, n_heads=3, d_head=4, d_model=12, d_vocab=23, std=0.5)


def test_low_rank_eigenvalues_equal_the_dense_full_eig(model):
  _, w = model
  ov_full, ov = circuits.ov_eigenvalues(w, full=True), circuits.ov_eigenvalues(w, full=False)
  qk_full, qk = circuits.qk_eigenvalues(w, full=True), circuits.qk_eigenvalues(w, full=False)
  for l in range(2):
    for h in range(3):
      d = _dense(w, l, h)  # vocab × vocab (23 × 23) and d_model × d_model (12 × 12)
      _same_multiset(ov_full[l, h], _nonzero_eigs(d["ov_full"], 4), tol=1e-5)
      _same_multiset(ov[l, h], _nonzero_eigs(d["ov"], 4), tol=1e-5)
      _same_multiset(qk_full[l, h], _nonzero_eigs(d["qk_full"], 4), tol=1e-5)
      _same_multiset(qk[l, h], _nonzero_eigs(d["qk"], 4), tol=1e-5)


def test_positivity_of_known_spectra():
  assert circuits.positivity(np.array([1.0, 2.0, 0.5])) == pytest.approx(1.0)
  assert circuits.positivity(np.array([-1.0, -3.0])) == pytest.approx(-1.0)
  assert circuits.positivity(np.array([1 + 1j, 1 - 1j])) == pytest.approx(2 / (2 * np.sqrt(2)))
  assert np.isnan(circuits.positivity(np.array([np.nan, 1.0])))  # NaN stays NaN, never 0
  assert circuits.positivity(np.zeros(3)) == 0  # no nonzero eigenvalue: 0 by convention
  np.testing.assert_array_equal(np.isnan(circuits.positivity(np.full((2, 3), np.nan))), True)
  _, w = random_model(n_layers=1, n_heads=2, d_model=12, d_head=4, d_vocab=23)
  copying = w.replace(W_O=np.swapaxes(np.asarray(w.W_V), -1, -2),
                      W_U=np.asarray(w.W_E).T)  # W_E W_V W_Vᵀ W_Eᵀ is positive semi-definite
  assert np.all(circuits.positivity(circuits.ov_eigenvalues(copying)) > 0.999)


def test_factored_rows_columns_norms_match_dense(model):
  _, w = model
  ov = circuits.ov_circuit(w, full=True)
  qk = circuits.qk_circuit(w, full=True)
  assert ov.shape == (2, 3, 23, 23)
  for l in range(2):
    for h in range(3):
      d = _dense(w, l, h)
      np.testing.assert_allclose(ov.rows([3, 7])[l, h], d["ov_full"][[3, 7]], rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(qk.columns([0, 5])[l, h], d["qk_full"][:, [0, 5]], rtol=1e-4,
                                 atol=1e-6)
      np.testing.assert_allclose(ov.frobenius_norm()[l, h], np.linalg.norm(d["ov_full"]),
                                 rtol=1e-4)
      values, cols = ov.top_k_in_rows([5], 3)
      np.testing.assert_array_equal(cols[l, h, 0], np.argsort(-d["ov_full"][5])[:3])
      np.testing.assert_allclose(values[l, h, 0], np.sort(d["ov_full"][5])[::-1][:3], rtol=1e-4)


def test_positional_terms_match_dense(model):
  _, w = model
  P, E = np.asarray(w.W_pos, np.float64), np.asarray(w.W_E, np.float64)
  pos = np.asarray(circuits.positional_qk(w))
  tok_pos, pos_tok = circuits.token_position_qk(w)
  for l, h in ((0, 0), (1, 2)):
    Q, K = np.asarray(w.W_Q[l, h], np.float64), np.asarray(w.W_K[l, h], np.float64)
    np.testing.assert_allclose(pos[l, h], P @ Q @ K.T @ P.T / 2.0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tok_pos.columns([1])[l, h], (E @ Q @ K.T @ P.T)[:, [1]], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(pos_tok.rows([2])[l, h], (P @ Q @ K.T @ E.T)[[2]], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("permuted", [False, True])
def test_composition_scores_equal_the_explicit_frobenius_ratio(kind, permuted):
  _, w = random_model(n_layers=3, n_heads=2, d_head=4, d_model=12, std=0.5, seed=3)
  scores = np.asarray(circuits.composition_scores(w, kind, permuted=permuted))
  f = lambda n, l, h: np.asarray(getattr(w, n)[l, h], np.float64)
  for l1 in range(3):
    for h1 in range(2):
      for l2 in range(3):
        for h2 in range(2):
          if l1 >= l2:
            assert scores[l1, h1, l2, h2] == 0
            continue
          if not permuted:  # the paper's column-vector form: W_OV = W_Oᵀ W_Vᵀ (ours
            # transposed), W_QK = W_Qᵀ W_K with its W_Q, W_K our W_Qᵀ, W_Kᵀ; h1 writes, h2 reads
            ov1 = f("W_O", l1, h1).T @ f("W_V", l1, h1).T
            qk2 = f("W_Q", l2, h2) @ f("W_K", l2, h2).T
            ov2 = f("W_O", l2, h2).T @ f("W_V", l2, h2).T
            reader = {"q": qk2.T, "k": qk2, "v": ov2}[kind]
            expected = np.linalg.norm(reader @ ov1) / (np.linalg.norm(reader) *
                                                      np.linalg.norm(ov1))
          else:  # the erratum's cyclic permutation of the row-vector factors
            Ax, Bx = f("W_V", l1, h1), f("W_O", l1, h1)
            Ay, By = {"q": (f("W_Q", l2, h2), f("W_K", l2, h2).T),
                      "k": (f("W_K", l2, h2), f("W_Q", l2, h2).T),
                      "v": (f("W_V", l2, h2), f("W_O", l2, h2))}[kind]
            expected = np.linalg.norm(By @ Ax @ Bx @ Ay) / (np.linalg.norm(Ax @ Bx) *
                                                            np.linalg.norm(Ay @ By))
          assert scores[l1, h1, l2, h2] == pytest.approx(expected, rel=1e-4)


def test_composition_baseline_matches_a_dense_monte_carlo():
  _, w = random_model(n_layers=2, d_model=64, d_head=8)
  ours = circuits.composition_baseline(w, jax.random.key(0), n_samples=400)
  rng = np.random.default_rng(1)
  dense = []
  for _ in range(400):
    X = rng.normal(size=(64, 8)) @ rng.normal(size=(8, 64))
    Y = rng.normal(size=(64, 8)) @ rng.normal(size=(8, 64))
    dense.append(np.linalg.norm(X @ Y) / (np.linalg.norm(X) * np.linalg.norm(Y)))
  assert ours == pytest.approx(np.mean(dense), rel=0.05)
  assert ours == pytest.approx(1 / np.sqrt(64), rel=0.35)  # the paper's rule of thumb


def test_k_composition_term_eigenvalues_equal_the_dense_term(model):
  _, w = model
  lam = circuits.k_composition_qk_eigenvalues(w, prev_layer=0, prev_head=1)
  assert np.all(np.isnan(lam[0]))  # layer 0 cannot read layer 0
  E = np.asarray(w.W_E, np.float64)
  ov_p = _dense(w, 0, 1)["ov"]
  for h in range(3):
    Q, K = np.asarray(w.W_Q[1, h], np.float64), np.asarray(w.W_K[1, h], np.float64)
    term = E @ Q @ K.T @ (E @ ov_p).T  # [dest token, src' token], vocab × vocab
    _same_multiset(lam[1, h], _nonzero_eigs(term, 4), tol=1e-5)


def test_skip_trigrams_match_dense_rankings_and_values(model):
  _, w = model
  got = circuits.skip_trigrams(w, [4, 9], k=3)
  for l, h in ((0, 0), (1, 1)):
    d = _dense(w, l, h)
    for i, src in enumerate((4, 9)):
      np.testing.assert_array_equal(got["out_tokens"][l, h, i], np.argsort(-d["ov_full"][src])[:3])
      np.testing.assert_array_equal(got["dest_tokens"][l, h, i],
                                    np.argsort(-d["qk_full"][:, src])[:3])
      # the values too: QK scores divided by sqrt(d_head) = 2, OV logits as they are
      np.testing.assert_allclose(got["dest_scores"][l, h, i],
                                 np.sort(d["qk_full"][:, src])[::-1][:3] / np.sqrt(4),
                                 rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(got["out_logits"][l, h, i],
                                 np.sort(d["ov_full"][src])[::-1][:3], rtol=1e-4, atol=1e-5)


def test_batched_eigenvalues_equal_a_per_head_loop(model):
  _, w = model
  batched = circuits.ov_eigenvalues(w)
  for l in range(2):
    for h in range(3):
      single = w.replace(W_Q=w.W_Q[l:l + 1, h:h + 1], W_K=w.W_K[l:l + 1, h:h + 1],
                         W_V=w.W_V[l:l + 1, h:h + 1], W_O=w.W_O[l:l + 1, h:h + 1])
      scale = np.abs(batched[l, h]).max()  # float32 products: agree to ~1e-6 of the spectrum
      np.testing.assert_allclose(np.sort_complex(circuits.ov_eigenvalues(single)[0, 0]),
                                 np.sort_complex(batched[l, h]), rtol=0, atol=1e-5 * scale)


def test_lifted_functions_equal_the_per_head_function_called_per_head(model):
  """over_heads / the composition lift give, head by head, what the one-head function gives."""
  _, w = model
  ov, qk = circuits.ov_eigen_matrices(w), circuits.qk_eigen_matrices(w)
  comp = np.asarray(circuits.composition_scores(w, "k"))
  for l in range(2):
    for h in range(3):
      np.testing.assert_allclose(ov[l, h], circuits.head_ov_eigen_matrix(
          w.W_V[l, h], w.W_O[l, h], w.W_U @ w.W_E), rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(qk[l, h], circuits.head_qk_eigen_matrix(
          w.W_Q[l, h], w.W_K[l, h], w.W_E.T @ w.W_E), rtol=1e-5, atol=1e-5)
  for h1 in range(3):  # writer (0, h1), reader (1, h2)
    for h2 in range(3):
      reader = w.W_Q[1, h2], w.W_K[1, h2], w.W_V[1, h2], w.W_O[1, h2]
      one = circuits.head_composition_score(w.W_V[0, h1], w.W_O[0, h1], *reader, "k")
      assert comp[0, h1, 1, h2] == pytest.approx(float(one), rel=1e-5)


def test_circuits_refuse_weights_with_layer_norm_gains():
  from reproduce.core.weights import (  # pylint: disable=import-outside-toplevel
      UnfoldedLayerNormError, fold_for_analysis)
  cfg, w = random_model(n_layers=2, norm="ln")
  for f in (circuits.ov_eigenvalues, circuits.qk_eigenvalues, circuits.positional_qk,
            lambda x: circuits.composition_scores(x, "k"), lambda x: circuits.skip_trigrams(x, [1]),
            lambda x: circuits.k_composition_qk_eigenvalues(x, 0, 0)):
    with pytest.raises(UnfoldedLayerNormError, match="layer norm folded"):
      f(w)
  _, folded = fold_for_analysis(cfg, w)
  circuits.ov_eigenvalues(folded)


def test_positional_attention_one_layer_at_a_time_and_only_the_first_positions():
  cfg, w = random_model(n_layers=3, n_heads=2, n_ctx=16, seed=6)
  every = np.asarray(circuits.positional_attention(w))
  for layer in range(3):
    np.testing.assert_allclose(circuits.positional_attention(w, layer=layer), every[layer],
                               rtol=1e-6)
  # The first T positions alone: causal, so the same as the full pattern's leading block.
  np.testing.assert_allclose(circuits.positional_attention(w, 5), every[..., :5, :5], rtol=1e-5,
                             atol=1e-7)


def _dense_positional_attention(W_pos, W_Q, W_K, T):
  """Causal softmax of W_pos W_Q (W_pos W_K)ᵀ / sqrt(d_head) over the first T positions, one row
  at a time in float64 NumPy (sources 0 … i of destination i)."""
  P = np.asarray(W_pos, np.float64)[:T]
  scores = (P @ np.asarray(W_Q, np.float64)) @ (P @ np.asarray(W_K, np.float64)).T
  scores /= np.sqrt(np.asarray(W_Q).shape[-1])
  out = np.zeros((T, T))
  for i in range(T):
    row = np.exp(scores[i, :i + 1] - scores[i, :i + 1].max())
    out[i, :i + 1] = row / row.sum()
  return out


@pytest.mark.parametrize("folded_after_norm", [False, True])
def test_positional_attention_against_a_dense_softmax(folded_after_norm):
  """Against the softmax written out, head by head.  A folded LN(x) + W_pos model's positions
  are read by its own W_Q_pos, W_K_pos (raw, unscaled by the gain), not by the folded W_Q, W_K:
  the pattern must use them, as ``positional_qk`` does."""
  from reproduce.core.weights import fold_for_analysis  # pylint: disable=import-outside-toplevel
  if folded_after_norm:
    cfg, w = random_model(n_layers=2, n_heads=2, n_ctx=9, norm="ln", pos="shortformer",
                          pos_after_norm=True, std=0.6, seed=8)
    rng = np.random.default_rng(8)
    w = w.replace(ln_gain=np.asarray(1 + 0.5 * rng.normal(size=(2, 12)), np.float32))
    _, w = fold_for_analysis(cfg, w)
    assert w.W_Q_pos is not None
  else:
    _, w = random_model(n_layers=2, n_heads=2, n_ctx=9, std=0.6, seed=8)
  readers = w.positional_readers
  got = np.asarray(circuits.positional_attention(w))
  for l in range(2):
    for h in range(2):
      expect = _dense_positional_attention(w.W_pos, readers[0][l, h], readers[1][l, h], 9)
      np.testing.assert_allclose(got[l, h], expect, rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(circuits.positional_attention(w, 4, layer=l)[h], expect[:4, :4],
                                 rtol=1e-4, atol=1e-6)  # causal: the first rows alone


def test_previous_token_k_composition_trace_is_the_trace_of_the_dense_vocab_matrix():
  """IH's trace: for each later head h, Σ_p prev[p] · tr over the vocabulary of h's K-composition
  term with p, W_E W_Q^h W_K^hᵀ (W_E W_V^p W_O^p)ᵀ, built dense here (23 × 23, explicit loops);
  NaN in layer 0."""
  _, w = random_model(n_layers=3, n_heads=2, d_head=4, d_model=12, d_vocab=23, std=0.5)
  prev = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.2]])
  got = circuits.previous_token_k_composition_trace(w, prev)
  W = {k: np.asarray(getattr(w, k), np.float64) for k in ("W_E", "W_Q", "W_K", "W_V", "W_O")}
  assert got.shape == (3, 2) and np.isnan(got[0]).all()
  for l in range(1, 3):
    for h in range(2):
      want = 0.0
      for lp in range(l):
        for p in range(2):
          dense = (W["W_E"] @ W["W_Q"][l, h] @ W["W_K"][l, h].T
                   @ (W["W_E"] @ W["W_V"][lp, p] @ W["W_O"][lp, p]).T)  # [vocab, vocab]
          want += prev[lp, p] * sum(dense[t, t] for t in range(dense.shape[0]))
      np.testing.assert_allclose(got[l, h], want, rtol=1e-4, atol=1e-5)
  traces = np.asarray(circuits.k_composition_traces(w))
  assert np.isnan(traces[2, :, 1]).all() and np.isnan(traces[1, :, 1]).all()  # no later writer


def test_circuits_that_read_the_keys_refuse_a_smeared_key_model_in_one_line(model):
  """W_Q W_Kᵀ is not a smeared-key model's QK circuit: every function reading W_Q, W_K refuses;
  those reading W_V, W_O only (OV circuits, V-composition) still run."""
  cfg, w = model
  w = w.replace(smear=np.zeros((cfg.n_layers, cfg.n_heads), np.float32))
  refused = [lambda: circuits.qk_circuit(w), lambda: circuits.positional_qk(w),
             lambda: circuits.token_position_qk(w), lambda: circuits.positional_attention(w),
             lambda: circuits.qk_eigenvalues(w), lambda: circuits.composition_scores(w, "k"),
             lambda: circuits.composition_scores(w, "q"),
             lambda: circuits.k_composition_qk_matrices(w, 0, 1),
             lambda: circuits.k_composition_traces(w),
             lambda: circuits.previous_token_k_composition_trace(
                 w, np.ones((cfg.n_layers, cfg.n_heads))),
             lambda: circuits.skip_trigrams(w, [1, 2])]
  for call in refused:
    with pytest.raises(SmearedKeysError) as e:
      call()
    assert "\n" not in str(e.value) and "smeared-key model" in str(e.value)
  circuits.ov_eigenvalues(w)
  circuits.composition_scores(w, "v")
