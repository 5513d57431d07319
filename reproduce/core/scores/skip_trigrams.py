"""Skip-trigrams "src … dest → out": the full QK and OV circuits restricted to a token set, each
compared only along the axis its softmax normalises (ranked skip-trigrams: a destination's
sources, then those sources' outputs; each token's own-logit rank in its OV row), and
skip-trigram counts in a token array.  FW's tables fix a source and list the destinations and
outputs of its largest entries; ours fix a destination and rank sources within its QK row, the
only comparison the attention softmax makes (``ranked_skip_trigrams``).

Circuit rows go in chunks (default: 2²⁴ entries for all heads together).
"""

from __future__ import annotations

import functools
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core import circuits
from reproduce.core.weights import Weights


def _row_chunk(w: Weights, n_tokens: int, max_elements: int = 1 << 24) -> int:
  """Rows per block so that an [L, H, chunk, n_tokens] circuit block stays ≤ max_elements."""
  return max(1, max_elements // (w.n_layers * w.n_heads * max(n_tokens, 1)))


def restricted(w: Weights, tokens: np.ndarray, centre: bool = True):
  """(QK, OV): the full circuits' blocks [tokens, tokens], factored (rows and columns then index
  ``tokens``), built from W_E[tokens] and W_U[:, tokens] alone (the vocabulary-wide factors cost
  most of the time at a large vocabulary); each row centred over those columns when ``centre``
  (a term that depends on the row alone cancels in the row's softmax)."""
  index = jnp.asarray(tokens)
  small = w.replace(W_E=jnp.asarray(w.W_E)[index], W_U=jnp.asarray(w.W_U)[:, index])
  out = []
  for f in (circuits.qk_circuit(small, full=True), circuits.ov_circuit(small, full=True)):
    right = f.right - f.right.mean(-1, keepdims=True) if centre else f.right
    out.append(circuits.Factored(f.left, right))
  return tuple(out)


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_of_rows(left, right, k: int):
  return jax.lax.top_k(left @ right, k)


def top_k_in_rows(f: circuits.Factored, k: int, chunk: int):
  """(values, column indices) [..., m, k] of every row's k largest entries, ``chunk`` rows at a
  time (at most [..., chunk, n] entries exist at once)."""
  m = f.left.shape[-2]
  values, index = [], []
  for start in range(0, m, chunk):
    v, i = _top_k_of_rows(f.left[..., start:start + chunk, :], f.right, k)
    values.append(np.asarray(v)); index.append(np.asarray(i))
  return np.concatenate(values, -2), np.concatenate(index, -2)


def ranked_skip_trigrams(w: Weights, tokens: np.ndarray, n_destinations: int = 8, k: int = 3,
                         chunk: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Every head's skip-trigrams "src … dest → out" among ``tokens``, each circuit compared
  only along the axis its softmax normalises.  FW's tables fix a source and list the
  destinations whose QK entries with it are largest, comparing entries of different
  destinations' rows, which the softmax never compares (it normalises over sources, one
  destination at a time); these tables fix a destination instead and rank its sources, then
  rank each source's outputs as FW does.

  QK[dest, src] = W_E W_QK W_Eᵀ / sqrt(d_head) is compared only within a destination's row (the
  softmax over sources); OV[src, out] = W_E W_OV W_U only within a source's row (the softmax over
  outputs).  Each row is centred over ``tokens``, so an entry is a gain in nats: e^gain is the
  attention on src relative to the row's average source, or the odds of out relative to the
  average output.  Per head: the ``n_destinations`` destinations whose row's top gain is largest
  (the most selective: a log ratio means the same in every row); for each, its ``k`` top
  sources; for each source, its ``k`` top outputs.  No entry is ever ranked against an entry of
  another row.  Rows go ``chunk`` at a time (default: 2²⁴ entries for all heads together).

  Returns [L, H, n_destinations] ``dest``; [L, H, n_destinations, k] ``source``,
  ``source_gain``; [L, H, n_destinations, k, k] ``out``, ``out_gain`` (token ids and nats);
  [L, H, n_destinations, len(tokens)] ``dest_row``: each chosen destination's whole centred QK
  row over ``tokens``.
  """
  tokens = np.asarray(tokens)
  chunk = chunk or _row_chunk(w, len(tokens))
  L, H = w.n_layers, w.n_heads
  qk, ov = restricted(w, tokens)
  qk = circuits.Factored(qk.left / np.sqrt(w.d_head), qk.right)
  source_gain, source_at = top_k_in_rows(qk, k, chunk)  # [L, H, n, k] for every destination
  pick = np.argsort(-source_gain[..., 0], axis=-1, kind="stable")[..., :n_destinations]
  source_gain = np.take_along_axis(source_gain, pick[..., None], axis=-2)  # [L, H, n_dest, k]
  source_at = np.take_along_axis(source_at, pick[..., None], axis=-2)
  dest_row = np.asarray(jnp.take_along_axis(qk.left, jnp.asarray(pick)[..., None], axis=-2)
                        @ qk.right)
  del qk
  flat = jnp.asarray(source_at.reshape(L, H, -1))
  left = jnp.take_along_axis(ov.left, flat[..., None], axis=-2)  # chosen sources' OV rows
  out_gain, out_at = top_k_in_rows(circuits.Factored(left, ov.right), k, chunk)
  shape = source_at.shape + (k,)
  return {"dest": tokens[pick], "source": tokens[source_at], "source_gain": source_gain,
          "out": tokens[out_at].reshape(shape), "out_gain": out_gain.reshape(shape),
          "dest_row": dest_row}


def own_logit_row_rank(w: Weights, tokens: np.ndarray, chunk: Optional[int] = None) -> np.ndarray:
  """Per head and token t in ``tokens``: the fraction of the other tokens o whose OV entry
  W_E W_OV W_U[t, o] is below the token's own [t, t] → [L, H, len(tokens)].

  The row of t is what attending to t does to the output logits, the one comparison the softmax
  over outputs makes (FW); a copying head puts t itself on top of its own row (near 1), a random
  head anywhere (0.5 on average).  Ranks within a row ignore a shift of the whole row, so no
  centring is needed.  Rows go ``chunk`` at a time (default: 2²⁴ entries for all heads).
  """
  tokens = np.asarray(tokens)
  chunk = chunk or _row_chunk(w, len(tokens))
  _, ov = restricted(w, tokens, centre=False)
  left, right = np.asarray(ov.left), np.asarray(ov.right)
  out = []
  for start in range(0, len(tokens), chunk):
    out.append(_below_own(left[..., start:start + chunk, :], right, start))
  return np.concatenate(out, -1) / (len(tokens) - 1)


def _below_own(left, right, start):
  """For rows start … start + len − 1 of left @ right: how many entries are below the diagonal's
  (NumPy: its compare-and-count ran 4× faster than XLA's on CPU)."""
  rows = np.matmul(left, right)  # [..., c, n]
  c = rows.shape[-2]
  own = rows[..., np.arange(c), start + np.arange(c)]  # [..., c]
  return (rows < own[..., None]).sum(-1)


class SkipTrigramCounter:
  """Counts of skip-trigrams in a token array: "s … d → o" occurs at position p when
  tokens[p] = d, tokens[p + 1] = o and s is among the ``window`` tokens before p."""

  def __init__(self, tokens: np.ndarray, window: int):
    self.tokens = np.asarray(tokens, np.int64)
    self.window = window
    self.vocab = int(self.tokens.max()) + 1
    codes = self.tokens[:-1] * self.vocab + self.tokens[1:]
    self._order = np.argsort(codes, kind="stable")
    self._sorted = codes[self._order]

  def _pair_positions(self, d: int, o: int) -> np.ndarray:
    """Positions p with tokens[p] = d and tokens[p + 1] = o."""
    code = int(d) * self.vocab + int(o)
    lo, hi = np.searchsorted(self._sorted, [code, code + 1])
    return self._order[lo:hi]

  def _source_before(self, s: int, positions: np.ndarray) -> np.ndarray:
    """[len(positions)] bool: s occurs in tokens[p − window : p]."""
    back = positions[:, None] - np.arange(1, self.window + 1)[None, :]
    return ((self.tokens[np.maximum(back, 0)] == s) & (back >= 0)).any(-1)

  def count(self, s: int, d: int, o: int) -> int:
    """How many positions p hold "s … d → o"."""
    return int(self._source_before(int(s), self._pair_positions(d, o)).sum())

  def followers(self, d: int) -> np.ndarray:
    """The distinct tokens seen right after ``d``."""
    lo, hi = np.searchsorted(self._sorted, [int(d) * self.vocab, (int(d) + 1) * self.vocab])
    return np.unique(self._sorted[lo:hi] % self.vocab)
