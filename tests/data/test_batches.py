"""reproduce.data.batches: batches are pure functions of (seed, index)."""

import numpy as np
import pytest

from reproduce.data import batches


def test_batches_are_pure_functions_of_seed_and_index():
  tokens = np.arange(1000, dtype=np.uint16) + 5
  a = batches.train_batch(tokens, seed=3, index=7, batch_size=4, n_ctx=16, bos_id=0)
  b = batches.train_batch(tokens, seed=3, index=7, batch_size=4, n_ctx=16, bos_id=0)
  c = batches.train_batch(tokens, seed=3, index=8, batch_size=4, n_ctx=16, bos_id=0)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  inputs, targets = a
  assert np.all(inputs[:, 0] == 0)  # every window starts with BOS
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])  # targets are the next tokens
  np.testing.assert_array_equal(np.diff(targets, axis=1), 1)  # contiguous windows
  with pytest.raises(ValueError, match="fewer than n_ctx"):
    batches.train_batch(tokens[:10], 0, 0, 2, 16, 0)
