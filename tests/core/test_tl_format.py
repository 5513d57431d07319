"""reproduce.core.tl_format: TransformerLens-format weights: round trips, parity with a NumPy
reference (biases, layer norm, both positional types, 4 layers), the analysis fold, and every
refusal."""

import dataclasses
import json

import numpy as np
import pytest

import reproduce
from reproduce.core import circuits, scores, tl_format
from reproduce.core.model import residual_stream
from reproduce.core.paths import path_expansion, sum_of_paths
from reproduce.core.tl_format import WeightFormatError
from reproduce.core.weights import UnfoldedLayerNormError, check_weights

from tests.support.helpers import random_model, tl_model, write_tl_model
from tests.support.reference import reference_logits, reference_run


@pytest.mark.parametrize("pos, norm", [
    ("standard", None), ("shortformer", "LN"),  # the rest: the same code at other settings
    *(pytest.param(p, n, marks=pytest.mark.slow) for p, n in (
        ("standard", "LN"), ("standard", "LNPre"), ("shortformer", None),
        ("shortformer", "LNPre")))])
def test_four_layer_model_with_biases_matches_the_reference(tmp_path, pos, norm):
  config, state = tl_model(4, pos=pos, norm=norm, seed=len(pos) + len(str(norm)))
  path = write_tl_model(tmp_path, config, state, ".npz" if norm == "LN" else ".safetensors")
  cfg, w = reproduce.load(path, fold=False)
  assert (cfg.n_layers, cfg.pos, cfg.eps) == (4, pos, 1e-4)
  assert cfg.norm == {None: "none", "LN": "ln", "LNPre": "lnpre"}[norm]
  assert cfg.positions_after_norm == (pos == "shortformer" and norm is not None)
  tokens = np.random.default_rng(1).integers(0, config["d_vocab"], (2, config["n_ctx"]))
  logits = np.asarray(reproduce.forward(cfg, w, tokens)[0])
  for b in range(2):
    ref = reference_logits(state, tokens[b], 4, 2, pos=pos, norm=norm, pos_after_norm=True,
                           eps=1e-4)
    np.testing.assert_allclose(logits[b], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
  # The analysis-ready load: same patterns, logits up to one constant per position.
  folded_cfg, folded, meta = reproduce.load_with_meta(path)
  assert meta["folded"] and "fold_problem" not in meta
  assert not folded.has_norm_parameters and folded.b_V is None
  assert (folded.W_Q_pos is not None) == (norm == "LN" and pos == "shortformer")
  assert folded_cfg.norm == ("none" if norm is None else "lnpre")
  f_logits, f_ex = reproduce.forward(folded_cfg, folded, tokens, return_patterns=True)
  _, ex = reproduce.forward(cfg, w, tokens, return_patterns=True)
  np.testing.assert_allclose(f_ex["patterns"], ex["patterns"], rtol=1e-4, atol=1e-5)
  shift = np.asarray(f_logits) - logits
  np.testing.assert_allclose(shift, shift.mean(-1, keepdims=True) + 0 * shift,
                             atol=2e-5 * np.abs(logits).max())
  circuits.ov_eigenvalues(folded)  # analysable


def _log_softmax(a):
  a = np.asarray(a, np.float64)
  top = a.max(-1, keepdims=True)
  return a - top - np.log(np.exp(a - top).sum(-1, keepdims=True))


def _ln_shortformer(tmp_path, n_layers=2, seed=7, **zeroed):
  """A TL-format LN + shortformer model on disk: (config, state, path); ``zeroed`` names state
  keys (without the block prefix, e.g. ``attn.b_Q``) set to zero in every block."""
  config, state = tl_model(n_layers, pos="shortformer", norm="LN", seed=seed)
  for key in zeroed:
    for name in [k for k in state if k.endswith(key)]:
      state[name] = np.zeros_like(state[name])
  return config, state, write_tl_model(tmp_path, config, state)


@pytest.mark.slow  # 3 layers; the fold of LN + shortformer: test_four_layer_...
def test_layer_norm_with_positions_after_it_folds_and_keeps_its_function(tmp_path):
  """Loaded and folded, the model's log-probabilities and patterns equal the float64 reference
  of the raw model (gains, LN biases and every bias random)."""
  config, state, path = _ln_shortformer(tmp_path, n_layers=3)
  cfg, w, meta = reproduce.load_with_meta(path)
  assert meta["folded"] and "fold_problem" not in meta and not w.has_norm_parameters
  assert (cfg.norm, cfg.pos, cfg.pos_after_norm) == ("lnpre", "shortformer", True)
  tokens = np.random.default_rng(3).integers(0, config["d_vocab"], (2, config["n_ctx"]))
  logits, extras = reproduce.forward(cfg, w, tokens, return_patterns=True)
  for b in range(2):
    ref_logits, ref_patterns = reference_run(state, tokens[b], 3, 2, pos="shortformer",
                                             norm="LN", pos_after_norm=True, eps=1e-4)
    np.testing.assert_allclose(_log_softmax(logits[b]), _log_softmax(ref_logits), atol=2e-5)
    np.testing.assert_allclose(np.asarray(extras["patterns"])[:, b], ref_patterns, atol=2e-6)
  np.testing.assert_array_equal(reproduce.load_model(path)(tokens)[0], logits)  # the module
  terms = path_expansion(cfg, w, tokens)  # the paths of the folded model sum to its logits
  np.testing.assert_allclose(sum_of_paths(terms), logits, atol=1e-5 * np.abs(logits).max())


def test_the_training_kernels_run_the_folded_positional_readers_too(tmp_path):
  """Blocked and fused attention add W_pos W_Q_pos, W_pos W_K_pos as the explicit path (checked
  against the reference above) does: the same final residual stream."""
  config, _, path = _ln_shortformer(tmp_path)
  cfg, w = reproduce.load(path)
  tokens = np.random.default_rng(4).integers(0, config["d_vocab"], (2, config["n_ctx"]))
  explicit = np.asarray(residual_stream(cfg, w, tokens)[0])
  for attention in ("blocked", "xla"):
    got = residual_stream(cfg, w, tokens, attention=attention)[0]
    np.testing.assert_allclose(got, explicit, atol=1e-5, err_msg=attention)


def _slow_layer0_patterns(state, tokens, eps):
  """Layer 0's patterns rebuilt from the raw state dict as a sum of the circuit terms the
  folded model should give (no Q/K or LN biases): score · sqrt(d_head) = t_i W_QK t_jᵀ/(s_i s_j)
  + t_i W_QK p_jᵀ/s_i + p_i W_QK t_jᵀ/s_j + p_i W_QK p_jᵀ, here with W_Q = diag(γ) W_Q^raw on
  the token side and the raw W_Q on the position side, written without centring: t = W_E[t]
  − its mean, s = sqrt(var + eps).  [H, T, T]."""
  sd = {k: np.asarray(v, np.float64) for k, v in state.items()}
  gamma = sd["blocks.0.ln1.w"]
  tok = sd["embed.W_E"][tokens]
  tok = tok - tok.mean(-1, keepdims=True)
  s = np.sqrt((tok * tok).mean(-1) + eps)
  pos = sd["pos_embed.W_pos"][:len(tokens)]
  H, T = sd["blocks.0.attn.W_Q"].shape[0], len(tokens)
  out = np.zeros((H, T, T))
  for h in range(H):
    Q, K = sd["blocks.0.attn.W_Q"][h], sd["blocks.0.attn.W_K"][h]
    tq, tk = (tok * gamma) @ Q, (tok * gamma) @ K
    scores = (tq @ tk.T / np.outer(s, s) + (tq / s[:, None]) @ (pos @ K).T
              + (pos @ Q) @ (tk / s[:, None]).T + (pos @ Q) @ (pos @ K).T) / np.sqrt(Q.shape[1])
    for i in range(T):
      a = np.exp(scores[i, :i + 1] - scores[i, :i + 1].max())
      out[h, i, :i + 1] = a / a.sum()
  return out


def test_positional_circuits_of_the_folded_model_rebuild_its_attention(tmp_path):
  """Token-token, token-position, position-token and position-position terms of the folded
  model (``qk_circuit``, ``token_position_qk``, ``positional_qk``) with the per-token 1/s sum to
  layer 0's scores: their softmax is the reference pattern, and each term is the slow one."""
  config, state, path = _ln_shortformer(tmp_path, **{"attn.b_Q": 0, "attn.b_K": 0, "ln1.b": 0})
  cfg, w = reproduce.load(path)
  tokens = np.random.default_rng(5).integers(0, config["d_vocab"], config["n_ctx"])
  _, ref_patterns = reference_run(state, tokens, 2, 2, pos="shortformer", norm="LN",
                                  pos_after_norm=True, eps=1e-4)
  slow = _slow_layer0_patterns(state, tokens, 1e-4)
  np.testing.assert_allclose(slow, ref_patterns[0], atol=1e-10)  # the slow split is the model

  E = np.asarray(w.W_E, np.float64)
  s = np.sqrt((E[tokens] ** 2).mean(-1) + 1e-4)  # W_E is centred by the fold
  T, dh = len(tokens), cfg.d_head
  tok_tok = np.asarray(circuits.qk_circuit(w).rows(tokens), np.float64)[..., tokens]
  tok_pos, pos_tok = circuits.token_position_qk(w)
  tok_pos = np.asarray(tok_pos.rows(tokens), np.float64)[..., :T]
  pos_tok = np.asarray(pos_tok.columns(tokens), np.float64)[..., :T, :]
  pos_pos = np.asarray(circuits.positional_qk(w), np.float64)[..., :T, :T]
  scores = ((tok_tok / np.outer(s, s) + tok_pos / s[:, None] + pos_tok / s[None, :]) / np.sqrt(dh)
            + pos_pos)[0]
  causal = np.tril(np.ones((T, T), bool))
  scores = np.where(causal, scores, -np.inf)
  patterns = np.exp(scores - scores.max(-1, keepdims=True))
  np.testing.assert_allclose(patterns / patterns.sum(-1, keepdims=True), slow, atol=2e-5)
  sd = {k: np.asarray(v, np.float64) for k, v in state.items()}
  P, Q, K = sd["pos_embed.W_pos"], sd["blocks.1.attn.W_Q"][1], sd["blocks.1.attn.W_K"][1]
  np.testing.assert_allclose(circuits.positional_qk(w)[1, 1], (P @ Q) @ (P @ K).T / np.sqrt(dh),
                             rtol=1e-5, atol=1e-5)


def _standard_twin(config, state):
  """The same weights as a TL standard-position model with W_pos = 0."""
  state = dict(state, **{"pos_embed.W_pos": np.zeros_like(state["pos_embed.W_pos"])})
  return dict(config, positional_embedding_type="standard"), state


@pytest.mark.slow
def test_token_path_equals_the_standard_model_with_no_positions(tmp_path):
  """Every token-path weight and circuit of the folded LN + shortformer model equals our fold of
  the same weights as a standard model with W_pos = 0 (that fold is checked against
  TransformerLens: tools/check_transformer_lens.py)."""
  config, state, path = _ln_shortformer(tmp_path / "shortformer", n_layers=3)
  _, w = reproduce.load(path)
  _, twin = reproduce.load(write_tl_model(tmp_path / "standard", *_standard_twin(config, state)))
  for name in ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_U", "b_Q", "b_K", "b_O", "b_U"):
    np.testing.assert_allclose(getattr(w, name), getattr(twin, name), atol=1e-6, err_msg=name)
  assert twin.W_Q_pos is None and w.b_V is None and twin.b_V is None
  for full in (True, False):
    for fn in (circuits.ov_eigenvalues, circuits.qk_eigenvalues):
      np.testing.assert_allclose(np.sort_complex(fn(w, full)), np.sort_complex(fn(twin, full)),
                                 atol=1e-4)
  np.testing.assert_allclose(circuits.positivity(circuits.ov_eigenvalues(w)),
                             circuits.positivity(circuits.ov_eigenvalues(twin)), atol=1e-5)
  for kind in circuits.COMPOSITION_KINDS:
    np.testing.assert_allclose(circuits.composition_scores(w, kind),
                               circuits.composition_scores(twin, kind), atol=1e-5)
  np.testing.assert_allclose(circuits.k_composition_qk_eigenvalues(w, 0, 1),
                             circuits.k_composition_qk_eigenvalues(twin, 0, 1), atol=1e-4)
  ours, theirs = circuits.skip_trigrams(w, [2, 5], k=4), circuits.skip_trigrams(twin, [2, 5], k=4)
  for key in ours:
    np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=key)


def test_positional_readers_are_checked_and_never_saved_as_transformer_lens(tmp_path):
  _, _, path = _ln_shortformer(tmp_path)
  cfg, w = reproduce.load(path)
  _, raw, meta = reproduce.load_with_meta(path, fold=False)  # raw gains: still refused
  assert not meta["folded"] and raw.W_Q_pos is None
  with pytest.raises(UnfoldedLayerNormError, match="layer norm folded"):
    circuits.positional_qk(raw)
  with pytest.raises(WeightFormatError, match="positional readers"):
    reproduce.save_transformer_lens(tmp_path / "folded.npz", cfg, w)
  with pytest.raises(ValueError, match="W_K_pos needs its partner"):
    check_weights(cfg, w.replace(W_Q_pos=None))
  with pytest.raises(ValueError, match="does not add shortformer positions after a norm"):
    check_weights(dataclasses.replace(cfg, pos="standard"), w)
  with pytest.raises(ValueError, match="W_Q_pos has shape"):
    check_weights(cfg, w.replace(W_Q_pos=w.W_Q_pos[:, :1]))


def test_a_smeared_key_model_is_never_saved_as_transformer_lens(tmp_path):
  cfg, w = random_model(n_layers=1)
  cfg = dataclasses.replace(cfg, smear_keys=True)
  w = w.replace(smear=np.zeros((1, cfg.n_heads), np.float32))
  with pytest.raises(WeightFormatError, match="smeared-key model") as e:
    reproduce.save_transformer_lens(tmp_path / "smeared.npz", cfg, w)
  assert "\n" not in str(e.value) and not (tmp_path / "smeared.npz").exists()


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip_and_parity(tmp_path, suffix):
  cfg, w = random_model(n_layers=2)
  path = reproduce.save_transformer_lens(tmp_path / f"model{suffix}", cfg, w)
  cfg2, w2 = reproduce.load(path, fold=False)
  assert cfg2 == cfg
  for name, a in w.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(w2, name)), np.asarray(a))
  tokens = np.random.default_rng(0).integers(0, cfg.d_vocab, cfg.n_ctx)
  state = tl_format.to_state_dict(cfg, w)
  ref = reference_logits(state, tokens, cfg.n_layers, cfg.n_heads, pos=cfg.pos)
  np.testing.assert_allclose(reproduce.forward(cfg2, w2, tokens)[0][0], ref, rtol=1e-4, atol=1e-4)


def test_state_dict_with_tl_buffers_and_standard_positions_loads(tmp_path):
  cfg, w = random_model(n_layers=1, pos="standard")
  state = tl_format.to_state_dict(cfg, w)
  state["blocks.0.attn.mask"] = np.tril(np.ones((cfg.n_ctx, cfg.n_ctx), bool))
  state["blocks.0.attn.IGNORE"] = np.array(-1e5, np.float32)
  np.savez(tmp_path / "tl.npz", **state)  # no embedded config: inferred, TL's default positions
  cfg2, w2 = reproduce.load(tmp_path / "tl.npz", fold=False)
  assert cfg2 == cfg and cfg2.pos == "standard"
  tokens = np.arange(cfg.n_ctx) % cfg.d_vocab
  ref = reference_logits(state, tokens, 1, cfg.n_heads, pos="standard")
  np.testing.assert_allclose(reproduce.forward(cfg2, w2, tokens)[0][0], ref, rtol=1e-4, atol=1e-4)


def test_given_config_wins(tmp_path):
  cfg, w = random_model(n_layers=1)
  np.savez(tmp_path / "tl.npz", **tl_format.to_state_dict(cfg, w))
  tl_config = tl_format.tl_config_of(cfg)
  assert reproduce.load(tmp_path / "tl.npz", tl_config=tl_config)[0].pos == "shortformer"
  (tmp_path / "config.json").write_text(json.dumps(tl_config))  # a sidecar works too
  assert reproduce.load(tmp_path / "tl.npz")[0].pos == "shortformer"


def _state(**changes):
  cfg, w = random_model(n_layers=1)
  state = tl_format.to_state_dict(cfg, w)
  state.update(changes)
  return cfg, state


def test_biases_round_trip_and_zero_biases_are_dropped(tmp_path):
  config, state = tl_model(2, norm="LN")
  cfg, w = tl_format.from_state_dict(state, config)
  assert w.b_V is not None and w.ln_bias is not None
  cfg2, w2 = reproduce.load(reproduce.save_transformer_lens(tmp_path / "m.npz", cfg, w),
                            fold=False)
  assert cfg2 == cfg
  for name, a in w.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(w2, name)), np.asarray(a))
  _, plain = tl_format.from_state_dict(tl_format.to_state_dict(*random_model(n_layers=1)))
  assert not plain.has_biases  # the explicit zero biases of to_state_dict come back as None


def test_our_order_of_positions_and_layer_norm_is_never_saved_as_transformer_lens(tmp_path):
  cfg, w = random_model(n_layers=1, norm="ln")  # shortformer, LN(x + W_pos)
  assert not cfg.pos_after_norm
  with pytest.raises(WeightFormatError, match="no TransformerLens equivalent"):
    reproduce.save_transformer_lens(tmp_path / "m.npz", cfg, w)
  assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("change, message", [
    (dict(positional_embedding_type="rotary", rotary_dim=3), "rotary and alibi are not"),
    (dict(n_key_value_heads=1), "grouped-query attention"),
    (dict(attn_only=False, d_mlp=40), "MLP layers"),
    (dict(normalization_type="RMS"), "normalization_type 'RMS' is not supported"),
    (dict(attn_scale=1.0), "attn_scale=1.0 is not sqrt"),
    (dict(attention_dir="bidirectional"), "causal only"),
    (dict(n_heads="2"), "n_heads must be an integer"),
    (dict(eps=0), "eps must be a positive number"),
])
def test_unsupported_configs_are_refused(tmp_path, change, message):
  config, state = tl_model(1, norm=None)
  path = write_tl_model(tmp_path, dict(config, **change), state)
  with pytest.raises(WeightFormatError, match=message):
    reproduce.load(path)


@pytest.mark.parametrize("key, message", [
    ("blocks.0.mlp.W_in", "MLP layers"), ("blocks.0.ln2.w", "MLP layers"),
    ("blocks.0.attn.rotary_sin", "rotary"), ("blocks.0.attn.W_X", "unknown keys"),
])
def test_unsupported_keys_are_refused(key, message):
  config, state = tl_model(1, norm=None)
  state[key] = np.zeros(3, np.float32)
  with pytest.raises(WeightFormatError, match=message):
    tl_format.from_state_dict(state, config)


def test_config_files_that_cannot_be_used(tmp_path):
  config, state = tl_model(1, norm=None)
  path = write_tl_model(tmp_path, config, state)
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(WeightFormatError, match=r"config\.json: not valid JSON"):
    reproduce.load(path)
  cfg, w = random_model(n_layers=1, pos="standard")
  saved = reproduce.save_transformer_lens(tmp_path / "ours.npz", cfg, w)  # embeds its config
  (tmp_path / "config.json").write_text(json.dumps(dict(tl_format.tl_config_of(cfg), n_ctx=99)))
  with pytest.raises(WeightFormatError, match="n_ctx=99 but the config inside ours.npz"):
    reproduce.load(saved)


def test_shape_mismatch_is_refused():
  cfg, state = _state()
  state["blocks.0.attn.W_O"] = np.zeros((cfg.n_heads, cfg.d_head + 1, cfg.d_model), np.float32)
  with pytest.raises(WeightFormatError, match=r"blocks\.0\.attn\.W_O has shape"):
    tl_format.from_state_dict(state, tl_format.tl_config_of(cfg))


def test_unknown_key_is_refused():
  cfg, state = _state(**{"blocks.0.attn.W_in": np.zeros((3, 3), np.float32)})
  with pytest.raises(WeightFormatError, match=r"unknown keys \['blocks\.0\.attn\.W_in'\]"):
    tl_format.from_state_dict(state, tl_format.tl_config_of(cfg))


def test_non_causal_mask_and_mlp_config_are_refused():
  cfg, state = _state(**{"blocks.0.attn.mask": np.ones((10, 10), bool)})
  with pytest.raises(WeightFormatError, match="not a causal mask"):
    tl_format.from_state_dict(state, tl_format.tl_config_of(cfg))
  with pytest.raises(WeightFormatError, match="MLP"):
    tl_format.from_state_dict(_state()[1], dict(tl_format.tl_config_of(cfg), attn_only=False))


def test_pickles_are_refused(tmp_path):
  (tmp_path / "model.pt").write_bytes(b"\x80\x04not really")  # .pt: read only as torch's zip
  with pytest.raises(WeightFormatError, match=r"model\.pt: a bare pickle, not PyTorch's zip"):
    reproduce.load(tmp_path / "model.pt")
  (tmp_path / "model.pkl").write_bytes(b"\x80\x04not really")
  with pytest.raises(WeightFormatError, match="bare pickles and are never loaded"):
    reproduce.load(tmp_path / "model.pkl")
  np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
  with pytest.raises(WeightFormatError, match="pickled objects"):
    reproduce.load(tmp_path / "objects.npz")
  (tmp_path / "text.npz").write_text("W_E = [1, 2, 3]\n")
  with pytest.raises(WeightFormatError, match=r"text\.npz: not a \.npz file"):
    reproduce.load(tmp_path / "text.npz")


def test_missing_and_corrupt_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="no weight file"):
    reproduce.load(tmp_path / "absent.safetensors")
  (tmp_path / "bad.safetensors").write_bytes(b"garbage")
  with pytest.raises(WeightFormatError, match="not a readable .safetensors"):
    reproduce.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("change, message", [
    ({"blocks.0.attn.W_V": np.full((2, 10, 3), np.nan, np.float32)}, "non-finite values"),
    ({"embed.W_E": np.zeros((17, 10), np.int32)}, "dtype int32, expected floating point"),
    ({"ln_final.w": np.ones(10, np.float32)}, "layer-norm weights"),
    ({"blocks.0.attn.mask": np.ones((8, 8), bool)}, "not a causal mask"),
])
def test_bad_tensors_are_refused(change, message):
  config, state = tl_model(1, norm=None)
  state.update(change)
  with pytest.raises(WeightFormatError, match=message):
    tl_format.from_state_dict(state, config)


def test_missing_weight_is_named():
  config, state = tl_model(2, norm="LN")
  del state["blocks.1.ln1.w"]
  with pytest.raises(WeightFormatError, match=r"missing weight blocks\.1\.ln1\.w"):
    tl_format.from_state_dict(state, config)


@pytest.mark.parametrize("ignore, ok", [(-1e5, True), (-np.inf, True), (0.0, False),
                                        (np.array([-1e5, -1e5]), False)])
def test_ignore_buffer_is_checked(ignore, ok):
  config, state = tl_model(1, norm=None)
  state["blocks.0.attn.IGNORE"] = np.asarray(ignore, np.float32)
  if ok:
    tl_format.from_state_dict(state, config)
  else:
    with pytest.raises(WeightFormatError, match=r"blocks\.0\.attn\.IGNORE is .* ≤ -1e4"):
      tl_format.from_state_dict(state, config)


def test_missing_unembedding_bias_is_zero():
  config, state = tl_model(2, norm=None)
  del state["unembed.b_U"]
  cfg, w = tl_format.from_state_dict(state, config)
  assert w.b_U is None
  tokens = np.arange(8) % 17
  ref = reference_logits(state, tokens, 2, 2, pos="standard", eps=1e-4)
  np.testing.assert_allclose(reproduce.forward(cfg, w, tokens)[0][0], ref, rtol=1e-4, atol=1e-5)


def test_transformer_lens_weights_give_the_same_scores(tmp_path):
  cfg, w = random_model(n_layers=2, seed=9)
  cfg2, w2 = reproduce.load(reproduce.save_transformer_lens(tmp_path / "m.safetensors", cfg, w))
  np.testing.assert_array_equal(circuits.ov_eigenvalues(w), circuits.ov_eigenvalues(w2))
  for kind in ("q", "k", "v"):
    np.testing.assert_array_equal(circuits.composition_scores(w, kind),
                                  circuits.composition_scores(w2, kind))
  pool = np.arange(1, cfg.d_vocab)
  np.testing.assert_array_equal(scores.prefix_matching_score(cfg, w, pool, 0, length=4),
                                scores.prefix_matching_score(cfg2, w2, pool, 0, length=4))
