"""PyTorch's zip format read without torch: every allowed dtype (16-bit exactly), views, storage
locations, byte order, files written by real torch (tests/fixtures/torch_zip), the refusals
(globals outside the allow-list, before any object is built; the legacy format; damage), and the
published folder layouts: attn-only-Nl (training config, checkpoints/), attn-only-2l-demo,
redwood_attn_2l (LN + shortformer) and ARENA's 16-bit folder without a config."""

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import reproduce
import torch_zip_writer as tzw
from reference import reference_logits
from reproduce.core import circuits, model_folder, torch_zip
from reproduce.core.tl_format import WeightFormatError
from reproduce.core.torch_zip import TorchFileError
from reproduce.data.corpus import resolve_corpus
from reproduce.data.store import find_bos, prepare_tokens
from reproduce.data.tokenizer import TokenizerFileError, declared_bos, load_tokenizer
from test_tl_format import tl_model

FIXTURES = Path(__file__).parent / "fixtures" / "torch_zip"
OD = collections.OrderedDict


def one_line(message: str, path) -> str:
  assert "\n" not in message and message.startswith(str(path)), message
  return message


def test_every_allowed_dtype_is_read_exactly(tmp_path):
  rng = np.random.default_rng(0)
  f32 = rng.normal(size=(3, 5)).astype(np.float32)
  f16_bits = rng.integers(0, 2**16, 500, dtype=np.uint16)  # normals, subnormals, inf, nan
  bf16_bits = rng.integers(0, 2**16, 500, dtype=np.uint16)
  state = OD(f32=tzw.tensor(f32),
             f16=tzw.Tensor(tzw.Storage("float16", f16_bits.view(np.float16)), 0, (500,), (1,)),
             bf16=tzw.Tensor(tzw.Storage("bfloat16", bf16_bits), 0, (500,), (1,)),
             mask=tzw.tensor(np.tril(np.ones((4, 4), bool))),
             ids=tzw.tensor(np.arange(-3, 4, dtype=np.int64)),
             bf16_scalar=tzw.tensor(np.array(-np.inf, np.float32), "bfloat16"))
  arrays, info = torch_zip.read_state_dict(tzw.save(tmp_path / "m.pth", state))
  assert info["dtypes"] == {"float32": 1, "float16": 1, "bfloat16": 2, "bool": 1, "int64": 1}
  assert arrays["bf16_scalar"].shape == () and arrays["bf16_scalar"] == -np.inf
  assert arrays["f32"].dtype == np.float32 and np.array_equal(arrays["f32"], f32)
  assert arrays["f16"].dtype == np.float16
  assert np.array_equal(arrays["f16"].view(np.uint16), f16_bits)
  assert arrays["bf16"].dtype == np.float32  # bfloat16 → float32: the bits, shifted up
  assert np.array_equal(arrays["bf16"].view(np.uint32), bf16_bits.astype(np.uint32) << 16)
  assert arrays["mask"].dtype == bool and np.array_equal(arrays["mask"], np.tril(np.ones((4, 4))))
  assert arrays["ids"].dtype == np.int64 and arrays["ids"].tolist() == list(range(-3, 4))


def test_views_offsets_strides_shared_storage_and_cuda_location(tmp_path):
  base = np.arange(24, dtype=np.float32) / 8
  storage = tzw.Storage("float32", base, location="cuda:0")  # the location is ignored
  state = OD(whole=tzw.Tensor(storage, 0, (4, 6), (6, 1)),
             transposed=tzw.Tensor(storage, 0, (6, 4), (1, 6)),
             columns=tzw.Tensor(storage, 1, (4, 3), (6, 2)),
             slice=tzw.Tensor(storage, 5, (7,), (1,)), scalar=tzw.Tensor(storage, 23, (), ()),
             expanded=tzw.Tensor(storage, 2, (3, 2), (0, 1)),
             empty=tzw.Tensor(storage, 0, (0, 6), (6, 1)))
  path = tzw.save(tmp_path / "views.pth", state)
  with zipfile.ZipFile(path) as z:
    assert [n for n in z.namelist() if "/data/" in n] == ["views/data/0"]  # one shared storage
  arrays, _ = torch_zip.read_state_dict(path)
  grid = base.reshape(4, 6)
  expected = dict(whole=grid, transposed=grid.T, columns=grid[:, 1::2], slice=base[5:12],
                  scalar=base[23], expanded=np.broadcast_to(base[2:4], (3, 2)),
                  empty=np.zeros((0, 6), np.float32))
  for name, want in expected.items():
    assert arrays[name].shape == want.shape and np.array_equal(arrays[name], want), name
    assert arrays[name].flags.c_contiguous and arrays[name].flags.owndata


def test_big_endian_files_read_like_little_endian_ones(tmp_path):
  rng = np.random.default_rng(1)
  a = rng.normal(size=(3, 4)).astype(np.float32)
  state = OD(f32=tzw.tensor(a), f16=tzw.tensor(a, "float16"), bf16=tzw.tensor(a, "bfloat16"),
             ids=tzw.tensor(np.arange(5, dtype=np.int64)), mask=tzw.tensor(a > 0))
  little, _ = torch_zip.read_state_dict(tzw.save(tmp_path / "le.pth", state))
  big, _ = torch_zip.read_state_dict(tzw.save(tmp_path / "be.pth", state, byteorder="big"))
  for name in state:
    assert big[name].dtype == little[name].dtype and np.array_equal(big[name], little[name])


@pytest.mark.parametrize("name", ["trained_config/model_final.pth", "half_no_config/model.pth",
                                  "dtypes.pth"])
def test_files_written_by_torch_read_as_torch_reads_them(name):
  """tests/fixtures/torch_zip/make_fixtures.py wrote these with torch 2.13 (state_dict() with
  _metadata, shared and strided storages, every allowed dtype); expected.npz is torch's own
  float32 upcast."""
  expected = np.load(FIXTURES / "expected.npz")
  arrays, info = torch_zip.read_state_dict(FIXTURES / name)
  keys = sorted(k.split("/")[-1] for k in expected.files if k.startswith(name + "/"))
  assert sorted(arrays) == keys and sum(info["dtypes"].values()) == len(keys)
  for key, a in arrays.items():
    want = expected[f"{name}/{key}"]
    assert a.shape == want.shape and np.array_equal(np.asarray(a, want.dtype), want), key


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


class _CreatesFile:
  def __init__(self, target, how):
    self.target, self.how = target, how

  def __reduce__(self):
    if self.how == "open":
      return (open, (str(self.target), "w"))
    return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("how", ["open", "system"])
def test_a_pickle_that_would_create_a_file_is_refused_and_runs_nothing(tmp_path, how, protocol):
  target = tmp_path / "created"
  state = OD([("embed.W_E", tzw.tensor(np.ones((3, 2), np.float32))),
              ("blocks.0.attn.W_Q", _CreatesFile(target, how))])
  path = tzw.save(tmp_path / "model.pth", state, protocol=protocol)
  with pytest.raises(TorchFileError) as refused:
    torch_zip.read_state_dict(path)
  message = one_line(str(refused.value), path)
  assert message.endswith("(only tensors and dicts are read)")
  assert f"refused global {'' if how == 'open' else 'posix.'}" in message
  assert ("open" if how == "open" else "system") in message
  with pytest.raises(WeightFormatError, match="refused global"):
    reproduce.load(path)  # the public entry point, and a folder holding the file
  with pytest.raises(WeightFormatError, match="refused global"):
    reproduce.load(tmp_path, tl_config={"positional_embedding_type": "standard"})
  assert not target.exists()


def test_refused_before_any_object_is_built(tmp_path):
  """The tensor's storage is missing, so building it would fail first; the scan of the globals
  refuses the file before that."""
  target = tmp_path / "created"
  state = OD(a=tzw.tensor(np.ones(3, np.float32)), b=_CreatesFile(target, "open"))
  path = tzw.save(tmp_path / "m.pth", state, drop_storages=("0",))
  with pytest.raises(TorchFileError, match="refused global"):
    torch_zip.read_state_dict(path)
  safe = tzw.save(tmp_path / "safe.pth", OD(a=tzw.tensor(np.ones(3, np.float32))),
                  drop_storages=("0",))
  with pytest.raises(TorchFileError, match=r"storage safe/data/0 is missing"):
    torch_zip.read_state_dict(safe)
  assert not target.exists()


def test_the_unpickler_refuses_too_when_the_scan_is_skipped(tmp_path, monkeypatch):
  target = tmp_path / "created"
  path = tzw.save(tmp_path / "m.pth", OD(b=_CreatesFile(target, "open")))
  monkeypatch.setattr(torch_zip, "check_globals", lambda data, where: None)
  with pytest.raises(TorchFileError, match="refused global"):
    torch_zip.read_state_dict(path)
  assert not target.exists()


def _zip_with_pickle(path, data: bytes):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(f"{path.stem}/data.pkl", data)
  return path


@pytest.mark.parametrize("data, message", [
    (b"\x80\x04\x8c\x08builtins\x8c\x04open)\x93.", "whose name is computed"),
    (b"\x80\x04\x8c\x08builtins\x94\x8c\x04open\x94h\x00h\x01\x93.", "builtins.open"),
    (b"(ibuiltins\nopen\n.", "builtins.open"),
    (b"\x80\x02\x82\x01.", "extension-registry"),
    (b"\x80\x02cposix\nsystem\n.", "posix.system"),
    (b"\x80\x02ctorch\nUntypedStorage\n.", "torch.UntypedStorage"),
])
def test_every_way_of_naming_a_global_is_checked(tmp_path, data, message):
  path = _zip_with_pickle(tmp_path / "m.pth", data)
  with pytest.raises(TorchFileError, match=message) as refused:
    torch_zip.read_state_dict(path)
  one_line(str(refused.value), path)
  torch_zip.check_globals(pickle.dumps(OD(a=1), protocol=4), "ok")  # memoised names are fine


def test_legacy_and_other_formats_are_refused_in_one_line(tmp_path):
  legacy = tmp_path / "old.pth"
  legacy.write_bytes(torch_zip.LEGACY_MAGIC + b".")
  tar = tmp_path / "older.pth"
  with tarfile.open(tar, "w") as t:
    info = tarfile.TarInfo("storages")
    info.size = 3
    t.addfile(info, io.BytesIO(b"abc"))
  for path in (legacy, tar):
    with pytest.raises(TorchFileError) as refused:
      torch_zip.read_state_dict(path)
    message = one_line(str(refused.value), path)
    assert "legacy (pre-1.6) format" in message and "torch.save(torch.load(" in message
  cases = {"bare.pth": (pickle.dumps({"a": 1}), "a bare pickle"),
           "text.pth": (b"hello", r"not a PyTorch checkpoint \(no zip archive\)")}
  for name, (content, message) in cases.items():
    (tmp_path / name).write_bytes(content)
    with pytest.raises(TorchFileError, match=message):
      torch_zip.read_state_dict(tmp_path / name)
  with zipfile.ZipFile(tmp_path / "other.pth", "w") as z:
    z.writestr("weights.bin", b"1234")
  with pytest.raises(TorchFileError, match="not PyTorch's zip layout"):
    torch_zip.read_state_dict(tmp_path / "other.pth")


def test_damaged_and_malformed_files_are_named(tmp_path):
  path = tzw.save(tmp_path / "m.pth", OD(a=tzw.tensor(np.arange(64, dtype=np.float32))))
  raw = bytearray(path.read_bytes())
  at = raw.find(np.arange(64, dtype=np.float32).tobytes())
  raw[at + 100] ^= 0xFF  # one flipped bit pattern in the storage: the CRC no longer matches
  (tmp_path / "crc.pth").write_bytes(bytes(raw))
  with pytest.raises(TorchFileError, match="damaged zip archive") as refused:
    torch_zip.read_state_dict(tmp_path / "crc.pth")
  one_line(str(refused.value), tmp_path / "crc.pth")
  storage = tzw.Storage("float32", np.zeros(8, np.float32))
  bad = {"past.pth": (OD(a=tzw.Tensor(storage, 4, (5,), (1,))), "reaches past its storage"),
         "list.pth": ([tzw.tensor(np.ones(2, np.float32))], "holds a list, not a state dict"),
         "nested.pth": (OD(a=OD(b=1)), "not a state dict"),
         "huge.pth": (OD(a=tzw.Tensor(storage, 0, (10**6, 10**6), (0, 0))), "more elements"),
         "negative.pth": (OD(a=tzw.Tensor(storage, 0, (2,), (-1,))), "malformed")}
  for name, (state, message) in bad.items():
    with pytest.raises(TorchFileError, match=message):
      torch_zip.read_state_dict(tzw.save(tmp_path / name, state))


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


def _word_tokenizer(path, words):
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  path.parent.mkdir(parents=True, exist_ok=True)
  tok.save(str(path))
  return tok


def test_a_damaged_tokenizer_is_one_line_naming_the_file(tmp_path, cache_dir):
  _word_tokenizer(tmp_path / "ok" / "tokenizer.json", ["[UNK]", "<|endoftext|>", "a"])
  config = json.loads((tmp_path / "ok" / "tokenizer.json").read_text())
  damaged = {"vocab": (json.dumps(dict(config, model={"type": "BPE"})), "Missing vocab/merges"),
             "cut": ((tmp_path / "ok" / "tokenizer.json").read_text()[:50], "EOF while parsing")}
  for name, (content, reason) in damaged.items():  # the case, and a truncated file
    path = tmp_path / name / "tokenizer.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(TokenizerFileError) as refused:
      load_tokenizer(path)
    message = one_line(str(refused.value), path)
    assert f"not a readable tokenizer.json ({reason}" in message
  (tmp_path / "text").mkdir()
  for i in range(4):
    (tmp_path / "text" / f"{i}.txt").write_text("a b a b\n" * 50)
  corpus = resolve_corpus(str(tmp_path / "text"), heldout_every=2)
  with pytest.raises(TokenizerFileError, match=r"vocab/tokenizer\.json: not a readable"):
    prepare_tokens(corpus, 300, cache_dir, log=lambda *_: 0,
                   tokenizer_file=str(tmp_path / "vocab" / "tokenizer.json"))


def test_bos_is_the_declared_token_else_endoftext(tmp_path, cache_dir):
  """TransformerLens prepends the tokenizer's BOS token; with none, <|endoftext|>."""
  words = ["[UNK]", "<s>", "<|endoftext|>", "a", "b"]
  path = tmp_path / "model" / "tokenizer.json"
  tok = _word_tokenizer(path, words)
  assert declared_bos(path) is None and find_bos(tok) == words.index("<|endoftext|>")
  (tmp_path / "text").mkdir()
  for i in range(4):
    (tmp_path / "text" / f"{i}.txt").write_text("a b b a\n" * 50)
  corpus = resolve_corpus(str(tmp_path / "text"), heldout_every=2)
  tokens = prepare_tokens(corpus, 300, cache_dir, log=lambda *_: 0, tokenizer_file=str(path))
  assert tokens.bos_id == words.index("<|endoftext|>")
  (path.parent / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<s>"}}))
  assert declared_bos(path) == "<s>" and find_bos(tok, "<s>") == words.index("<s>")
  tokens = prepare_tokens(corpus, 300, cache_dir, log=lambda *_: 0, tokenizer_file=str(path))
  assert tokens.bos_id == words.index("<s>")  # a new cache entry: the declared BOS is in its key
  (path.parent / "tokenizer_config.json").write_text("{broken")
  with pytest.raises(TokenizerFileError, match=r"tokenizer_config\.json: not a JSON object"):
    declared_bos(path)


def test_checkpoint_option_reads_a_model_folder_and_its_tokenizer(tmp_path, cache_dir):
  """What ``figure --checkpoint=DIR --tl_config=...`` builds: no work directory, the folder's
  tokenizer with <|endoftext|> as BOS; a damaged tokenizer.json is one line."""
  from reproduce import experiment  # pylint: disable=import-outside-toplevel  # the runner
  _, state = tl_model(1, pos="shortformer", norm=None)
  folder = tmp_path / "arena"
  tzw.save_state_dict(folder / "attn_only_2L_half.pth", state, dtype="float16")
  words = ["[UNK]", "<|endoftext|>", "a", "b"]
  _word_tokenizer(folder / "tokenizer.json", words)
  (tmp_path / "text").mkdir()
  for i in range(4):
    (tmp_path / "text" / f"{i}.txt").write_text("a b b a\n" * 50)
  tl = {"positional_embedding_type": "shortformer"}
  model = experiment.model_from_run("arena", folder, cache_dir=cache_dir, log=lambda *_: 0,
                                    corpus=str(tmp_path / "text"), tl_config=tl)
  assert model.workdir is None and model.cfg.pos == "shortformer"
  assert model.tokens.bos_id == words.index("<|endoftext|>")
  assert model.meta["tokenizer"]["path"] == str(folder / "tokenizer.json")
  (folder / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
  with pytest.raises(TokenizerFileError, match=r"arena/tokenizer\.json: not a readable") as e:
    experiment.model_from_run("arena", folder, cache_dir=cache_dir, log=lambda *_: 0,
                              corpus=str(tmp_path / "text"), tl_config=tl)
  one_line(str(e.value), folder / "tokenizer.json")


def test_tl_config_flag_errors_are_one_line(tmp_path):
  root = Path(__file__).resolve().parents[1]
  for flags, message in (([f"--checkpoint={tmp_path}", "--tl_config={bad"],
                          "error: --tl_config: not valid JSON"),
                         (["--tl_config={}"], "error: --tl_config describes the weights of a "
                                              "--checkpoint; give --checkpoint")):
    out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=ov_eigenvalues",
                          f"--workdir={tmp_path}", *flags], cwd=root, capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(message)
