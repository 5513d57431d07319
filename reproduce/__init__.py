"""circuits-repro: "A Mathematical Framework for Transformer Circuits" in JAX/Flax.

    import reproduce
    config, weights = reproduce.load("runs/attn2l")          # or a TransformerLens .npz/.safetensors
                                                             # (analysis-ready; fold=False: raw)
    logits, extras = reproduce.forward(config, weights, tokens, return_patterns=True)
"""

from reproduce.loading import load, load_with_meta, weights_of
from reproduce.model import AttentionOnlyTransformer, forward
from reproduce.tl_format import save as save_transformer_lens
from reproduce.weights import ModelConfig, Weights

__all__ = ["load", "load_with_meta", "weights_of", "forward", "save_transformer_lens", "AttentionOnlyTransformer",
           "ModelConfig", "Weights"]
