"""Head scores and model-level measurements (PAPER.md §3, §7 and §9).

Patterns are [L, B, H, T(dest), T(src)] as returned by ``forward(..., return_patterns=True)``;
every score comes back as [L, H] unless said otherwise.
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reproduce import circuits
from reproduce.model import (forward, largest_divisor_at_most, residual_stream, token_losses,
                             unembed_input)
from reproduce.weights import ModelConfig, Weights


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


def previous_token_and_induction(config, w: Weights, text, probe=None, length: int = 0) -> dict:
  """The two role scores of every head, measured as the figures and the trainer both do.

  ``previous_token`` [L, H] on ``text`` (held-out windows); with a ``probe`` (BOS + ``length``
  tokens repeated), also ``induction`` [L, H] on it and its next-token losses
  ``probe_losses`` [B, T − 1].
  """
  cfg = ModelConfig.from_any(config)
  _, extras = forward(cfg, w, text, return_patterns=True)
  out = {"previous_token": np.asarray(previous_token_score(extras["patterns"]))}
  if probe is not None:
    logits, extras = forward(cfg, w, probe, return_patterns=True)
    out["induction"] = np.asarray(induction_score(extras["patterns"], length))
    out["probe_losses"] = np.asarray(token_losses(logits[:, :-1], jnp.asarray(probe)[:, 1:]))
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
  _, extras = forward(cfg, w, tokens, return_patterns=True)
  T = tokens.shape[1]
  i, j = np.arange(T)[:, None], np.arange(T)[None, :]
  same = tokens[:, None, :-1] == tokens[:, :, None]  # [B, dest i, j−1]: token j−1 = token i
  successor = np.zeros((len(tokens), T, T), bool)
  successor[:, :, 1:] = same & ((j[:, 1:] - 1) < i)  # j−1 is an earlier copy; j ≤ i
  masked = jnp.asarray(extras["patterns"]) * successor[None, :, None]
  per_dest = masked.sum(-1)[..., length + 1:]  # destinations in repeats ≥ 2
  return per_dest.mean(axis=(1, 3))


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
def position_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions, chunk: int = 8):
  """Per-window loss at the given positions only, [B, len(positions)].

  The residual stream is unembedded at those positions alone (the vocab-wide unembedding is
  most of a forward pass), and windows go through ``chunk`` at a time so that the attention
  patterns stay cache-sized.
  """
  picked = jnp.asarray(positions)

  def losses(xy):
    x, _, _ = residual_stream(cfg, w, xy[0][:, : max(positions) + 1])
    return token_losses(unembed_input(cfg, w, x[:, picked]) @ w.W_U, xy[1][:, picked])

  B = inputs.shape[0]
  chunk = largest_divisor_at_most(B, chunk)
  split = lambda a: a.reshape(B // chunk, chunk, a.shape[-1])
  return jax.lax.map(losses, (split(inputs), split(targets))).reshape(B, len(positions))


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
  positional pattern (``circuits.positional_attention``), over destinations i ≥ 1 → [L, H]."""
  pattern = circuits.positional_attention(w, n_ctx)[:, None]  # [L, batch 1, H, T, T]
  return {"offset0": np.asarray(stripe_mean(pattern, 0, start=1)),
          "offset1": np.asarray(stripe_mean(pattern, -1, start=1))}


def bigram_statistics(w: Weights, train_tokens: np.ndarray, min_count: int = 20,
                      chunk: int = 1024) -> Dict[str, object]:
  """The direct path W_E W_U as a bigram model, against the corpus's empirical bigram table.

  Returns the Pearson correlation of model vs empirical log p(next | current) over pairs seen at
  least ``min_count`` times, the KL divergence Σ_c p(c) KL(p_emp(·|c) ‖ p_model(·|c)) in nats,
  the conditional entropy H(next | current) of the table (the best loss any bigram model can
  reach), and the pairs used (for plotting).
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
  for start in range(0, len(sources), chunk):  # log-normaliser of each source's row
    rows = sources[start:start + chunk]
    logits = W_E[rows] @ W_U
    top = logits.max(-1, keepdims=True)
    lse[rows] = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]
  log_model = np.einsum("pd,dp->p", W_E[current], W_U[:, following]) - lse[current]
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
