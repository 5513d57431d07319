"""Models built by hand, whose heads' roles are known by construction (docs/METHODS.md, "Known
circuits: models built by hand").

Every weight is set, none trained: one-hot token and position codes in separate blocks of the
residual stream, and heads that read and write those blocks.  What each head does, and so which
role each criterion must give it, follows from its weights alone; measuring the models with the
core's scores is a check of the scores (and of the criteria that read them), and
``simplest_induction_model`` is FW's "simplest way an induction head could be made" at work.

Both models share one residual layout (``residual_blocks``), d_model = 2·d_vocab + n_ctx + 1:

    token     [0, V)            one-hot of the current token (W_E); the only block W_U reads
    side      [V, 2V)           a second token block that W_U does not read: the previous token
                                (simplest_induction), what the positional heads move (head_zoo)
    position  [2V, 2V + T)      one-hot of the position (W_pos: Q/K inputs only, "shortformer")
    constant  2V + T            1 for every token (W_E), a bias the queries can read

Token ``BOS_ID`` (0) is BOS: every probe starts with it, and no head copies it.  Attention scores
are set in nats, after the model's 1/sqrt(d_head): a one-hot query entry and key entry of
sqrt(s · sqrt(d_head)) each give the score s.  No layer norm, no biases.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, Tuple

import jax.numpy as jnp
import numpy as np

from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights

ROLES = ("previous_token", "induction", "copying", "positional", "inactive")

BOS_ID = 0  # the token every probe starts with; the random tokens are every other id
MATCH_SCORE = 30.0  # nats: a query–key match (previous position, same token, BOS for a BOS head)
BOS_SCORE = 15.0  # nats: the induction head's rest on BOS, half way below a match
COPY_GAIN = 10.0  # logit a copying head adds to the token it attends to (loss ≈ V e^-10)


@dataclasses.dataclass(frozen=True)
class KnownModel:
  """A hand-built model and the roles of its heads by construction."""

  name: str  # "simplest_induction", "head_zoo"
  cfg: ModelConfig
  weights: Weights
  # EVERY head (layer, head) → its roles by construction (a subset of ROLES);
  # frozenset({"inactive"}) for a head that writes nothing
  roles: Dict[Tuple[int, int], FrozenSet[str]]
  bos_id: int  # the token every probe starts with (BOS)
  description: str  # one paragraph: how it is built


def residual_blocks(d_vocab: int, n_ctx: int) -> Dict[str, slice]:
  """The residual stream's blocks shared by both models ("token", "side", "position",
  "constant"), as slices of d_model = 2·d_vocab + n_ctx + 1 (module docstring)."""
  V, T = d_vocab, n_ctx
  return {"token": slice(0, V), "side": slice(V, 2 * V), "position": slice(2 * V, 2 * V + T),
          "constant": slice(2 * V + T, 2 * V + T + 1)}


def _check_sizes(d_vocab: int, n_ctx: int) -> None:
  if int(d_vocab) < 2 or int(n_ctx) < 2:
    raise ValueError(f"a known-circuit model needs d_vocab ≥ 2 (BOS and a token) and "
                     f"n_ctx ≥ 2, got d_vocab={d_vocab}, n_ctx={n_ctx}")


class _Builder:
  """Zero weights of an L × H model on the shared layout, filled head by head (NumPy float64,
  returned as float32 ``Weights``)."""

  def __init__(self, n_layers: int, n_heads: int, d_head: int, d_vocab: int, n_ctx: int):
    V, T = d_vocab, n_ctx
    self.V, self.T, self.E = V, T, d_head
    self.D = 2 * V + T + 1
    self.const = 2 * V + T  # residual index of the constant
    self.cfg = ModelConfig(n_layers=n_layers, n_heads=n_heads, d_head=d_head, d_model=self.D,
                           d_vocab=V, n_ctx=T, pos="shortformer", norm="none")
    L, H, D, E = n_layers, n_heads, self.D, d_head
    self.W_E = np.zeros((V, D))
    self.W_E[np.arange(V), np.arange(V)] = 1.0
    self.W_E[:, self.const] = 1.0
    self.W_pos = np.zeros((T, D))
    self.W_pos[np.arange(T), 2 * V + np.arange(T)] = 1.0
    self.W_U = np.zeros((D, V))
    self.W_U[np.arange(V), np.arange(V)] = 1.0  # logits read the token block only
    self.W_Q, self.W_K = np.zeros((L, H, D, E)), np.zeros((L, H, D, E))
    self.W_V, self.W_O = np.zeros((L, H, D, E)), np.zeros((L, H, E, D))

  def tok(self, t: int) -> int:
    """Residual index of token t's one-hot in the token block."""
    return t

  def side(self, t: int) -> int:
    """… of token t in the side block."""
    return self.V + t

  def pos(self, p: int) -> int:
    """… of position p."""
    return 2 * self.V + p

  def entry(self, score: float) -> float:
    """The query (and key) entry that makes a one-hot match score ``score`` nats."""
    return float(np.sqrt(score * np.sqrt(self.E)))

  def match(self, l: int, h: int, pairs, score: float = MATCH_SCORE) -> None:
    """Query dimension e of head (l, h) reads residual index q, its key reads k, for each
    (q, k, e) of ``pairs``: the score of a destination holding q and a source holding k is
    ``score``."""
    c = self.entry(score)
    for q, k, e in pairs:
      self.W_Q[l, h, q, e] = c
      self.W_K[l, h, k, e] = c

  def move(self, l: int, h: int, pairs, gain: float = 1.0) -> None:
    """Value dimension e of head (l, h) reads residual index r and writes ``gain`` to w, for each
    (r, w, e) of ``pairs``."""
    for r, w, e in pairs:
      self.W_V[l, h, r, e] = 1.0
      self.W_O[l, h, e, w] = gain

  def previous_position(self, l: int, h: int) -> None:
    """QK from positions only: destination i matches source i − 1 (i ≥ 1; position 0 has only
    itself)."""
    self.match(l, h, [(self.pos(i), self.pos(i - 1), i - 1) for i in range(1, self.T)])

  def to_side(self, l: int, h: int) -> None:
    """OV: the attended token's one-hot into the side block (which W_U does not read)."""
    self.move(l, h, [(self.tok(t), self.side(t), t) for t in range(self.V)])

  def weights(self) -> Weights:
    f = lambda a: jnp.asarray(a, jnp.float32)
    return Weights(W_E=f(self.W_E), W_pos=f(self.W_pos), W_Q=f(self.W_Q), W_K=f(self.W_K),
                   W_V=f(self.W_V), W_O=f(self.W_O), W_U=f(self.W_U))


def _roles(table) -> Dict[Tuple[int, int], FrozenSet[str]]:
  return {head: frozenset(roles) for head, roles in table.items()}


def simplest_induction_model(d_vocab: int = 64, n_ctx: int = 64) -> KnownModel:
  """FW's simplest induction head: 2 layers × 1 head, d_head = max(d_vocab, n_ctx − 1).

  L0H0, previous-token head: its QK reads positions only (destination i matches source i − 1,
  MATCH_SCORE nats); its OV writes the attended token into the side block, so position i holds
  "my previous token was t" where W_U does not read it.  Roles: previous_token, positional.

  L1H0, induction head: query dimension t reads the current token t, key dimension t reads the
  side block's t (K-composition with L0H0), for every token t but BOS: a destination holding A
  scores MATCH_SCORE on every source whose previous token was A, the token after an earlier copy.
  Query dimension 0 reads the constant, key dimension 0 reads BOS's token one-hot: every query
  scores BOS_SCORE on BOS, so with no earlier copy the softmax rests there.  Its OV copies every
  token but BOS into the token block with COPY_GAIN (W_E W_OV W_U = COPY_GAIN on the diagonal,
  0 for BOS), and BOS's value is zero: resting on BOS writes nothing.  Roles: induction, copying.
  """
  _check_sizes(d_vocab, n_ctx)
  V, T = d_vocab, n_ctx
  b = _Builder(2, 1, max(V, T - 1), V, T)
  b.previous_position(0, 0)
  b.to_side(0, 0)
  tokens = range(1, V)  # every token but BOS (0)
  b.match(1, 0, [(b.tok(t), b.side(t), t) for t in tokens])
  b.match(1, 0, [(b.const, b.tok(BOS_ID), 0)], BOS_SCORE)
  b.move(1, 0, [(b.tok(t), b.tok(t), t) for t in tokens], COPY_GAIN)
  description = (
      f"FW's simplest induction head, built by hand: 2 layers × 1 head, no layer norm or biases, "
      f"shortformer positions; residual stream of {b.D} = 2·{V} + {T} + 1 dimensions: the current "
      f"token's one-hot (the only block W_U reads), the previous token's one-hot (written by "
      f"L0H0), the position's one-hot (queries and keys only) and a constant 1.  L0H0 attends "
      f"from position i to i − 1 by positions alone ({MATCH_SCORE:g} nats) and writes the "
      f"attended token into the previous-token block.  L1H0's query reads the current token and "
      f"its key the previous-token block (K-composition), so a token A attends to the position "
      f"after an earlier A ({MATCH_SCORE:g} nats); every query also scores {BOS_SCORE:g} nats on "
      f"BOS (constant dimension against BOS's one-hot), where it rests when A has no earlier "
      f"copy; its OV copies the attended token to the logits (+{COPY_GAIN:g}) and BOS's value is "
      f"zero.  Token {BOS_ID} is BOS.")
  return KnownModel(
      name="simplest_induction", cfg=b.cfg, weights=b.weights(),
      roles=_roles({(0, 0): {"previous_token", "positional"}, (1, 0): {"induction", "copying"}}),
      bos_id=BOS_ID, description=description)


def head_zoo_model(d_vocab: int = 64, n_ctx: int = 64) -> KnownModel:
  """One head of each simple kind: 2 layers × 3 heads, d_head = max(d_vocab, n_ctx).

  L0H0, copying: QK by content (query dimension t reads token t, key dimension t reads token t,
  every token but BOS), so a token attends to its own position and its earlier copies; OV copies
  the attended token to the logits (W_E W_OV W_U = COPY_GAIN on the diagonal but BOS).  Roles:
  copying.
  L0H1, positional: attends to its own position (position p against position p); OV moves the
  token into the side block.  Roles: positional.
  L1H1, positional: every position's query matches position 0's key: it attends to BOS whatever
  the tokens; OV into the side block.  Roles: positional.
  L1H2, previous-token: destination i matches source i − 1 by positions; OV into the side block.
  Roles: previous_token, positional.
  L0H2 and L1H0: every weight zero.  Roles: inactive.
  """
  _check_sizes(d_vocab, n_ctx)
  V, T = d_vocab, n_ctx
  b = _Builder(2, 3, max(V, T), V, T)
  tokens = range(1, V)
  b.match(0, 0, [(b.tok(t), b.tok(t), t) for t in tokens])
  b.move(0, 0, [(b.tok(t), b.tok(t), t) for t in tokens], COPY_GAIN)
  b.match(0, 1, [(b.pos(p), b.pos(p), p) for p in range(T)])
  b.to_side(0, 1)
  b.match(1, 1, [(b.pos(p), b.pos(0), 0) for p in range(T)])
  b.to_side(1, 1)
  b.previous_position(1, 2)
  b.to_side(1, 2)
  description = (
      f"A zoo of simple heads, built by hand: 2 layers × 3 heads, no layer norm or biases, "
      f"shortformer positions, on the residual layout of the simplest induction model ({b.D} = "
      f"2·{V} + {T} + 1 dimensions: token one-hot read by W_U, a side token block W_U does not "
      f"read, position one-hot, a constant).  L0H0 copies: its query and key read the token, "
      f"so it attends to its own token's positions, and its OV raises the attended token's "
      f"logit (+{COPY_GAIN:g}).  L0H1 attends to its own position and L1H1 to position 0 (BOS), "
      f"by positions alone; L1H2 attends to the previous position.  All three move the attended "
      f"token into the side block, so they write without raising any logit.  L0H2 and L1H0 are "
      f"all zeros.  Token {BOS_ID} is BOS.")
  inactive = {"inactive"}
  return KnownModel(
      name="head_zoo", cfg=b.cfg, weights=b.weights(),
      roles=_roles({(0, 0): {"copying"}, (0, 1): {"positional"}, (0, 2): inactive,
                    (1, 0): inactive, (1, 1): {"positional"},
                    (1, 2): {"previous_token", "positional"}}),
      bos_id=BOS_ID, description=description)
