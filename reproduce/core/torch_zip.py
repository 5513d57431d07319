"""PyTorch's zip checkpoint format (``torch.save`` since PyTorch 1.6), read without torch and
without running any code from the file.

Layout: a zip archive (entries stored, not compressed) whose entries all lie in one top folder,
named after the file when it was saved::

    <archive>/data.pkl         the pickled object (torch writes protocol 2; 0-5 are read)
    <archive>/data/<key>       the raw bytes of storage <key>, one per storage
    <archive>/byteorder        "little" or "big" (absent in files older than torch 1.10: little)
    <archive>/version, .format_version, .storage_alignment, .data/serialization_id   (not read)

In ``data.pkl`` a state dict is a ``collections.OrderedDict`` whose values are tensors pickled as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks
[, metadata])``, offset and strides counted in elements; a storage is the persistent id
``("storage", torch.<Type>Storage, key, location, numel)``, its bytes in ``data/<key>``.  The
location ("cpu", "cuda:0", ...) is ignored.  Several tensors may share one storage (views).

Safety: an allow-list unpickler.  The only globals resolved are ``collections.OrderedDict``, the
tensor-rebuild function and the storage types of float32, float16, bfloat16, bool and int64, all
mapped to stand-ins here (no torch object is built).  Every global the pickle names is checked
by a scan of its opcodes (``pickletools.genops``, which parses without executing) before
unpickling starts, so a file naming anything else is refused with one line naming the file and
the global, and no object of it is built; the unpickler's ``find_class`` refuses the same set
again.  The legacy (pre-1.6, non-zip) format is refused with a conversion hint.

Values: float32, bool and int64 tensors come back as NumPy arrays of those types, float16 as
float16 (exact), bfloat16 as float32 (exact: the 16 bits are the top half of a float32).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

# torch.<name>Storage → (NumPy dtype of the stored elements, the tensor's dtype name).
STORAGE_TYPES = {"FloatStorage": ("f4", "float32"), "HalfStorage": ("f2", "float16"),
                 "BFloat16Storage": ("u2", "bfloat16"), "BoolStorage": ("b1", "bool"),
                 "LongStorage": ("i8", "int64")}
ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")} | {
    ("torch", name) for name in STORAGE_TYPES}
# pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)[:13]: how every legacy torch file starts.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_NOT_A_STRING = object()

_StorageType = collections.namedtuple("_StorageType", "name")  # immutable, not callable
_Storage = collections.namedtuple("_Storage", "key elements type_name")


class TorchFileError(ValueError):
  """A .pth/.pt file that is not read: not PyTorch's zip format, damaged, or naming a global
  outside the allow-list."""


def _refused(where: str, module: str, name: str) -> TorchFileError:
  return TorchFileError(f"{where}: refused global {module}.{name} (only tensors and dicts are "
                        "read)")


def check_globals(data: bytes, where: str) -> None:
  """Raises TorchFileError unless every global ``data`` (a pickle) names is allowed.

  GLOBAL and INST carry their names; STACK_GLOBAL (protocol 4+) takes them from the two values
  pushed just before it, which pickle always writes as strings (or memo gets of strings); any
  other form cannot be checked statically and is refused.  Extension codes are refused."""
  memo, recent = {}, []
  try:
    for op, arg, _ in pickletools.genops(data):
      if op.name in ("GLOBAL", "INST"):
        module, _, name = arg.partition(" ")
        if (module, name) not in ALLOWED_GLOBALS:
          raise _refused(where, module, name)
      elif op.name == "STACK_GLOBAL":
        if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
          raise TorchFileError(f"{where}: refused a global whose name is computed (only "
                               "tensors and dicts are read)")
        if (recent[-2], recent[-1]) not in ALLOWED_GLOBALS:
          raise _refused(where, recent[-2], recent[-1])
      elif op.name.startswith("EXT"):
        raise TorchFileError(f"{where}: refused an extension-registry global (only tensors "
                             "and dicts are read)")
      if op.name in _PUT_OPS:
        memo[arg] = recent[-1] if recent else _NOT_A_STRING
      elif op.name == "MEMOIZE":
        memo[len(memo)] = recent[-1] if recent else _NOT_A_STRING
      elif op.name in _GET_OPS:
        recent.append(memo.get(arg, _NOT_A_STRING))
      elif op.name not in ("PROTO", "FRAME"):
        recent.append(arg if op.name in _STRING_OPS else _NOT_A_STRING)
      del recent[:-2]
  except (ValueError, TypeError) as e:
    if isinstance(e, TorchFileError):
      raise
    raise TorchFileError(f"{where}: data.pkl is not a valid pickle ({e})") from None


class _Unpickler(pickle.Unpickler):
  """Builds a state dict of NumPy arrays from ``data.pkl``; storages are read on first use."""

  def __init__(self, data_file, archive: zipfile.ZipFile, prefix: str, big_endian: bool,
               where: str):
    super().__init__(data_file)
    self.archive, self.prefix, self.big_endian, self.where = archive, prefix, big_endian, where
    self.types = {name: _StorageType(name) for name in STORAGE_TYPES}  # fresh per file
    self.storages: Dict[str, _Storage] = {}
    self.dtypes = collections.Counter()

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return self.rebuild_tensor
    if module == "torch" and name in self.types:
      return self.types[name]
    raise _refused(self.where, module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise TorchFileError(f"{self.where}: unknown persistent id {str(pid)[:80]!r} (only "
                           "tensor storages are read)")
    _, storage_type, key, _location, numel = pid  # the location (cpu, cuda:0, …) is ignored
    if not isinstance(storage_type, _StorageType) or storage_type is not self.types.get(
        getattr(storage_type, "name", None)):
      raise TorchFileError(f"{self.where}: a storage of unknown type {storage_type!r}")
    if not (isinstance(key, str) and _KEY.match(key)) or isinstance(numel, bool) or \
        not isinstance(numel, int) or numel < 0:
      raise TorchFileError(f"{self.where}: malformed storage id {str(pid)[:80]!r}")
    if key not in self.storages:
      self.storages[key] = self._read_storage(key, storage_type.name, numel)
    storage = self.storages[key]
    if storage.type_name != storage_type.name or len(storage.elements) != numel:
      raise TorchFileError(f"{self.where}: storage {key} is named with two types or sizes")
    return storage

  def _read_storage(self, key: str, type_name: str, numel: int) -> _Storage:
    code, _ = STORAGE_TYPES[type_name]
    dtype = np.dtype(("<" if not self.big_endian or code == "b1" else ">") + code)
    entry = f"{self.prefix}data/{key}"
    expected = numel * dtype.itemsize
    try:
      declared = self.archive.getinfo(entry).file_size
    except KeyError:
      raise TorchFileError(f"{self.where}: storage {entry} is missing") from None
    if declared != expected:  # checked in the zip directory, before a byte of it is inflated
      raise TorchFileError(f"{self.where}: storage {entry} holds {declared} bytes, expected "
                           f"{numel} × {dtype.itemsize}")
    with self.archive.open(entry) as stored:
      raw = stored.read(expected + 1)  # never more than the tensor needs, whatever it inflates to
    if len(raw) != expected:
      raise TorchFileError(f"{self.where}: storage {entry} holds more or fewer bytes than its "
                           f"{declared} declared")
    elements = np.frombuffer(raw, dtype)  # read-only, over the bytes: no copy
    return _Storage(key, elements.astype(dtype.newbyteorder("="), copy=False), type_name)

  def rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None,
                     metadata=None):  # pylint: disable=unused-argument
    """A tensor as an owned, C-contiguous NumPy array (bfloat16 upcast to float32, exactly)."""
    ints = lambda t: isinstance(t, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in t)
    if not (isinstance(storage, _Storage) and ints((offset,)) and ints(size) and ints(stride)
            and len(size) == len(stride)):
      raise TorchFileError(f"{self.where}: a tensor with a malformed storage, offset, size or "
                           "stride")
    a = storage.elements
    if math.prod(size) > len(a):  # only overlapping views can; it bounds memory by file size
      raise TorchFileError(f"{self.where}: a tensor of size {size} has more elements than its "
                           f"storage ({len(a)})")
    if math.prod(size) == 0:
      view = np.zeros(size, a.dtype)
    else:
      last = offset + sum((n - 1) * s for n, s in zip(size, stride))
      if last >= len(a):
        raise TorchFileError(f"{self.where}: a tensor of size {size}, stride {stride} and "
                             f"offset {offset} reaches past its storage of {len(a)} elements")
      view = np.lib.stride_tricks.as_strided(a[offset:], shape=size,
                                             strides=[s * a.itemsize for s in stride],
                                             writeable=False)
    out = np.array(view, order="C")
    if storage.type_name == "BFloat16Storage":
      out = np.asarray(out.astype(np.uint32) << 16).view(np.float32)  # 0-d stays an array
    self.dtypes[STORAGE_TYPES[storage.type_name][1]] += 1
    return out


def _refuse_other_formats(path: Path) -> None:
  """Names what a file that is not a zip archive is: torch's legacy format gets a hint."""
  with open(path, "rb") as f:
    head = f.read(len(LEGACY_MAGIC))
  if head == LEGACY_MAGIC or tarfile.is_tarfile(path):
    raise TorchFileError(
        f"{path}: PyTorch's legacy (pre-1.6) format is not read; convert it once, where you "
        "trust the file, with PyTorch ≥ 1.6: python -c \"import torch; torch.save(torch.load("
        f"'{path.name}', weights_only=True), '{path.stem}-zip{path.suffix}')\"")
  if head[:1] == b"\x80":
    raise TorchFileError(f"{path}: a bare pickle, not PyTorch's zip format: refused (pickles "
                         "can run code)")
  raise TorchFileError(f"{path}: not a PyTorch checkpoint (no zip archive)")


def _archive_prefix(archive: zipfile.ZipFile, where: str) -> str:
  """``<archive>/``: the one top folder holding ``data.pkl``."""
  tops = {name.split("/", 1)[0] for name in archive.namelist() if "/" in name}
  if len(tops) != 1 or f"{next(iter(tops))}/data.pkl" not in archive.namelist():
    raise TorchFileError(f"{where}: not PyTorch's zip layout (expected one folder holding "
                         "data.pkl and data/)")
  return next(iter(tops)) + "/"


MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle names its tensors; their bytes are elsewhere


def _read_capped(archive: zipfile.ZipFile, entry: str, limit: int, where: str) -> bytes:
  """The bytes of ``entry``, refused when its size in the zip directory or what it inflates to
  exceeds ``limit`` (nothing beyond ``limit + 1`` bytes is ever read)."""
  info = archive.getinfo(entry)
  if info.file_size > limit:
    raise TorchFileError(f"{where}: {entry} declares {info.file_size} bytes, more than the "
                         f"{limit} a state dict's pickle can need")
  with archive.open(info) as stored:
    data = stored.read(limit + 1)
  if len(data) > limit:
    raise TorchFileError(f"{where}: {entry} inflates to more than {limit} bytes")
  return data


def read_state_dict(path) -> Tuple[Dict[str, np.ndarray], dict]:
  """(name → array, info) from a ``torch.save`` zip file of a state dict (see the module doc).

  ``info["dtypes"]`` counts the tensors per stored dtype ("float32", "float16", "bfloat16", ...).
  Raises TorchFileError for anything else, naming the file."""
  path = Path(path)
  if not zipfile.is_zipfile(path):
    _refuse_other_formats(path)
  where = str(path)
  try:
    with zipfile.ZipFile(path) as archive:
      prefix = _archive_prefix(archive, where)
      data = _read_capped(archive, prefix + "data.pkl", MAX_PICKLE_BYTES, where)
      check_globals(data, where)
      order = prefix + "byteorder"
      big = order in archive.namelist() and archive.read(order).strip() == b"big"
      unpickler = _Unpickler(io.BytesIO(data), archive, prefix, big, where)
      state = unpickler.load()
  except TorchFileError:
    raise
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise TorchFileError(f"{where}: damaged zip archive ({type(e).__name__}: {e})") from None
  except Exception as e:  # pylint: disable=broad-except  # malformed pickle data of any kind
    raise TorchFileError(f"{where}: data.pkl is not a readable state dict "
                         f"({type(e).__name__}: {e})") from None
  if not isinstance(state, dict) or not all(
      isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
    raise TorchFileError(f"{where}: holds a {type(state).__name__}, not a state dict of named "
                         "tensors")
  return dict(state), {"dtypes": dict(unpickler.dtypes)}
