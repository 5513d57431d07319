"""The model as a Flax NNX module.

``AttentionOnlyTransformer`` owns every weight the architecture has as a parameter, one per field
of ``Weights`` (embeddings, the [layer, head]-stacked W_Q, W_K, W_V, W_O, the unembedding, and
where present the layer-norm gains and biases and the q/k/v/output/unembedding biases).  Its
state is exactly the ``Weights`` pytree: ``weights()`` reads it, ``nnx.state(model)`` holds the
same arrays under the same names, and calling the module runs the pure forward pass
(``reproduce.core.model.forward``, docs/METHODS.md "The forward pass"), so jitted analysis and the
jitted training step both take the pytree while the module is how a user holds a model.

Training initialises the module (``from_config``) and trains its state with a pure, jitted step;
checkpoints store that state, and ``reproduce.load_model`` returns a module again.
"""

from __future__ import annotations

from typing import Optional

import jax
from flax import nnx

from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import Weights, check_weights, init_weights


class FrozenPositions(nnx.Variable):
  """Fixed (sinusoidal) positional embedding: a model variable that the optimiser never updates."""


class AttentionOnlyTransformer(nnx.Module):
  """An attention-only transformer holding its weights; calling it runs ``forward``.

  Give ``weights`` to wrap existing weights (checked against the config), or draw new ones with
  ``init_weights`` from ``key`` (or from ``rngs.params()``) and the init options.
  """

  def __init__(self, config, weights: Optional[Weights] = None, *,
               rngs: Optional[nnx.Rngs] = None, key: Optional[jax.Array] = None,
               init_std: float = 0.02, qk_init_std: Optional[float] = None,
               pos_init: str = "learned", pos_scale: float = 1.0):
    self.config = ModelConfig.from_any(config)
    if weights is None:
      if key is None and rngs is None:
        raise ValueError("AttentionOnlyTransformer needs weights, a key or rngs")
      key = rngs.params() if key is None else key
      weights = init_weights(self.config, key, init_std=init_std, qk_init_std=qk_init_std,
                             pos_init=pos_init, pos_scale=pos_scale)
    check_weights(self.config, weights)
    self.names = tuple(weights.to_dict())
    for name, value in weights.to_dict().items():
      frozen = name == "W_pos" and pos_init == "sinusoidal"
      setattr(self, name, FrozenPositions(value) if frozen else nnx.Param(value))

  @classmethod
  def from_config(cls, config) -> "AttentionOnlyTransformer":
    """The initial model of an experiment config: ``model.*`` init options, key from
    ``train.seed`` (the same draw as ``init_weights(cfg, jax.random.key(seed), ...)``)."""
    m = config.model
    return cls(config, key=jax.random.key(config.train.seed), init_std=m.init_std,
               qk_init_std=m.qk_init_std if m.qk_init_std > 0 else None, pos_init=m.pos_init,
               pos_scale=m.pos_scale)

  def weights(self) -> Weights:
    """The stacked weight pytree (the one view all circuit maths takes)."""
    return Weights.from_dict({name: getattr(self, name)[...] for name in self.names})

  def __call__(self, tokens, **kwargs):
    """``forward(config, self.weights(), tokens, **kwargs)``: (logits, extras)."""
    return forward(self.config, self.weights(), tokens, **kwargs)
