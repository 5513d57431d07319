"""Ablations of heads, two kinds (docs/METHODS.md, "Pattern-preserving ablation"):

- full (total) zero-ablation: the head's W_O set to 0, every later pattern recomputed from the
  ablated stream (``zero_ablated``, ``ablated_position_losses``);
- pattern-preserving ablation (IH, "Argument 3"): the head's output zeroed with every attention
  pattern, and every norm scale, held at the unablated run's, so only the value paths downstream
  of the head change (``pattern_preserving_logits``, ``pattern_preserving_losses``).  In an
  attention-only model without norm it removes exactly every path term through the head.

Both measure many groups of heads from one shared unablated pass.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core.kernels import map_in_chunks, windows_per_chunk
from reproduce.core.model import (ModelConfig, forward, head_values, residual_stream,
                                  stream_losses, token_losses, unembed, window_bytes)
from reproduce.core.weights import Weights


def zero_ablated(w: Weights, heads: Sequence) -> Weights:
  """The weights with each (layer, head) in ``heads`` zero-ablated: its W_O set to 0.

  A head's write to the residual stream is A v W_O, so a zero W_O removes exactly that head's
  output; every later layer then reads the ablated stream (total, not direct-only, ablation).
  """
  W_O = np.array(w.W_O)
  for layer, head in heads:
    W_O[layer, head] = 0
  return w.replace(W_O=jnp.asarray(W_O))


def group_masks(groups: Sequence, n_layers: int, n_heads: int):
  """(starts, keep) of groups of heads ((layer, head) pairs): each group's lowest ablated layer
  (``n_layers`` for the empty group), and keep [G, max(L, 1), H], 1 for a head the group keeps
  and 0 for one it ablates."""
  starts = tuple(min((int(l) for l, _ in g), default=n_layers) for g in groups)
  keep = np.ones((len(groups), max(n_layers, 1), n_heads), np.float32)
  for g, heads in enumerate(groups):
    for l, h in heads:
      keep[g, l, h] = 0
  return starts, keep


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

  Windows go ``chunk`` at a time (default: ``kernels.windows_per_chunk`` of a window with one
  layer's attention and every layer's stream and head values, float32)."""
  cfg = ModelConfig.from_any(config)
  positions = tuple(int(p) for p in positions)
  L, H, T = cfg.n_layers, cfg.n_heads, max(positions) + 1
  starts, keep = group_masks(groups, L, H)
  if chunk is None:
    width = max(cfg.d_model, H * cfg.d_head)
    chunk = windows_per_chunk(window_bytes(cfg, T) + 4 * T * (2 * L + 1) * width, inputs.shape[0])
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


def pattern_preserving_logits(config, w: Weights, tokens, heads: Sequence) -> jax.Array:
  """The definition, by the forward's overrides: logits [B, T, V] with the heads in ``heads``
  zeroed (``zero_ablated``) and every attention pattern, and with a norm every norm scale
  sqrt(var + eps), forced to those of the unablated run.  Frozen patterns make each layer's
  write linear in the stream it reads; frozen scales keep the norm linear too (a layer norm
  whose scale followed the ablated stream would not be), so the ablation changes only the value
  paths downstream of the heads."""
  cfg = ModelConfig.from_any(config)
  tokens = jnp.atleast_2d(jnp.asarray(tokens))
  _, recorded = forward(cfg, w, tokens, return_patterns=True, return_norm_scales=True)
  scales = recorded["norm_scales"] if cfg.norm != "none" else None
  return forward(cfg, zero_ablated(w, heads), tokens, patterns=recorded["patterns"],
                 norm_scales=scales)[0]


def pattern_preserving_losses(config, w: Weights, inputs, targets, groups: Sequence,
                              positions: Optional[Sequence[int]] = None,
                              chunk: Optional[int] = None) -> np.ndarray:
  """Per-window next-token losses [B, G, P] with each group of heads ((layer, head) pairs; the
  empty group: the model itself) ablated with the patterns preserved
  (``pattern_preserving_logits``), at ``positions`` (all T when None).

  From one unablated pass per chunk of windows, shared by every group: it records each layer's
  patterns A_l [B, H, T, T], norm scales s_l and head outputs o_lh = A_lh v_lh W_O^lh, and the
  final stream x.  With patterns and scales frozen, the ablated final stream is x + δ, where δ
  starts at 0 below the group's lowest layer l₀ and each layer l ≥ l₀ adds

      δ ← δ + Σ_{h kept} A_lh (N̄_l(δ) W_V^lh) W_O^lh − Σ_{h ablated} o_lh

  (N̄_l the norm's linear part with layer l's recorded scale: (δ − mean δ) / s_l · gain; δ
  itself for no norm; the first sum is 0 at l₀ since δ is 0 there); the losses are those of
  N(x + δ) W_U + b_U with the final norm's recorded scale.  Only the first max(positions) + 1
  tokens are run, and the last layer's δ only at the positions asked.  Windows go ``chunk`` at
  a time (default: ``kernels.windows_per_chunk`` of a window with every layer's patterns and head
  outputs, float32).  Compiled once per architecture, window count and length, positions and
  groups' lowest layers: every snapshot of a run reuses it."""
  cfg = ModelConfig.from_any(config)
  inputs = jnp.atleast_2d(jnp.asarray(inputs, jnp.int32))
  targets = jnp.atleast_2d(jnp.asarray(targets, jnp.int32))
  positions = None if positions is None else tuple(int(p) for p in positions)
  if positions is not None:  # the model is causal: the tokens after the last position are idle
    inputs, targets = inputs[:, :max(positions) + 1], targets[:, :max(positions) + 1]
  L, H, T = cfg.n_layers, cfg.n_heads, inputs.shape[1]
  starts, keep = group_masks(groups, L, H)
  if chunk is None:
    chunk = windows_per_chunk(pattern_preserving_window_bytes(cfg, T), inputs.shape[0])
  return np.asarray(_pattern_preserving_losses(cfg, w, inputs, targets, positions, starts,
                                               jnp.asarray(keep), chunk))


def pattern_preserving_window_bytes(cfg: ModelConfig, T: int) -> int:
  """Bytes one window of T tokens holds in ``pattern_preserving_losses``: one layer's attention
  and the stream (``model.window_bytes``) plus what it records, every layer's patterns and head
  outputs and the streams and norm scales, float32."""
  L, H, D = cfg.n_layers, cfg.n_heads, cfg.d_model
  return window_bytes(cfg, T) + 4 * L * H * T * (T + D) + 4 * T * D * (L + H + 4)


def _norm_linear(cfg: ModelConfig, w: Weights, l: int, d, scale):
  """The linear part of layer ``l``'s norm at the frozen ``scale``: (d − mean d) / scale, times
  the gain for "ln" (its bias cancels in a difference of streams); d itself for no norm."""
  if cfg.norm == "none":
    return d
  y = (d - d.mean(-1, keepdims=True)) / scale
  return y * w.ln_gain[l] if cfg.norm == "ln" else y


@functools.partial(jax.jit, static_argnames=("cfg", "positions", "starts", "chunk"))
def _pattern_preserving_losses(cfg: ModelConfig, w: Weights, inputs, targets, positions, starts,
                               keep, chunk: int):
  L = cfg.n_layers

  def windows(x, y):
    final, patterns, outputs, scales = residual_stream(
        cfg, w, x, keep_patterns=True, keep_head_outputs=True, keep_norm_scales=True)
    linear = lambda l, d: _norm_linear(cfg, w, l, d, scales[l] if scales else None)
    final_scale = scales[L] if scales else None
    pick = (lambda a: a) if positions is None else (lambda a: a[:, jnp.asarray(positions)])
    y = pick(y)

    rows = lambda a, l: a if l < L - 1 or positions is None else a[:, :, jnp.asarray(positions)]

    def ablated(start, mask):  # mask [L, H]: 1 keeps a head
      delta = jnp.zeros_like(final)  # [b, T, D]; after the last layer only at the positions asked
      for l in range(start, L):
        write = -jnp.einsum("bhtd,h->btd", rows(outputs[l], l), 1 - mask[l])
        if l > start:  # the kept heads carry δ on, through the recorded patterns
          v = jnp.einsum("btd,hde->bthe", linear(l, delta), w.W_V[l]) * mask[l][:, None]
          z = jnp.einsum("bhts,bshe->bthe", rows(patterns[l], l), v)
          write = write + jnp.einsum("bthe,hed->btd", z, w.W_O[l])
        delta = (pick(delta) if l == L - 1 else delta) + write
      x = pick(final) + (delta if start < L else 0.0)
      return stream_losses(cfg, w, x, y, None if final_scale is None else pick(final_scale))

    out = [None] * len(starts)
    for start in sorted(set(starts)):
      members = [g for g, st in enumerate(starts) if st == start]
      got = jax.lax.map(lambda m: ablated(start, m), keep[jnp.asarray(members)])
      for i, g in enumerate(members):
        out[g] = got[i]
    return jnp.stack(out, axis=1)  # [b, G, P]

  return map_in_chunks(windows, (inputs, targets), chunk)
