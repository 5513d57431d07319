"""Model-level losses: next-token losses in chunks of windows, IH's in-context-learning score (mean
loss at a late position minus at an early one; also with groups of heads zero-ablated) and the
loss drop on repeated tokens.

``sequence_losses`` computes the losses window chunk by window chunk (sized by
``kernels.windows_per_chunk``), never holding every window's logits.
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core.kernels import map_in_chunks, windows_per_chunk
from reproduce.core.model import ModelConfig, residual_stream, stream_losses, window_bytes
from reproduce.core.scores.ablations import ablated_position_losses, pattern_preserving_losses
from reproduce.core.weights import Weights


# The in-context-learning score is measured on this many fixed held-out windows in every
# figure (``in_context_learning_score``).
ICL_WINDOWS = 512


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
  chunk = windows_per_chunk(window_bytes(cfg, inputs.shape[1]), inputs.shape[0])
  return np.asarray(_sequence_losses(cfg, w, inputs, targets, chunk))


def icl_positions(n_ctx: int):
  """(early, late) 0-indexed positions: (49, 499) as in IH when n_ctx ≥ 500, else the same
  fractions of the context (50/512 and 500/512)."""
  if n_ctx >= 500:
    return 49, 499
  return max(0, round(50 * n_ctx / 512) - 1), round(500 * n_ctx / 512) - 1


def spread_positions(T: int, n: int) -> np.ndarray:
  """``n`` evenly spaced positions of a window of T tokens, 0 and T − 1 included (fewer when
  they round together; none for n = 0): where ``in_context_learning_score`` samples the
  held-out loss."""
  if n <= 0:
    return np.zeros(0, int)
  return np.unique(np.linspace(0, T - 1, n).round().astype(int))


def position_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions,
                    chunk: Optional[int] = None):
  """Per-window loss at the given positions only, [B, len(positions)]
  (``ablated_position_losses`` with no head ablated)."""
  return ablated_position_losses(cfg, w, inputs, targets, positions, [()], chunk)[:, 0]


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
  spread = spread_positions(T, loss_positions)
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


def ablations_icl(config, w: Weights, inputs, targets, groups: Sequence,
                  preserve_patterns: bool = False) -> list:
  """The ICL score (``icl_of_losses``) with each group of heads ((layer, head) pairs; the empty
  group: the model itself) zero-ablated, from one shared pass: fully
  (``ablated_position_losses``), or with every pattern preserved (``preserve_patterns``,
  ``pattern_preserving_losses``)."""
  early, late = icl_positions(inputs.shape[1])
  ablate = pattern_preserving_losses if preserve_patterns else ablated_position_losses
  losses = np.asarray(ablate(config, w, inputs, targets, positions=(early, late),
                             groups=groups))  # [B, G, 2]
  return [icl_of_losses(losses[:, g, 0], losses[:, g, 1], early, late)
          for g in range(len(groups))]


def repeat_loss_drop(config, w: Weights, tokens: np.ndarray, length: int) -> Dict[str, float]:
  """On BOS + ``length`` tokens repeated: mean next-token loss when predicting the first
  occurrence (targets 1..length), on the repeats (targets length+1..end), and their difference
  (the drop: what in-context copying buys)."""
  tokens = np.asarray(tokens)
  losses = sequence_losses(config, w, tokens[:, :-1], tokens[:, 1:])  # target t+1
  first, repeat = losses[:, :length].mean(), losses[:, length:].mean()
  return {"first": float(first), "repeat": float(repeat), "drop": float(first - repeat)}


def pattern_preserving_repeat_drops(config, w: Weights, tokens: np.ndarray, length: int,
                                    groups: Sequence) -> list:
  """``repeat_loss_drop`` with each group of heads ablated with every pattern preserved
  (``pattern_preserving_losses``; the empty group: the model itself), from one shared pass."""
  tokens = np.asarray(tokens)
  losses = pattern_preserving_losses(config, w, tokens[:, :-1], tokens[:, 1:], groups)
  out = []
  for g in range(len(groups)):
    first, repeat = losses[:, g, :length].mean(), losses[:, g, length:].mean()
    out.append({"first": float(first), "repeat": float(repeat), "drop": float(first - repeat)})
  return out
