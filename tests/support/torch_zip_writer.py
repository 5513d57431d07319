"""A minimal writer of PyTorch's zip checkpoint format from NumPy, for test fixtures (no torch).

It writes what ``torch.save`` writes for a state dict (see ``reproduce/core/torch_zip.py``):
``<archive>/data.pkl`` pickled with protocol 2 (or the one given), ``<archive>/data/<key>`` per
storage, ``<archive>/byteorder`` and ``<archive>/version``.  Torch's globals are written by name
(GLOBAL opcodes) through a pure-Python pickler: ``Global`` markers get their own dispatch entry,
tensors reduce to ``torch._utils._rebuild_tensor_v2`` (``reducer_override``) and storages become
persistent ids ``("storage", torch.<Type>Storage, key, location, numel)`` (``persistent_id``).
Any other object in the state is pickled the ordinary way (that is how the tests build
malicious files).
"""

import collections
import dataclasses
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

STORAGE_NAMES = {"float32": "FloatStorage", "float16": "HalfStorage",
                 "bfloat16": "BFloat16Storage", "bool": "BoolStorage", "int64": "LongStorage"}
NUMPY = {"float32": "f4", "float16": "f2", "bfloat16": "u2", "bool": "b1", "int64": "i8"}


@dataclasses.dataclass(frozen=True)
class Global:
  """Pickled as ``GLOBAL module name``, whatever (if anything) that names here."""

  module: str
  name: str

  def __call__(self, *args):  # save_reduce wants a callable; it is never called here
    raise TypeError(f"{self.module}.{self.name} is a name only")


@dataclasses.dataclass(eq=False)
class Storage:
  """A flat storage: ``elements`` (1-D, NumPy dtype per NUMPY; bfloat16 as uint16 bits)."""

  dtype: str
  elements: np.ndarray
  location: str = "cpu"


@dataclasses.dataclass(eq=False)
class Tensor:
  """A view of ``storage``: offset, size and stride in elements."""

  storage: Storage
  offset: int
  size: tuple
  stride: tuple


def bfloat16_bits(x) -> np.ndarray:
  """float32 values rounded to bfloat16 (nearest, ties to even), as uint16 bit patterns."""
  u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
  return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def tensor(array, dtype=None, location="cpu") -> Tensor:
  """A contiguous tensor of its own storage; ``dtype`` (default: the array's) may be "float16"
  or "bfloat16" for float arrays (bfloat16 rounds to nearest)."""
  array = np.asarray(array)
  dtype = dtype or {"float32": "float32", "float16": "float16", "bool": "bool",
                    "int64": "int64"}[array.dtype.name]
  if dtype == "bfloat16":
    flat = bfloat16_bits(array).reshape(-1)
  else:
    flat = np.ascontiguousarray(array, NUMPY[dtype]).reshape(-1)
  strides = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
  return Tensor(Storage(dtype, flat, location), 0, tuple(array.shape), strides)


class _Pickler(pickle._Pickler):  # pylint: disable=protected-access  # the pure-Python pickler
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file, protocol):
    super().__init__(file, protocol)
    self.storages = {}  # id → (key, Storage), in order of first use

  def save_global_marker(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[Global] = save_global_marker

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    key = self.storages.setdefault(id(obj), (str(len(self.storages)), obj))[0]
    return ("storage", Global("torch", STORAGE_NAMES[obj.dtype]), key, obj.location,
            len(obj.elements))

  def reducer_override(self, obj):
    if isinstance(obj, Tensor):
      return (Global("torch._utils", "_rebuild_tensor_v2"),
              (obj.storage, obj.offset, tuple(obj.size), tuple(obj.stride), False,
               collections.OrderedDict()))
    return NotImplemented


def save(path, state, archive=None, protocol=2, byteorder="little", drop_storages=()) -> Path:
  """Writes ``state`` (usually an OrderedDict of ``Tensor``) as torch's zip format; arrays in it
  become tensors.  ``drop_storages``: storage keys to leave out (a damaged file)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(state, dict):
    state = collections.OrderedDict(
        (k, tensor(v) if isinstance(v, np.ndarray) else v) for k, v in state.items())
  buffer = io.BytesIO()
  pickler = _Pickler(buffer, protocol)
  pickler.dump(state)
  archive = archive or path.stem
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{archive}/data.pkl", buffer.getvalue())
    z.writestr(f"{archive}/byteorder", byteorder)
    for key, storage in pickler.storages.values():
      if key in drop_storages:
        continue
      order = ">" if byteorder == "big" and storage.dtype != "bool" else "<"
      z.writestr(f"{archive}/data/{key}",
                 storage.elements.astype(np.dtype(order + NUMPY[storage.dtype])).tobytes())
    z.writestr(f"{archive}/version", "3\n")
  return path


def save_state_dict(path, state, dtype=None, location="cpu", **kwargs) -> Path:
  """A TransformerLens-style state dict of NumPy arrays; float arrays stored as ``dtype``
  ("float32", "float16" or "bfloat16"; default: as they are)."""
  tensors = collections.OrderedDict()
  for name, a in state.items():
    a = np.asarray(a)
    floating = np.issubdtype(a.dtype, np.floating)
    tensors[name] = tensor(a.astype(np.float32) if floating and dtype else a,
                           dtype if floating else None, location)
  return save(path, tensors, **kwargs)
