"""reproduce.core.module: the Flax NNX module holds the weights and computes the reference's
function; training starts from it and load_model returns it."""

import numpy as np
import pytest
from flax import nnx

from reproduce.core.model import ModelConfig, forward
from reproduce.core.module import AttentionOnlyTransformer
from reproduce.core.tl_format import to_state_dict

from tests.support.helpers import random_model, with_random_biases
from tests.support.reference import reference_logits


def test_nnx_module_holds_the_same_weights():
  cfg = ModelConfig(2, 2, 4, 8, 20, 6)
  model = AttentionOnlyTransformer(cfg, rngs=nnx.Rngs(0), pos_init="sinusoidal")
  params = nnx.state(model, nnx.Param)
  assert "W_pos" not in params and "W_Q" in params  # fixed positions are not parameters
  tokens = np.arange(6)[None] % 20
  np.testing.assert_allclose(model(tokens)[0], forward(cfg, model.weights(), tokens)[0])
  import reproduce  # pylint: disable=import-outside-toplevel
  np.testing.assert_array_equal(reproduce.weights_of(model).W_Q, model.weights().W_Q)


@pytest.mark.parametrize("pos, pos_after_norm, norm", [
    ("shortformer", False, "ln"), ("shortformer", True, "ln"), ("standard", False, "ln"),
    ("shortformer", False, "none")])
def test_nnx_module_with_norms_and_biases_matches_the_numpy_reference(pos, pos_after_norm, norm):
  """The module carries every parameter (norm gains and biases, q/k/v/output/unembedding
  biases) and its call is the float64 reference's function."""
  cfg, w = random_model(n_layers=2, pos=pos, norm=norm, pos_after_norm=pos_after_norm, eps=1e-4)
  w = with_random_biases(w, seed=3)
  model = AttentionOnlyTransformer(cfg, w)
  state = nnx.to_pure_dict(nnx.state(model))
  assert set(state) == set(w.to_dict())  # nothing dropped: every weight is module state
  for name, value in w.to_dict().items():
    np.testing.assert_array_equal(state[name], value)
  tokens = np.random.default_rng(1).integers(0, cfg.d_vocab, (1, cfg.n_ctx))
  ref = reference_logits(to_state_dict(cfg, w), tokens[0], 2, cfg.n_heads, pos=pos,
                         norm={"none": None, "ln": "LN"}[norm], pos_after_norm=pos_after_norm,
                         eps=1e-4)
  np.testing.assert_allclose(np.asarray(model(tokens)[0][0]), ref, rtol=1e-4,
                             atol=1e-5 * np.abs(ref).max())


def test_training_starts_from_the_module_and_load_model_returns_it(trained_2l):
  """Step 0 of a run is ``AttentionOnlyTransformer.from_config``'s state, and the final
  checkpoint read back as a module holds the trained weights bit for bit."""
  import reproduce  # pylint: disable=import-outside-toplevel
  config = trained_2l.config
  initial = AttentionOnlyTransformer.from_config(config).weights()
  step0 = reproduce.load(trained_2l.workdir / "snapshots" / "0", fold=False)[1]
  for name, value in initial.to_dict().items():
    np.testing.assert_array_equal(getattr(step0, name), value)
  model = reproduce.load_model(trained_2l.workdir, fold=False)
  assert isinstance(model, AttentionOnlyTransformer)
  for name, value in trained_2l.weights.to_dict().items():
    np.testing.assert_array_equal(nnx.to_pure_dict(nnx.state(model))[name], value)
