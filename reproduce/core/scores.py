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
from reproduce.core.model import (ModelConfig, forward, head_values, residual_stream,
                                  stream_losses, token_losses, unembed, window_bytes)
from reproduce.core.weights import Weights


def stripe_mean(patterns, offset: int, start: int):
  """Mean of A[dest i, src i+offset] over batch and destinations i ≥ start → [L, H]."""
  T = patterns.shape[-1]
  dest = np.arange(max(start, -offset), T)
  return jnp.asarray(patterns)[..., dest, dest + offset].mean(axis=(1, 3))


# One definition per score, the same in every figure (issue 20, item 3).  The induction
# criterion is IH's prefix-matching score on IH's probe (``prefix_matching_score``: BOS + 25
# random middle-frequency tokens × 4, 10 samples); the in-context-learning score is
# ``in_context_learning_score`` on ``ICL_WINDOWS`` fixed held-out windows.  Other probes of the
# induction stripe are variants with their own name (``stripe_score``: the stripe of the most
# recent earlier copy only, on whatever sequence a figure draws).
PREFIX_LENGTH = 25
PREFIX_REPEATS = 4
PREFIX_SAMPLES = 10
ICL_WINDOWS = 512


def stripe_score(patterns, length: int):
  """Stripe score: mean attention on the induction stripe of the *most recent* earlier copy on BOS
  + ``length`` random tokens repeated (a variant of the prefix-matching score, which sums over
  every earlier copy; the two agree on two repeats).

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

  ``previous_token`` [L, H] on ``text`` (held-out windows; None: on the probe); with a
  ``probe`` (BOS + ``length`` tokens repeated), also ``induction`` [L, H] on it and its
  next-token losses ``probe_losses`` [B, T − 1].  Both in chunks of windows
  (``pattern_statistics``).
  """
  cfg = ModelConfig.from_any(config)
  if text is None and probe is None:
    raise ValueError("previous_token_and_induction: give text, a probe or both")
  previous = (Stripe(-1, 2),)  # mean A[i, i − 1] over i ≥ 2 (resting on BOS does not count)
  out = {}
  if text is not None:
    prev, = pattern_statistics(cfg, w, text, previous)
    out["previous_token"] = prev.mean(1)
  if probe is not None:
    probe = np.atleast_2d(np.asarray(probe))
    induction, *prev = pattern_statistics(
        cfg, w, probe, (Stripe(-(length - 1), length + 1),) + (previous if text is None else ()))
    out["induction"] = induction.mean(1)
    if text is None:
      out["previous_token"] = prev[0].mean(1)
    out["probe_losses"] = sequence_losses(cfg, w, probe[:, :-1], probe[:, 1:])
  return out


def previous_token_on(config, w: Weights, tokens) -> np.ndarray:
  """Previous-token score [L, H]: mean A[i, i − 1] over destinations i ≥ 2 (resting on BOS does
  not count) and over the windows ``tokens`` [B, T], in chunks of windows."""
  prev, = pattern_statistics(config, w, tokens, (Stripe(-1, 2),))
  return prev.mean(1)


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


def prefix_probe(n_ctx: int, pool: np.ndarray, bos_id: int, length: int = PREFIX_LENGTH,
                 repeats: int = PREFIX_REPEATS, samples: int = PREFIX_SAMPLES, seed: int = 0):
  """(tokens [samples, 1 + length·repeats], length): IH's probe for the prefix-matching score,
  BOS + ``length`` distinct tokens of ``pool`` repeated, the length cut to fit ``n_ctx``."""
  length = min(length, (n_ctx - 1) // repeats, len(pool))
  if length < 1:
    raise ValueError(f"the prefix-matching probe needs n_ctx ≥ {repeats + 1} and a token to "
                     f"sample (n_ctx {n_ctx}, {len(pool)} tokens)")
  return repeated_sequences(pool, bos_id, length, repeats, samples, seed), length


def prefix_matching_score(config, w: Weights, pool: np.ndarray, bos_id: int,
                          length: int = PREFIX_LENGTH, repeats: int = PREFIX_REPEATS,
                          samples: int = PREFIX_SAMPLES, seed: int = 0):
  """IH's prefix-matching score → [L, H]: the induction criterion of every figure.

  On BOS + ``length`` random distinct tokens repeated ``repeats`` times (``prefix_probe``): for
  every destination in the second and later repeats, the total attention to the positions right
  after earlier copies of its token; averaged over destinations and ``samples`` sequences.  The
  length is cut to fit n_ctx if needed.  The figures all use the defaults, so that a head has
  one prefix-matching score wherever it is shown.
  """
  cfg = ModelConfig.from_any(config)
  tokens, length = prefix_probe(cfg.n_ctx, pool, bos_id, length, repeats, samples, seed)
  prefix, = pattern_statistics(cfg, w, tokens, (PrefixMatching(length + 1),))
  return prefix.mean(1)


COPYING_MIN_ATTENDED = 0.1  # fraction of uniform attention's mass off BOS (see copying_score)
COPYING_MIN_DEFINED = 0.1  # fraction of destinations where the score must be defined


def copying_score(config, w: Weights, tokens: np.ndarray,
                  min_attended: float = COPYING_MIN_ATTENDED,
                  min_defined: float = COPYING_MIN_DEFINED) -> Dict[str, np.ndarray]:
  """How much each head raises the logits of the tokens it attends to, where that is defined.

  Our concrete form of IH's copying score, on sequences of random tokens: at each destination t,
  the head's direct logit effect (its output through W_U) on the tokens present in the sequence
  is mean-subtracted and passed through ReLU (r ≥ 0); a = attention-weighted mean of r over the
  tokens it attends to (BOS left out), m = mean of r over all present tokens; the score at t is
  (a − m) / (a + m).  +1: the head raises what it attends to; −1: other tokens; ≈ 0: random.

  Undefined where the head rests on BOS: at t its attention off BOS, 1 − A[t, 0], is below
  ``min_attended`` × t/(t + 1) (what uniform attention would put there).  BOS then holds over
  90% of the attention, the output is mostly BOS's value vector, and r describes what BOS
  writes, not what attending to a token does (a → 0 made such heads score −1).  The head's
  score is the mean over the (sequence, destination) pairs where it is defined, and NaN when
  fewer than ``min_defined`` of them are: a head that attends to tokens at fewer than one
  destination in ten rests on BOS, and a mean over the few others is not its behaviour.

  Returns [L, H] arrays: ``score`` (NaN where undefined), ``defined`` (the fraction of
  destinations t ≥ 1 where it is defined) and ``off_bos`` (mean attention off BOS).
  """
  cfg = ModelConfig.from_any(config)
  tokens = np.asarray(tokens)
  B, T = tokens.shape
  _, extras = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
  patterns = np.asarray(extras["patterns"], np.float64)  # [L, B, H, T, T]
  off_bos = 1.0 - patterns[..., 1:, 0]  # [L, B, H, T−1], destinations t ≥ 1
  t = np.arange(1, T)
  defined = off_bos >= min_attended * t / (t + 1)
  per_dest = np.empty(off_bos.shape)
  for b in range(B):
    present = np.unique(tokens[b, 1:])
    onehot = (tokens[b, 1:, None] == present[None, :]).astype(np.float64)  # [T−1, n_present]
    effect = np.asarray(extras["head_outputs"][:, b, :, 1:] @ w.W_U[:, present], np.float64)
    raised = np.maximum(effect - effect.mean(-1, keepdims=True), 0)  # [L, H, T−1, n_present]
    weight = patterns[:, b, :, 1:, 1:] @ onehot  # attention on each present token, BOS left out
    attended = (weight * raised).sum(-1) / np.maximum(weight.sum(-1), 1e-30)
    mean = raised.mean(-1)
    per_dest[:, b] = (attended - mean) / np.maximum(attended + mean, 1e-30)
  count = defined.sum(axis=(1, 3))
  share = count / defined[0, :, 0].size
  mean_defined = np.where(defined, per_dest, 0).sum(axis=(1, 3)) / np.maximum(count, 1)
  return {"score": np.where(share >= min_defined, mean_defined, np.nan), "defined": share,
          "off_bos": off_bos.mean(axis=(1, 3))}


def icl_positions(n_ctx: int):
  """(early, late) 0-indexed positions: (49, 499) as in IH when n_ctx ≥ 500, else the same
  fractions of the context (50/512 and 500/512)."""
  if n_ctx >= 500:
    return 49, 499
  return max(0, round(50 * n_ctx / 512) - 1), round(500 * n_ctx / 512) - 1


def position_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions,
                    chunk: Optional[int] = None):
  """Per-window loss at the given positions only, [B, len(positions)]
  (``ablated_position_losses`` with no head ablated)."""
  return ablated_position_losses(cfg, w, inputs, targets, positions, [()], chunk)[:, 0]


def ablated_position_losses(config, w: Weights, inputs, targets, positions,
                            groups: Sequence = ((),), chunk: Optional[int] = None):
  """Per-window losses at ``positions`` with each group of heads zero-ablated, [B, G, P]:
  ``groups`` are lists of (layer, head), the empty group the model itself.  Each equals running
  ``zero_ablated(w, group)`` and reading the losses there, from less work:

  - only the first max(positions) + 1 tokens are run (the model is causal);
  - the last layer is computed at the query positions asked for alone, and only those rows are
    unembedded (``model.head_values``);
  - the unablated pass is shared: a group whose first ablated head is in layer l starts from the
    unablated stream after layer l less its heads' writes there (z_h W_O^h), and runs only the
    layers above l, with its heads there zeroed.

  Windows go ``chunk`` at a time (default: as many as fit ``kernels.CHUNK_BYTES`` with one
  layer's attention and every layer's stream and head values, float32)."""
  cfg = ModelConfig.from_any(config)
  positions = tuple(int(p) for p in positions)
  L, H, T = cfg.n_layers, cfg.n_heads, max(positions) + 1
  starts = tuple(min((int(l) for l, _ in g), default=L) for g in groups)
  keep = np.ones((len(groups), max(L, 1), H), np.float32)
  for g, heads in enumerate(groups):
    for l, h in heads:
      keep[g, l, h] = 0
  if chunk is None:
    width = max(cfg.d_model, H * cfg.d_head)
    chunk = items_per_chunk(window_bytes(cfg, T) + 4 * T * (2 * L + 1) * width, inputs.shape[0])
  return _ablated_position_losses(cfg, w, jnp.asarray(inputs), jnp.asarray(targets), positions,
                                  starts, jnp.asarray(keep), chunk)


@functools.partial(jax.jit, static_argnames=("cfg", "positions", "starts", "chunk"))
def _ablated_position_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions, starts,
                             keep, chunk: int):
  L, picked, T = cfg.n_layers, positions, max(positions) + 1
  write = lambda l, z: jnp.einsum("bthe,hed->btd", z, w.W_O[l]) + (
      0.0 if w.b_O is None else w.b_O[l])
  removed = lambda l, z, mask: jnp.einsum("bthe,h,hed->btd", z, 1 - mask, w.W_O[l])

  def windows(x, y):
    x, y = x[:, :T], y[:, jnp.asarray(picked)]
    h = w.W_E[x] + (w.W_pos[:T] if cfg.pos == "standard" else 0.0)
    streams, values = [h], []  # stream after each layer but the last; every layer's z
    for l in range(L):
      z = head_values(cfg, w, l, h, picked if l == L - 1 else None)
      values.append(z)
      h = (h[:, jnp.asarray(picked)] if l == L - 1 else h) + write(l, z)
      if l < L - 1:
        streams.append(h)
    final = h if L else h[:, jnp.asarray(picked)]

    def ablated(start, mask):  # mask [L, H]: 1 keeps a head
      if start == L:
        return final
      if start == L - 1:
        return final - removed(start, values[start], mask[start])
      s = streams[start + 1] - removed(start, values[start], mask[start])
      for l in range(start + 1, L):
        z = head_values(cfg, w, l, s, picked if l == L - 1 else None) * mask[l][:, None]
        s = (s[:, jnp.asarray(picked)] if l == L - 1 else s) + write(l, z)
      return s

    out = [None] * len(starts)
    for start in sorted(set(starts)):
      members = [g for g, st in enumerate(starts) if st == start]
      streams_g = jax.lax.map(lambda m: ablated(start, m), keep[jnp.asarray(members)])
      for i, g in enumerate(members):
        out[g] = token_losses(unembed(cfg, w, streams_g[i]), y)  # [b, P]
    return jnp.stack(out, axis=1)  # [b, G, P]

  return map_in_chunks(windows, (inputs, targets), chunk)


def in_context_learning_score(config, w: Weights, inputs, targets, loss_positions: int = 0
                              ) -> Dict[str, float]:
  """IH's in-context-learning score: mean loss at the late position minus at the early one over
  fixed held-out windows (negative: later tokens are predicted better, the context helps), and
  its standard error over the windows (two single-token losses per window: about 3.7 nats of
  spread per window on the cpu models, so ≈ 0.16 nats at ``ICL_WINDOWS`` = 512 and ≈ 0.5 at 64).

  With ``loss_positions`` > 0, also ``loss``: the mean loss at that many evenly spaced positions
  of every window (a stratified estimate of the held-out loss per token), from the same pass.
  """
  cfg = ModelConfig.from_any(config)
  T = inputs.shape[1]
  early, late = icl_positions(T)
  spread = np.unique(np.linspace(0, T - 1, loss_positions).round().astype(int)) \
      if loss_positions > 0 else np.zeros(0, int)
  positions = tuple(int(i) for i in np.union1d([early, late], spread))
  losses = np.asarray(position_losses(cfg, w, jnp.asarray(inputs), jnp.asarray(targets),
                                      positions))
  at = lambda i: losses[:, positions.index(i)]
  out = icl_of_losses(at(early), at(late), early, late)
  if len(spread):
    out["loss"] = float(np.mean([at(int(i)).mean() for i in spread]))
  return out


def icl_of_losses(early_losses, late_losses, early: int, late: int) -> Dict[str, float]:
  """The ICL score and its standard error from each window's losses at the early and late
  positions ([B] each), as ``in_context_learning_score`` reports them."""
  early_losses, late_losses = np.asarray(early_losses), np.asarray(late_losses)
  per_window = late_losses - early_losses
  error = per_window.std(ddof=1) / np.sqrt(len(per_window)) if len(per_window) > 1 else np.nan
  return {"score": float(late_losses.mean() - early_losses.mean()), "early_index": early,
          "late_index": late, "loss_early": float(early_losses.mean()),
          "loss_late": float(late_losses.mean()), "standard_error": float(error),
          "windows": int(len(per_window))}


def ablations_icl(config, w: Weights, inputs, targets, groups: Sequence) -> list:
  """The ICL score (``icl_of_losses``) with each group of heads ((layer, head) pairs; the empty
  group: the model itself) zero-ablated, from one shared pass (``ablated_position_losses``)."""
  early, late = icl_positions(inputs.shape[1])
  losses = np.asarray(ablated_position_losses(config, w, inputs, targets, (early, late),
                                              groups))  # [B, G, 2]
  return [icl_of_losses(losses[:, g, 0], losses[:, g, 1], early, late)
          for g in range(len(groups))]


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
  """Every head's skip-trigrams "src … dest → out" among ``tokens``, as FW's tables read them:
  each circuit compared only along the axis its softmax normalises.

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
