"""Training batches: windows of the token stream, each starting with BOS.

Batch ``i`` is a pure function of ``(seed, i)``: its window offsets come from a NumPy generator
seeded with both, so a resumed run sees exactly the batches an uninterrupted one would, and every
process of a multi-host job can draw the same global offsets and read only its own rows.  The
token stream may be a memory-mapped array or a sharded store (``tokenizer.ShardedTokens``); only
the windows asked for are read.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def window_batch(tokens, starts: np.ndarray, n_ctx: int, bos_id: int):
  """Inputs [B, n_ctx] = BOS + tokens[s : s+n_ctx−1]; targets [B, n_ctx] = tokens[s : s+n_ctx]."""
  idx = starts[:, None] + np.arange(n_ctx)[None, :]
  targets = np.asarray(tokens[idx], np.int32)
  inputs = np.concatenate([np.full((len(starts), 1), bos_id, np.int32), targets[:, :-1]], axis=1)
  return inputs, targets


def process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process ``process_index`` of ``process_count`` feeds."""
  if batch_size % process_count:
    raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {process_count} "
                     "processes")
  per = batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def train_batch(tokens, seed: int, index: int, batch_size: int, n_ctx: int, bos_id: int,
                rows: Optional[slice] = None):
  """The ``index``-th training batch: uniformly random windows, fixed by ``(seed, index)``.

  ``rows`` (a slice of ``range(batch_size)``, e.g. ``process_rows(...)``) returns only those
  rows of the global batch, reading only their windows.
  """
  if len(tokens) < n_ctx + 1:
    raise ValueError(f"the training split has {len(tokens)} tokens, fewer than n_ctx={n_ctx}; "
                     "use a larger corpus or a smaller model.n_ctx")
  rng = np.random.default_rng([seed, index])
  starts = rng.integers(0, len(tokens) - n_ctx + 1, size=batch_size)
  if rows is not None:
    starts = starts[rows]
  return window_batch(tokens, starts, n_ctx, bos_id)


def eval_windows(tokens, n_windows: int, n_ctx: int, bos_id: int):
  """Fixed, evenly spaced held-out windows (the same for every run on the same corpus)."""
  if len(tokens) < n_ctx + 1:
    raise ValueError(f"the held-out split has {len(tokens)} tokens, fewer than n_ctx={n_ctx}; "
                     "use a larger corpus, a smaller data.heldout_every or a smaller n_ctx")
  starts = np.linspace(0, len(tokens) - n_ctx, n_windows).astype(np.int64)
  return window_batch(tokens, starts, n_ctx, bos_id)
