"""reproduce.core.torch_zip: PyTorch's zip format read without torch: every allowed dtype (16-bit
exactly), views, storage locations, byte order, files written by real torch
(tests/support/fixtures/torch_zip), and the refusals (globals outside the allow-list, before any
object is built; the legacy format; damage)."""

import collections
import io
import os
import pickle
import tarfile
import tracemalloc
import zipfile

import numpy as np
import pytest

import reproduce
from reproduce.core import torch_zip
from reproduce.core.tl_format import WeightFormatError
from reproduce.core.torch_zip import TorchFileError

from tests.support import torch_zip_writer as tzw
from tests.support.helpers import one_line
from tests.support.paths import TORCH_ZIP_FIXTURES as FIXTURES


OD = collections.OrderedDict


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
  """tests/support/fixtures/torch_zip/make_fixtures.py wrote these with torch 2.13 (state_dict()
  with _metadata, shared and strided storages, every allowed dtype); expected.npz is torch's own
  float32 upcast."""
  expected = np.load(FIXTURES / "expected.npz")
  arrays, info = torch_zip.read_state_dict(FIXTURES / name)
  keys = sorted(k.split("/")[-1] for k in expected.files if k.startswith(name + "/"))
  assert sorted(arrays) == keys and sum(info["dtypes"].values()) == len(keys)
  for key, a in arrays.items():
    want = expected[f"{name}/{key}"]
    assert a.shape == want.shape and np.array_equal(np.asarray(a, want.dtype), want), key


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


def _inflated(path, entry_suffix, size):
  """The zip at ``path`` with the entry ending in ``entry_suffix`` replaced by ``size`` zero
  bytes, deflated (a few KiB on disk)."""
  with zipfile.ZipFile(path) as z:
    entries = [(info.filename, z.read(info)) for info in z.infolist()]
  bomb = path.with_name("bomb.pth")
  with zipfile.ZipFile(bomb, "w") as z:
    for name, data in entries:
      if name.endswith(entry_suffix):
        z.writestr(name, bytes(size), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
      else:
        z.writestr(name, data)
  return bomb


def test_a_storage_that_inflates_past_its_tensor_is_refused_before_it_is_read(tmp_path):
  plain = tzw.save_state_dict(tmp_path / "model.pth", {"embed.W_E": np.ones((2, 2), np.float32)})
  bomb = _inflated(plain, "/data/0", 64 << 20)
  assert bomb.stat().st_size < 1 << 20
  tracemalloc.start()
  try:
    with pytest.raises(TorchFileError, match=r"bomb.pth: storage model/data/0 holds 67108864 "
                                             r"bytes, expected 4 × 4"):
      torch_zip.read_state_dict(bomb)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 4 << 20, peak  # nothing near the 64 MiB it inflates to was allocated


def test_a_pickle_that_inflates_past_any_state_dict_is_refused(tmp_path, monkeypatch):
  plain = tzw.save_state_dict(tmp_path / "model.pth", {"embed.W_E": np.ones((2, 2), np.float32)})
  monkeypatch.setattr(torch_zip, "MAX_PICKLE_BYTES", 1 << 20)
  bomb = _inflated(plain, "/data.pkl", 2 << 20)
  with pytest.raises(TorchFileError, match=r"data.pkl declares 2097152 bytes, more than"):
    torch_zip.read_state_dict(bomb)
