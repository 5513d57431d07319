"""Head roles: which heads are previous-token heads and which are induction heads, by one
definition shared by every figure."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from reproduce.core import scores
from reproduce.figure.sources import Model


@dataclasses.dataclass
class HeadRoles:
  """Previous-token scores (held-out text, or the prefix-matching probe without a tokenizer) and
  IH's prefix-matching scores (``scores.prefix_matching_score``, the one induction criterion of
  every figure), [L, H]; ``probe`` says what they were measured on."""

  previous_token: np.ndarray
  induction: np.ndarray  # prefix-matching scores: a head at ≥ threshold is an induction head
  threshold: float
  probe: str = ""

  def previous_token_head(self, before_layer: Optional[int] = None):
    """(layer, head) of the strongest previous-token head in the layers before ``before_layer``
    (default: every layer but the last, the ones a later head can read)."""
    L = self.previous_token.shape[0]
    limit = max(1, L - 1 if before_layer is None else before_layer)
    l, h = np.unravel_index(np.argmax(self.previous_token[:limit]), self.previous_token[:limit].shape)
    return int(l), int(h)

  def previous_token_heads(self):
    """Every (layer, head) with previous-token score ≥ threshold, in any layer."""
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(self.previous_token >= self.threshold))]

  def induction_heads(self):
    """Every (layer, head) with prefix-matching score ≥ threshold, in any layer."""
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(self.induction >= self.threshold))]

  def criterion(self) -> str:
    return f"prefix-matching score ≥ {self.threshold:g} (IH's probe, scores.prefix_matching_score)"

  def label(self, layer: int, head: int) -> str:
    tags = []
    if self.previous_token[layer, head] >= self.threshold:
      tags.append("prev")
    if self.induction[layer, head] >= self.threshold:
      tags.append("induction")
    return f"L{layer}H{head}" + (f" ({', '.join(tags)})" if tags else "")


def head_roles(model: Model, threshold: float = 0.3, text_windows: int = 16) -> HeadRoles:
  """Every head's previous-token score on ``text_windows`` held-out windows and its prefix-matching
  score on IH's probe (``scores.prefix_matching_score`` with its defaults: the same number in every
  figure).  Without a tokenizer the previous-token score comes from that probe too, its tokens
  uniform over the vocabulary but BOS (``Model.sampling_pool``, ``Model.bos_id``)."""
  pool = model.sampling_pool()
  probe, length = scores.prefix_probe(model.cfg.n_ctx, pool, model.bos_id)
  repeats = (f"BOS + {length} random tokens × {scores.PREFIX_REPEATS} "
             f"({scores.PREFIX_SAMPLES} samples)")
  prefix = np.asarray(scores.prefix_matching_score(model.cfg, model.weights, pool, model.bos_id))
  if model.tokens is not None:
    text = model.heldout_windows(text_windows)[0]
    described = (f"previous-token score on {text_windows} held-out text windows; prefix-matching "
                 f"score on {repeats}, tokens from the corpus's middle frequencies")
  else:
    text = probe
    described = (f"no tokenizer: previous-token and prefix-matching scores both on {repeats}, "
                 f"tokens uniform over the vocabulary but BOS; BOS = token {model.bos_id} "
                 f"({model.bos_source})")
  previous = scores.previous_token_on(model.cfg, model.weights, text)
  return HeadRoles(previous, prefix, threshold, described)
