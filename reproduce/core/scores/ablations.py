"""Zero-ablation of heads: the weights with heads' W_O set to 0 (total, not direct-only, ablation),
and the per-window losses at chosen positions with each group of heads ablated, from one shared
unablated pass.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core.kernels import items_per_chunk, map_in_chunks
from reproduce.core.model import ModelConfig, head_values, token_losses, unembed, window_bytes
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
