"""The model as a Flax NNX module: it owns the weights as parameters, and calling it runs the
pure forward pass of ``reproduce.core.model``."""

from __future__ import annotations

from typing import Optional

from flax import nnx

from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import Weights, init_weights

class FrozenPositions(nnx.Variable):
  """Fixed (sinusoidal) positional embedding: a model variable that the optimiser never updates."""


class AttentionOnlyTransformer(nnx.Module):
  """Flax NNX module owning the stacked weights; calling it runs ``forward``."""

  def __init__(self, config, *, rngs: nnx.Rngs, init_std: float = 0.02,
               qk_init_std: Optional[float] = None, pos_init: str = "learned",
               pos_scale: float = 1.0):
    self.config = ModelConfig.from_any(config)
    w = init_weights(self.config, rngs.params(), init_std=init_std, qk_init_std=qk_init_std,
                     pos_init=pos_init, pos_scale=pos_scale)
    self.W_E, self.W_Q, self.W_K = nnx.Param(w.W_E), nnx.Param(w.W_Q), nnx.Param(w.W_K)
    self.W_V, self.W_O, self.W_U = nnx.Param(w.W_V), nnx.Param(w.W_O), nnx.Param(w.W_U)
    self.W_pos = FrozenPositions(w.W_pos) if pos_init == "sinusoidal" else nnx.Param(w.W_pos)
    if self.config.norm == "ln":
      self.ln_gain, self.ln_final = nnx.Param(w.ln_gain), nnx.Param(w.ln_final)

  def weights(self) -> Weights:
    """The stacked weight pytree (the one view all circuit maths takes)."""
    get = lambda name: getattr(self, name)[...] if hasattr(self, name) else None
    return Weights(W_E=get("W_E"), W_pos=get("W_pos"), W_Q=get("W_Q"), W_K=get("W_K"),
                   W_V=get("W_V"), W_O=get("W_O"), W_U=get("W_U"), ln_gain=get("ln_gain"),
                   ln_final=get("ln_final"))

  def __call__(self, tokens, **kwargs):
    return forward(self.config, self.weights(), tokens, **kwargs)
