"""reproduce.core.model_folder: the published folder layouts: attn-only-Nl (training config,
checkpoints/), attn-only-2l-demo, redwood_attn_2l (LN + shortformer), ARENA's 16-bit folder
without a config, folders written by real torch, and the rules that pick a folder's files."""

import json

import numpy as np
import pytest

import reproduce
from reproduce.core import circuits, model_folder
from reproduce.core.tl_format import WeightFormatError

from tests.support import torch_zip_writer as tzw
from tests.support.helpers import one_line, tl_model
from tests.support.paths import TORCH_ZIP_FIXTURES as FIXTURES
from tests.support.reference import reference_logits


def _fixture_state(name):
  expected = np.load(FIXTURES / "expected.npz")
  return {k.split("/")[-1]: expected[k] for k in expected.files if k.startswith(name + "/")}


def test_folders_written_by_torch_load_and_match_the_reference():
  tokens = np.array([3, 1, 4, 1, 5, 9])
  cfg, w, meta = reproduce.load_with_meta(FIXTURES / "trained_config", fold=False)
  assert (cfg.n_layers, cfg.d_model, cfg.norm, cfg.pos, cfg.eps) == (1, 8, "ln", "standard", 1e-5)
  assert meta["config_form"] == "training" and meta["dtypes"] == {"float32": 17, "bool": 1}
  assert meta["tokenizer_name"] == "NeelNanda/gpt-neox-tokenizer-digits"
  ref = reference_logits(_fixture_state("trained_config/model_final.pth"), tokens, 1, 2,
                         pos="standard", norm="LN")
  np.testing.assert_allclose(reproduce.forward(cfg, w, tokens)[0][0], ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(WeightFormatError, match="tl_config"):
    reproduce.load(FIXTURES / "half_no_config")
  tl = {"positional_embedding_type": "shortformer"}
  cfg, w, meta = reproduce.load_with_meta(FIXTURES / "half_no_config", tl_config=tl, fold=False)
  assert (cfg.pos, cfg.norm, w.b_U) == ("shortformer", "none", None)
  assert meta["dtypes"] == {"float16": 12, "bool": 1} and meta["config_source"] == "tl_config"
  ref = reference_logits(_fixture_state("half_no_config/model.pth"), tokens, 1, 2)
  np.testing.assert_allclose(reproduce.forward(cfg, w, tokens)[0][0], ref, rtol=1e-5, atol=1e-5)


TRAINING_FIELDS = {"lr_hidden": 2e-3, "batch_size_per_device": 32, "n_devices": 8, "seed": 1,
                   "max_tokens": 22_000_000_000, "weight_decay": 0.05, "use_bfloat16_matmul": True,
                   "dataset_name": "c4_code", "version": 7, "d_mlp": 40, "act_fn": "solu_ln"}


def _training_config(config, normalization, shortformer):
  """The training config these repositories ship (see tl_config's mapping)."""
  fields = {k: config[k] for k in ("n_layers", "d_model", "d_head", "n_heads", "n_ctx",
                                   "d_vocab")}
  return dict(fields, **TRAINING_FIELDS, attn_only=True, normalization=normalization,
              shortformer_pos=shortformer, ln_eps=1e-5,
              tokenizer_name="NeelNanda/gpt-neox-tokenizer-digits")


@pytest.mark.parametrize("normalization, shortformer", [("LN", False), (None, True), ("LN", True)],
                         ids=["attn-only-Nl", "attn-only-2l-demo", "redwood_attn_2l"])
def test_published_folder_with_training_config_and_checkpoints(tmp_path, normalization,
                                                                shortformer):
  pos = "shortformer" if shortformer else "standard"
  config, state = tl_model(2, pos=pos, norm=normalization, seed=3)
  del state["unembed.b_U"]  # missing: zero
  folder = tmp_path / "Attn_Only_2L512W_C4_Code"
  tzw.save_state_dict(folder / "model_final.pth", state, location="cuda:0")
  (folder / "config.json").write_text(json.dumps(_training_config(config, normalization,
                                                                  shortformer)))
  labels = [300_000_000, 5_000_000, 1_200_000_000]  # the largest is above 1e9: tokens
  snapshots = {n: tl_model(2, pos=pos, norm=normalization, seed=10 + i)[1]
               for i, n in enumerate(labels)}
  for n, snapshot in snapshots.items():
    tzw.save_state_dict(folder / "checkpoints" / f"Attn_Only_2L512W_C4_Code_{n}.pth", snapshot)
  (folder / "checkpoints" / "README.md").write_text("not a checkpoint")

  cfg, w, meta = reproduce.load_with_meta(folder, fold=False)
  assert (cfg.norm, cfg.pos, cfg.eps) == ("ln" if normalization else "none", pos, 1e-5)
  assert meta["config_form"] == "training" and meta["training_checkpoints"] == 3
  assert meta["path"] == str(folder / "model_final.pth") and w.b_U is None
  tokens = np.random.default_rng(0).integers(0, config["d_vocab"], config["n_ctx"])
  ref = reference_logits(state, tokens, 2, 2, pos=pos, norm=normalization, pos_after_norm=True,
                         eps=1e-5)
  np.testing.assert_allclose(reproduce.forward(cfg, w, tokens)[0][0], ref, rtol=1e-4,
                             atol=1e-5 * np.abs(ref).max())
  folded_cfg, folded, meta = reproduce.load_with_meta(folder)  # fold=True
  assert meta["folded"] and not folded.has_norm_parameters and "fold_problem" not in meta
  assert (folded.W_Q_pos is not None) == bool(normalization and shortformer)
  circuits.ov_eigenvalues(folded)

  points = model_folder.training_checkpoints(folder)
  assert [(p.value, p.kind) for p in points] == [(n, "tokens") for n in sorted(labels)]
  logged = []
  for point, _, w, meta in reproduce.iter_training_checkpoints(folder, fold=False,
                                                               log=logged.append):
    assert meta["tokens_seen"] == point.value and meta["config_form"] == "training"
    assert np.array_equal(w.W_E, snapshots[point.value]["embed.W_E"])
  assert [line.split(":")[0] for line in logged] == [f"training checkpoint {i}/3"
                                                     for i in (1, 2, 3)]
  assert "tokens 5,000,000" in logged[0]
  one = folder / "checkpoints" / "Attn_Only_2L512W_C4_Code_5000000.pth"  # one, by its path
  cfg, w, meta = reproduce.load_with_meta(one, fold=False)
  assert meta["config_form"] == "training" and cfg.pos == pos
  assert np.array_equal(w.W_E, snapshots[5_000_000]["embed.W_E"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_arena_style_folder_16_bit_without_config(tmp_path, dtype):
  config, state = tl_model(2, pos="shortformer", norm=None, d_model=12, n_heads=3, d_head=4,
                           seed=5)
  del state["unembed.b_U"]
  tzw.save_state_dict(tmp_path / "attn_only_2L_half.pth", state, dtype=dtype)
  with pytest.raises(WeightFormatError, match="positional_embedding_type") as refused:
    reproduce.load(tmp_path)
  one_line(str(refused.value), tmp_path / "attn_only_2L_half.pth")
  tl = {"positional_embedding_type": "shortformer"}
  cfg, w, meta = reproduce.load_with_meta(tmp_path, tl_config=tl, fold=False)
  assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.n_ctx) == (2, 3, 4, 12, 8)
  n_float = sum(v.dtype == np.float32 for v in state.values())
  assert meta["dtypes"] == {dtype: n_float, "bool": 2} and meta["config_source"] == "tl_config"
  if dtype == "float16":
    exact = {k: v.astype(np.float16).astype(np.float32) if v.dtype == np.float32 else v
             for k, v in state.items()}
  else:
    exact = {k: (tzw.bfloat16_bits(v).astype(np.uint32) << 16).view(np.float32)
             if v.dtype == np.float32 else v for k, v in state.items()}
  assert np.array_equal(w.W_E, exact["embed.W_E"]) and w.W_E.dtype == np.float32
  tokens = np.arange(8) % config["d_vocab"]
  ref = reference_logits(exact, tokens, 2, 3, pos="shortformer")
  np.testing.assert_allclose(reproduce.forward(cfg, w, tokens)[0][0], ref, rtol=1e-4, atol=1e-5)
  circuits.ov_eigenvalues(reproduce.load(tmp_path, tl_config=tl)[1])  # analysis-ready


def test_model_folder_rules(tmp_path):
  _, state = tl_model(1, norm=None)
  two = tmp_path / "two"
  for name in ("a.pth", "b.pth"):
    tzw.save_state_dict(two / name, state)
  with pytest.raises(WeightFormatError, match=r"several weight files \(a\.pth, b\.pth\)"):
    reproduce.load(two)
  tzw.save_state_dict(two / "run_final.pth", state)  # TransformerLens's choice: *final.pth
  assert model_folder.weights_file(two) == two / "run_final.pth"
  (tmp_path / "workdir" / "snapshots").mkdir(parents=True)
  tzw.save_state_dict(tmp_path / "workdir" / "x.pth", state)
  assert not model_folder.is_model_folder(tmp_path / "workdir")  # a training work directory
  steps = tmp_path / "steps" / "checkpoints"
  for n in (1000, 20, 300):
    tzw.save_state_dict(steps / f"m_{n}.pth", state)
  points = model_folder.training_checkpoints(steps.parent)
  assert [(p.value, p.kind) for p in points] == [(20, "steps"), (300, "steps"), (1000, "steps")]
  tzw.save_state_dict(steps / "other_020.pth", state)
  with pytest.raises(WeightFormatError, match="two checkpoints are labelled 20"):
    model_folder.training_checkpoints(steps.parent)
  with pytest.raises(FileNotFoundError, match="no training checkpoints"):
    next(reproduce.iter_training_checkpoints(two))
