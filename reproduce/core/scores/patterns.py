"""Attention-pattern scores: the previous-token and induction stripes, IH's prefix-matching score
and its probe, the copying score, attention by offset and resting on BOS.

Patterns are [L, B, H, T(dest), T(src)] as returned by ``forward(..., return_patterns=True)``;
every score comes back as [L, H] unless said otherwise.  The figures measure on many full-length
windows through ``pattern_statistics`` instead, which computes the same numbers window chunk by
window chunk (sized by ``kernels.windows_per_chunk``), never holding every window's patterns.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core import circuits
from reproduce.core.kernels import map_in_chunks, windows_per_chunk
from reproduce.core.model import ModelConfig, forward, residual_stream, window_bytes
from reproduce.core.scores.losses import sequence_losses
from reproduce.core.weights import Weights


def stripe_mean(patterns, offset: int, start: int):
  """Mean of A[dest i, src i+offset] over batch and destinations i ≥ start → [L, H]."""
  T = patterns.shape[-1]
  dest = np.arange(max(start, -offset), T)
  return jnp.asarray(patterns)[..., dest, dest + offset].mean(axis=(1, 3))


# One definition per score, the same in every figure.  The induction criterion is IH's
# prefix-matching score on IH's probe (``prefix_matching_score``: BOS + 25 random middle-frequency
# tokens × 4, 10 samples); the in-context-learning score is ``losses.in_context_learning_score``
# on ``losses.ICL_WINDOWS`` fixed held-out windows.  Other probes of the induction stripe are
# variants with their own name (``stripe_score``: the stripe of the most recent earlier copy
# only, on whatever sequence a figure draws).
PREFIX_LENGTH = 25
PREFIX_REPEATS = 4
PREFIX_SAMPLES = 10


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
class MaskedTopOffBos:
  """Σ max_{j ≥ 1} A[i, j] over the destinations i where ``mask`` [b, T] is true, per window →
  [b, H] (a sum, like ``MaskedBos``): the attention on the one position other than BOS that
  takes most of it, BOS's strongest rival."""

  def __call__(self, A, tokens, mask):
    return jnp.einsum("bht,bt->bh", A[..., 1:].max(-1), mask.astype(A.dtype))


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
  """Per window, ``statistics`` (``Stripe``, ``Offsets``, ``MaskedBos``, ``MaskedTopOffBos``,
  ``PrefixMatching``) of every layer's attention patterns on ``tokens`` [B, T] → one [L, B, …]
  array per statistic.

  Windows go through in chunks (``kernels.windows_per_chunk`` of ``model.window_bytes``), and
  the logits are never computed: only a chunk's patterns exist at once.  ``mask`` [B, T] is
  what ``MaskedBos`` and ``MaskedTopOffBos`` read."""
  cfg = ModelConfig.from_any(config)
  tokens = jnp.atleast_2d(jnp.asarray(tokens, jnp.int32))
  B, T = tokens.shape
  mask = jnp.zeros((B, T), bool) if mask is None else jnp.asarray(mask, bool)
  if cfg.n_layers == 0:
    raise ValueError("pattern statistics need a model with attention layers")
  chunk = windows_per_chunk(window_bytes(cfg, T), B)
  out = _pattern_statistics(cfg, w, tokens, mask, tuple(statistics), chunk)
  return tuple(np.swapaxes(np.asarray(o), 0, 1) for o in out)


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
  if not 1 <= length <= len(pool):
    raise ValueError(f"a random-token probe of {length} distinct tokens needs a sampling pool of "
                     f"at least that many; this one holds {len(pool)} (the vocabulary is too "
                     "small)")
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


def positional_offsets(w: Weights, n_ctx: int = 0) -> Dict[str, np.ndarray]:
  """Mean attention at offset 0 (self) and offset 1 (previous token) of each head's purely
  positional pattern (``circuits.positional_attention``), over destinations i ≥ 1 → [L, H];
  one layer's [H, T, T] patterns at a time."""
  layers = [circuits.positional_attention(w, n_ctx, layer=l) for l in range(w.n_layers)]
  return {"offset0": np.stack([np.asarray(Stripe(0, 1)(A, None, None)) for A in layers]),
          "offset1": np.stack([np.asarray(Stripe(-1, 1)(A, None, None)) for A in layers])}


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
