"""Head scores and model-level measurements (docs/METHODS.md, "Head and model scores").

Patterns are [L, B, H, T(dest), T(src)] as returned by ``forward(..., return_patterns=True)``;
every score comes back as [L, H] unless said otherwise.  The figures measure on many full-length
windows through ``pattern_statistics`` and ``sequence_losses`` instead, which compute the same
numbers window chunk by window chunk (sized from ``kernels.CHUNK_BYTES``), never holding every
window's patterns or logits.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core import circuits
from reproduce.core.kernels import items_per_chunk, map_in_chunks
from reproduce.core.model import (ModelConfig, forward, residual_stream, stream_losses,
                                  token_losses, unembed, window_bytes)
from reproduce.core.weights import Weights


def stripe_mean(patterns, offset: int, start: int):
  """Mean of A[dest i, src i+offset] over batch and destinations i ≥ start → [L, H]."""
  T = patterns.shape[-1]
  dest = np.arange(max(start, -offset), T)
  return jnp.asarray(patterns)[..., dest, dest + offset].mean(axis=(1, 3))


def induction_score(patterns, length: int):
  """Mean attention on the induction stripe of BOS + ``length`` random tokens repeated.

  Destination i in a repeat attends to i − (length − 1): the token after the previous copy of the
  current token.  Averaged over all destinations after the first copy → [L, H] in [0, 1].
  """
  return stripe_mean(patterns, -(length - 1), start=length + 1)


def previous_token_score(patterns):
  """Mean A[i, i−1] over destinations i ≥ 2 (so that resting on BOS does not count) → [L, H]."""
  return stripe_mean(patterns, -1, start=2)


# ----------------------------------------------------------------------------------------------
# Pattern statistics in chunks of windows: the [L, B, H, T, T] patterns never exist at once


@dataclasses.dataclass(frozen=True)
class Stripe:
  """Mean A[i, i + offset] over destinations i ≥ max(start, −offset), per window → [b, H]."""

  offset: int
  start: int

  def __call__(self, A, tokens, mask):
    dest = np.arange(max(self.start, -self.offset), A.shape[-1])
    return A[..., dest, dest + self.offset].mean(-1)


@dataclasses.dataclass(frozen=True)
class Offsets:
  """Mean A[i, i − o] for o = 0 … n − 1 over destinations i ≥ n, per window → [b, H, n]."""

  n: int

  def __call__(self, A, tokens, mask):
    dest = np.arange(self.n, A.shape[-1])
    return jnp.stack([A[..., dest, dest - o].mean(-1) for o in range(self.n)], -1)


@dataclasses.dataclass(frozen=True)
class MaskedBos:
  """Σ A[i, 0] over the destinations i where ``mask`` [b, T] is true, per window → [b, H] (a
  sum: divide by the mask's total)."""

  def __call__(self, A, tokens, mask):
    return jnp.einsum("bht,bt->bh", A[..., 0], mask.astype(A.dtype))


@dataclasses.dataclass(frozen=True)
class PrefixMatching:
  """Mean over destinations i ≥ start of Σ_j A[i, j] over the sources j ≥ 1 right after an
  earlier copy of token i (tokens[j − 1] = tokens[i], j − 1 < i), per window → [b, H]."""

  start: int

  def __call__(self, A, tokens, mask):
    T = tokens.shape[1]
    same = tokens[:, None, :-1] == tokens[:, :, None]  # [b, dest i, j − 1]
    earlier = np.arange(T - 1)[None, :] < np.arange(T)[:, None]
    successor = jnp.pad(same & earlier, ((0, 0), (0, 0), (1, 0)))  # [b, i, j]
    per_dest = jnp.einsum("bhij,bij->bhi", A, successor.astype(A.dtype))
    return per_dest[..., self.start:].mean(-1)


@functools.partial(jax.jit, static_argnames=("cfg", "statistics", "chunk"))
def _pattern_statistics(cfg: ModelConfig, w: Weights, tokens, mask, statistics, chunk: int):
  def windows(t, m):
    _, patterns, _ = residual_stream(cfg, w, t, keep_patterns=True)
    return tuple(jnp.stack([s(A, t, m) for A in patterns], 1) for s in statistics)  # [b, L, …]
  return map_in_chunks(windows, (tokens, mask), chunk)


def pattern_statistics(config, w: Weights, tokens, statistics: tuple, mask=None) -> tuple:
  """Per window, ``statistics`` (``Stripe``, ``Offsets``, ``MaskedBos``, ``PrefixMatching``) of
  every layer's attention patterns on ``tokens`` [B, T] → one [L, B, …] array per statistic.

  Windows go through in chunks sized by ``model.window_bytes`` from ``kernels.CHUNK_BYTES``, and
  the logits are never computed: only a chunk's patterns exist at once.  ``mask`` [B, T] is
  what ``MaskedBos`` reads."""
  cfg = ModelConfig.from_any(config)
  tokens = jnp.atleast_2d(jnp.asarray(tokens, jnp.int32))
  B, T = tokens.shape
  mask = jnp.zeros((B, T), bool) if mask is None else jnp.asarray(mask, bool)
  if cfg.n_layers == 0:
    raise ValueError("pattern statistics need a model with attention layers")
  chunk = items_per_chunk(window_bytes(cfg, T), B)
  out = _pattern_statistics(cfg, w, tokens, mask, tuple(statistics), chunk)
  return tuple(np.swapaxes(np.asarray(o), 0, 1) for o in out)


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def _sequence_losses(cfg: ModelConfig, w: Weights, inputs, targets, chunk: int):
  def windows(x, y):
    return stream_losses(cfg, w, residual_stream(cfg, w, x)[0], y)
  return map_in_chunks(windows, (inputs, targets), chunk)


def sequence_losses(config, w: Weights, inputs, targets) -> np.ndarray:
  """Next-token losses [B, T] of the model on ``inputs`` against ``targets``: windows in chunks
  sized by ``model.window_bytes``, the unembedding in row chunks (``model.stream_losses``), so
  neither the patterns nor the [B, T, vocab] logits of all windows ever exist."""
  cfg = ModelConfig.from_any(config)
  inputs = jnp.atleast_2d(jnp.asarray(inputs, jnp.int32))
  targets = jnp.atleast_2d(jnp.asarray(targets, jnp.int32))
  chunk = items_per_chunk(window_bytes(cfg, inputs.shape[1]), inputs.shape[0])
  return np.asarray(_sequence_losses(cfg, w, inputs, targets, chunk))


def previous_token_and_induction(config, w: Weights, text, probe=None, length: int = 0) -> dict:
  """The two role scores of every head, measured as the figures and the trainer both do.

  ``previous_token`` [L, H] on ``text`` (held-out windows); with a ``probe`` (BOS + ``length``
  tokens repeated), also ``induction`` [L, H] on it and its next-token losses
  ``probe_losses`` [B, T − 1].  Both in chunks of windows (``pattern_statistics``).
  """
  cfg = ModelConfig.from_any(config)
  prev, = pattern_statistics(cfg, w, text, (Stripe(-1, 2),))
  out = {"previous_token": prev.mean(1)}
  if probe is not None:
    probe = np.atleast_2d(np.asarray(probe))
    induction, = pattern_statistics(cfg, w, probe, (Stripe(-(length - 1), length + 1),))
    out["induction"] = induction.mean(1)
    out["probe_losses"] = sequence_losses(cfg, w, probe[:, :-1], probe[:, 1:])
  return out


def frequency_band(train_tokens: np.ndarray, vocab_size: int, exclude: Sequence[int] = (0, 1),
                   drop_top: float = 0.05, drop_bottom: float = 0.25, *,
                   counts: Optional[np.ndarray] = None) -> np.ndarray:
  """Token ids ranked by corpus frequency with the most and least frequent removed (IH's
  sampling pool for random-token probes); special tokens never included.  ``counts``, if
  given, are the tokens' frequencies already counted (a token store's), and ``train_tokens``
  is not read."""
  if counts is None:
    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size)
  counts = np.array(counts[:vocab_size], np.int64)
  counts[list(exclude)] = -1
  ranked = np.argsort(-counts, kind="stable")
  ranked = ranked[counts[ranked] > 0]
  lo, hi = int(len(ranked) * drop_top), int(len(ranked) * (1 - drop_bottom))
  return np.sort(ranked[lo:hi])


def repeated_sequences(pool: np.ndarray, bos_id: int, length: int, repeats: int, samples: int,
                       seed: int = 0) -> np.ndarray:
  """``samples`` sequences of BOS + ``length`` distinct tokens from ``pool``, repeated."""
  rng = np.random.default_rng(seed)
  blocks = np.stack([rng.choice(pool, size=length, replace=False) for _ in range(samples)])
  bos = np.full((samples, 1), bos_id)
  return np.concatenate([bos, np.tile(blocks, (1, repeats))], axis=1).astype(np.int32)


def prefix_matching_score(config, w: Weights, pool: np.ndarray, bos_id: int, length: int = 25,
                          repeats: int = 4, samples: int = 10, seed: int = 0):
  """IH's prefix-matching score → [L, H].

  On BOS + ``length`` random distinct tokens repeated ``repeats`` times: for every destination
  in the second and later repeats, the total attention to the positions right after earlier
  copies of its token; averaged over destinations and ``samples`` sequences.  The length is cut
  to fit n_ctx if needed.
  """
  cfg = ModelConfig.from_any(config)
  length = min(length, (cfg.n_ctx - 1) // repeats)
  tokens = repeated_sequences(pool, bos_id, length, repeats, samples, seed)
  prefix, = pattern_statistics(cfg, w, tokens, (PrefixMatching(length + 1),))
  return prefix.mean(1)


def copying_score(config, w: Weights, tokens: np.ndarray):
  """How much each head raises the logits of the tokens it attends to → [L, H] in [−1, 1].

  Our concrete form of IH's copying score, on sequences of random tokens: at each destination,
  the head's direct logit effect (its output through W_U) on the tokens present in the sequence
  is mean-subtracted and passed through ReLU (r ≥ 0); a = attention-weighted mean of r over the
  tokens it attends to (BOS left out), m = mean of r over all present tokens; the score is
  (a − m) / (a + m), averaged over destinations.  A head that raises what it attends to scores
  near +1, one that raises other tokens near −1, a random head near 0.
  """
  cfg = ModelConfig.from_any(config)
  tokens = np.asarray(tokens)
  _, extras = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
  scores = []
  for b in range(tokens.shape[0]):
    present = np.unique(tokens[b, 1:])
    onehot = (tokens[b][:, None] == present[None, :]).astype(np.float32)  # [T, n_present]
    effect = extras["head_outputs"][:, b] @ w.W_U[:, present]  # [L, H, T, n_present]
    raised = jax.nn.relu(effect - effect.mean(-1, keepdims=True))
    weight = extras["patterns"][:, b] @ onehot  # attention per present token [L, H, T, n]
    attended = (weight * raised).sum(-1) / (weight.sum(-1) + 1e-9)
    mean = raised.mean(-1)
    scores.append(((attended - mean) / (attended + mean + 1e-9))[:, :, 1:].mean(-1))
  return jnp.stack(scores).mean(0)


def icl_positions(n_ctx: int):
  """(early, late) 0-indexed positions: (49, 499) as in IH when n_ctx ≥ 500, else the same
  fractions of the context (50/512 and 500/512)."""
  if n_ctx >= 500:
    return 49, 499
  return max(0, round(50 * n_ctx / 512) - 1), round(500 * n_ctx / 512) - 1


@functools.partial(jax.jit, static_argnames=("cfg", "positions", "chunk"))
def _position_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions, chunk: int):
  picked = jnp.asarray(positions)

  def windows(x, y):
    stream, _, _ = residual_stream(cfg, w, x[:, : max(positions) + 1])
    return token_losses(unembed(cfg, w, stream[:, picked]), y[:, picked])

  return map_in_chunks(windows, (inputs, targets), chunk)


def position_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions,
                    chunk: Optional[int] = None):
  """Per-window loss at the given positions only, [B, len(positions)].

  The residual stream is unembedded at those positions alone (the vocab-wide unembedding is
  most of a forward pass), and windows go through ``chunk`` at a time (default: as many as
  ``model.window_bytes`` of the first max(positions) + 1 tokens fit in ``kernels.CHUNK_BYTES``).
  """
  positions = tuple(int(p) for p in positions)
  if chunk is None:
    chunk = items_per_chunk(window_bytes(cfg, max(positions) + 1), inputs.shape[0])
  return _position_losses(cfg, w, jnp.asarray(inputs), jnp.asarray(targets), positions, chunk)


def in_context_learning_score(config, w: Weights, inputs, targets) -> Dict[str, float]:
  """IH's in-context-learning score: mean loss at the late position minus at the early one over
  fixed held-out windows (negative: later tokens are predicted better, the context helps)."""
  cfg = ModelConfig.from_any(config)
  early, late = icl_positions(inputs.shape[1])
  losses = np.asarray(position_losses(cfg, w, jnp.asarray(inputs), jnp.asarray(targets),
                                      (early, late)))
  return {"score": float(losses[:, 1].mean() - losses[:, 0].mean()),
          "early_index": early, "late_index": late,
          "loss_early": float(losses[:, 0].mean()), "loss_late": float(losses[:, 1].mean())}


def positional_offsets(w: Weights, n_ctx: int = 0) -> Dict[str, np.ndarray]:
  """Mean attention at offset 0 (self) and offset 1 (previous token) of each head's purely
  positional pattern (``circuits.positional_attention``), over destinations i ≥ 1 → [L, H];
  one layer's [H, T, T] patterns at a time."""
  layers = [circuits.positional_attention(w, n_ctx, layer=l) for l in range(w.n_layers)]
  return {"offset0": np.stack([np.asarray(Stripe(0, 1)(A, None, None)) for A in layers]),
          "offset1": np.stack([np.asarray(Stripe(-1, 1)(A, None, None)) for A in layers])}


def pair_logits(W_E: np.ndarray, W_U: np.ndarray, current: np.ndarray,
                following: np.ndarray) -> np.ndarray:
  """(W_E W_U)[current_p, following_p] for every pair p, in the dtype of W_E: W_E[c] · W_U[:, f]
  over chunks of pairs sized so that a chunk's two [pairs, d_model] gathers fit
  ``kernels.CHUNK_BYTES`` (millions of pairs would otherwise gather gigabytes)."""
  W_E, W_U_rows = np.asarray(W_E), np.ascontiguousarray(np.asarray(W_U).T)  # [V, D] both
  out = np.empty(len(current), W_E.dtype)
  chunk = items_per_chunk(2 * W_E.shape[1] * W_E.dtype.itemsize, len(current))
  for start in range(0, len(current), chunk):
    c, f = current[start:start + chunk], following[start:start + chunk]
    out[start:start + chunk] = np.einsum("pd,pd->p", W_E[c], W_U_rows[f])
  return out


def bigram_statistics(w: Weights, train_tokens: np.ndarray, min_count: int = 20,
                      chunk: Optional[int] = None) -> Dict[str, object]:
  """The direct path W_E W_U as a bigram model, against the corpus's empirical bigram table.

  Returns the Pearson correlation of model vs empirical log p(next | current) over pairs seen at
  least ``min_count`` times, the KL divergence Σ_c p(c) KL(p_emp(·|c) ‖ p_model(·|c)) in nats,
  the conditional entropy H(next | current) of the table (the best loss any bigram model can
  reach), and the pairs used (for plotting).  Source rows of W_E W_U go ``chunk`` at a time
  (default: sized from ``kernels.CHUNK_BYTES``): the vocab × vocab table never exists.
  """
  tokens = np.asarray(train_tokens, np.int64)
  V = w.d_vocab
  codes, counts = np.unique(tokens[:-1] * V + tokens[1:], return_counts=True)
  current, following = codes // V, codes % V
  source_counts = np.bincount(current, weights=counts, minlength=V)
  log_emp = np.log(counts / source_counts[current])
  sources = np.unique(current)
  lse = np.zeros(V)
  W_E, W_U = np.asarray(w.W_E), np.asarray(w.W_U)
  # Source rows per block: a block's logits and two temporaries of the same size fit the budget.
  chunk = chunk or items_per_chunk(3 * W_U.dtype.itemsize * V, len(sources))
  for start in range(0, len(sources), chunk):  # log-normaliser of each source's row
    rows = sources[start:start + chunk]
    logits = W_E[rows] @ W_U
    top = logits.max(-1, keepdims=True)
    lse[rows] = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]
  log_model = pair_logits(W_E, W_U, current, following) - lse[current]
  weight = counts / counts.sum()
  frequent = counts >= min_count
  return {
      "correlation": float(np.corrcoef(log_model[frequent], log_emp[frequent])[0, 1]),
      "kl": float(np.sum(weight * (log_emp - log_model))),
      "conditional_entropy": float(-np.sum(weight * log_emp)),
      "model_cross_entropy": float(-np.sum(weight * log_model)),
      "n_pairs": int(frequent.sum()),
      "pairs": {"current": current[frequent], "next": following[frequent],
                "log_model": log_model[frequent], "log_empirical": log_emp[frequent],
                "count": counts[frequent]},
  }


# ----------------------------------------------------------------------------------------------
# Mechanism: ablations, attention by offset, resting on BOS, ranked skip-trigrams


def zero_ablated(w: Weights, heads: Sequence) -> Weights:
  """The weights with each (layer, head) in ``heads`` zero-ablated: its W_O set to 0.

  A head's write to the residual stream is A v W_O, so a zero W_O removes exactly that head's
  output; every later layer then reads the ablated stream (total, not direct-only, ablation).
  """
  W_O = np.array(w.W_O)
  for layer, head in heads:
    W_O[layer, head] = 0
  return w.replace(W_O=jnp.asarray(W_O))


def repeat_loss_drop(config, w: Weights, tokens: np.ndarray, length: int) -> Dict[str, float]:
  """On BOS + ``length`` tokens repeated: mean next-token loss when predicting the first
  occurrence (targets 1..length), on the repeats (targets length+1..end), and their difference
  (the drop: what in-context copying buys)."""
  tokens = np.asarray(tokens)
  losses = sequence_losses(config, w, tokens[:, :-1], tokens[:, 1:])  # target t+1
  first, repeat = losses[:, :length].mean(), losses[:, length:].mean()
  return {"first": float(first), "repeat": float(repeat), "drop": float(first - repeat)}


def attention_by_offset(patterns, n_offsets: int) -> np.ndarray:
  """Mean A[dest i, src i − o] for o = 0 … n_offsets − 1 over batch and destinations
  i ≥ n_offsets (so that every offset exists and none is BOS) → [L, H, n_offsets]."""
  patterns = np.asarray(patterns)
  T = patterns.shape[-1]
  dest = np.arange(n_offsets, T)
  return np.stack([patterns[..., dest, dest - o].mean(axis=(1, 3)) for o in range(n_offsets)],
                  axis=-1)


def first_occurrences(tokens: np.ndarray) -> np.ndarray:
  """[B, T] bool: position i ≥ 1 holds a token that does not occur at positions 1 … i−1 (each
  row's first index of every distinct token after BOS: O(T log T), no [T, T] comparison)."""
  tokens = np.atleast_2d(np.asarray(tokens))
  first = np.zeros(tokens.shape, bool)
  for row, t in zip(first, tokens):
    row[1 + np.unique(t[1:], return_index=True)[1]] = True
  return first


def bos_attention(patterns, mask: np.ndarray) -> np.ndarray:
  """Mean attention on position 0 (BOS) over the destinations where ``mask`` [B, T] is true,
  per head → [L, H]."""
  on_bos = np.asarray(patterns)[..., 0]  # [L, B, H, T]
  m = np.asarray(mask, np.float64)[None, :, None, :]
  return (on_bos * m).sum(axis=(1, 3)) / max(float(m.sum()), 1.0)


def block_moments(f: circuits.Factored, rows: np.ndarray, cols: np.ndarray):
  """Mean and standard deviation of the entries of the block (left @ right)[rows, cols] of
  every head, [L, H] each, without forming it: Σ entries = (1ᵀ left_r)(right_c 1) and
  Σ entries² = tr((left_rᵀ left_r)(right_c right_cᵀ))."""
  left = jnp.asarray(f.left)[..., jnp.asarray(rows), :]
  right = jnp.asarray(f.right)[..., :, jnp.asarray(cols)]
  n = len(rows) * len(cols)
  total = jnp.einsum("...r,...r->...", left.sum(-2), right.sum(-1))
  squares = jnp.einsum("...ab,...ba->...", jnp.swapaxes(left, -1, -2) @ left,
                       right @ jnp.swapaxes(right, -1, -2))
  mean = total / n
  return np.asarray(mean), np.asarray(jnp.sqrt(jnp.maximum(squares / n - mean ** 2, 0)))


def centred_rows(f: circuits.Factored, tokens: np.ndarray) -> circuits.Factored:
  """The product with each row's mean over the columns ``tokens`` subtracted, still factored:
  X[i, j] − mean_{j' ∈ tokens} X[i, j'] = left[i] (right[:, j] − mean_{j'} right[:, j'])."""
  right = jnp.asarray(f.right)
  mean = right[..., :, jnp.asarray(tokens)].mean(-1, keepdims=True)
  return circuits.Factored(f.left, right - mean)


def _source_chunk(w: Weights, n_tokens: int, max_elements: int = 1 << 24) -> int:
  """Sources per block so that an [L, H, n_tokens, chunk] circuit block stays ≤ max_elements."""
  return max(1, max_elements // (w.n_layers * w.n_heads * max(n_tokens, 1)))


def ranked_skip_trigrams(w: Weights, tokens: np.ndarray, n_sources: int = 10, k: int = 3,
                         chunk: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Every head's strongest skip-trigrams "src … dest → out" among ``tokens`` (all three
  restricted to them), ranked by the sum of two standardised logits:

      score(src, dest, out) = z_QK[dest, src] + z_OV[src, out]

  with z_QK the attention score W_E W_QK W_Eᵀ[dest, src] / sqrt(d_head) and z_OV the logit
  change W_E W_OV W_U[src, out], each first centred along its row (``centred_rows``: a term that
  depends on the destination alone cancels in the softmax over sources, one that depends on the
  source alone shifts every output logit equally) and then standardised by the mean and standard
  deviation of its head's own block over ``tokens``.  Attention logits and output logits are in different units;
  standardising makes "strong on both" comparable, and a sum (unlike a product) never ranks two
  large negative values as a strong trigram.  The score separates, so a source's best trigram is
  its best destination with its best output.  Sources are ranked by that best score; each keeps
  its top ``k`` destinations and outputs.  Sources go ``chunk`` at a time (default: 2²⁴
  entries): at most [L, H, len(tokens), chunk] entries of either circuit exist at once.

  Returns [L, H, n_sources] ``source``, ``score``; [L, H, n_sources, k] ``dest``, ``dest_z``,
  ``out``, ``out_z`` (token ids, standardised values).
  """
  tokens = np.asarray(tokens)
  chunk = chunk or _source_chunk(w, len(tokens))
  qk = centred_rows(circuits.qk_circuit(w, full=True), tokens)
  ov = centred_rows(circuits.ov_circuit(w, full=True), tokens)
  scale = float(np.sqrt(w.d_head))
  qk_mean, qk_std = block_moments(qk, tokens, tokens)
  ov_mean, ov_std = block_moments(ov, tokens, tokens)
  qk_mean, qk_std = qk_mean / scale, qk_std / scale
  dest_z, dest_i, out_z, out_i = [], [], [], []
  for start in range(0, len(tokens), chunk):
    src = tokens[start:start + chunk]
    cols = qk.left[..., jnp.asarray(tokens), :] @ qk.right[..., :, jnp.asarray(src)] / scale
    z = (jnp.swapaxes(cols, -1, -2) - qk_mean[..., None, None]) / qk_std[..., None, None]
    values, index = jax.lax.top_k(z, k)  # [L, H, chunk, k]
    dest_z.append(np.asarray(values)); dest_i.append(tokens[np.asarray(index)])
    rows = ov.left[..., jnp.asarray(src), :] @ ov.right[..., :, jnp.asarray(tokens)]
    z = (rows - ov_mean[..., None, None]) / ov_std[..., None, None]
    values, index = jax.lax.top_k(z, k)
    out_z.append(np.asarray(values)); out_i.append(tokens[np.asarray(index)])
  dest_z, dest_i = np.concatenate(dest_z, -2), np.concatenate(dest_i, -2)
  out_z, out_i = np.concatenate(out_z, -2), np.concatenate(out_i, -2)
  best = dest_z[..., 0] + out_z[..., 0]  # [L, H, n_tokens]
  order = np.argsort(-best, axis=-1, kind="stable")[..., :n_sources]
  pick = lambda a: np.take_along_axis(a, order[..., None], axis=-2)
  return {"source": tokens[order], "score": np.take_along_axis(best, order, -1),
          "dest": pick(dest_i), "dest_z": pick(dest_z), "out": pick(out_i), "out_z": pick(out_z)}


def own_logit_column_rank(w: Weights, tokens: np.ndarray,
                          chunk: Optional[int] = None) -> np.ndarray:
  """Per head and token t in ``tokens``: the fraction of the other tokens s whose OV entry
  W_E W_OV W_U[s, t] is below the token's own [t, t] → [L, H, len(tokens)].

  The column of t says which sources, when attended to, raise t most; a copying head puts t
  itself on top (near 1), a random head anywhere (0.5 on average).  Rows are centred first
  (``centred_rows``): a source that raises every output alike raises none of them.  Ranking within the column,
  not the row, keeps tokens whose unembedding is large for every source from looking copied.
  """
  tokens = np.asarray(tokens)
  chunk = chunk or _source_chunk(w, len(tokens))
  ov = centred_rows(circuits.ov_circuit(w, full=True), tokens)
  out = []
  for start in range(0, len(tokens), chunk):
    t = tokens[start:start + chunk]
    cols = np.asarray(ov.left[..., jnp.asarray(tokens), :] @ ov.right[..., :, jnp.asarray(t)])
    own = cols[..., start + np.arange(len(t)), np.arange(len(t))]  # [L, H, chunk]
    out.append(((cols < own[..., None, :]).sum(-2)) / (len(tokens) - 1))
  return np.concatenate(out, -1)


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
    self._before = {}

  def _source_before(self, s: int) -> np.ndarray:
    """[len(tokens)] bool: s occurs in tokens[p − window : p]."""
    if s not in self._before:
      c = np.concatenate([[0], np.cumsum(self.tokens == s)])  # c[p] = #s in tokens[:p]
      p = np.arange(len(self.tokens))
      self._before[s] = c[p] - c[np.maximum(p - self.window, 0)] > 0
    return self._before[s]

  def count(self, s: int, d: int, o: int) -> int:
    """How many positions p hold "s … d → o"."""
    code = d * self.vocab + o
    lo, hi = np.searchsorted(self._sorted, [code, code + 1])
    return int(self._source_before(int(s))[self._order[lo:hi]].sum())

  def lift(self, s: int, d: int) -> float:
    """P(s in the window before p | tokens[p] = d) / P(s in the window before p): how much more
    often the source precedes this destination than a random position (1: no relation)."""
    before = self._source_before(int(s))
    at_d = self.tokens == d
    base = before.mean()
    return float(before[at_d].mean() / base) if at_d.any() and base > 0 else float("nan")
