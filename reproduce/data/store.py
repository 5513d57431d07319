"""Byte-level BPE (HF ``tokenizers``) trained on the corpus, and the corpus as a sharded token store.

The store of a corpus at a vocabulary size lives in ``<cache_dir>/<key>/``::

    manifest.json          written last: the entry is complete iff it exists
    tokenizer.json         the trained (or given) tokenizer
    counts.npy             int64 [vocab]: how often each token occurs in the training split
    train-00000.npy ...    1-D uint16 (uint32 above 65,536 tokens) token shards, memory-mapped
    heldout-00000.npy ...

``key`` = corpus fingerprint (see ``Corpus.fingerprint``: paths, sizes, modification times and
sampled bytes, never every byte) + vocabulary size + a hash of the build settings.  Documents
are joined with ``<|endoftext|>``; ``<|bos|>`` starts every training window.  Each split is one
token stream, cut into shards of about ``shard_tokens`` tokens (at piece boundaries), so the
stream and hence every training batch does not depend on the shard size.

Building is streamed: the tokenizer trains on a bounded sample (``sample_bytes`` of training
text, spread over the files in proportion to their sizes; all of it when the split is smaller),
then the text is encoded in pieces of at most 64 KiB and written shard by shard, so peak memory
depends on the shard size and the sample size, not on the corpus size.  The build runs in
``<cache_dir>/.building-<key>/`` under an advisory lock (``.lock-<key>``; a second process waits
for it and then uses the finished entry).  Every finished shard is kept with a small JSON note
of where its text ended, so a killed build resumes after its last finished shard; the folder is
renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from reproduce.data.corpus import Corpus
from reproduce.data.files import PIECE_BYTES, CorpusError, Position
from reproduce.data.tokenizer import declared_bos, load_tokenizer

BOS, EOT = "<|bos|>", "<|endoftext|>"
CACHE_VERSION = 2  # bump when the tokenisation recipe or the store layout changes
DEFAULT_SAMPLE_BYTES = 64 << 20  # the tokenizer trains on at most this much text
DEFAULT_SHARD_TOKENS = 1 << 24  # tokens per shard of the store (bounds prepare's memory)
_ENCODE_BATCH_CHARS = 1 << 20  # text encoded per encode_batch call (bounds its temporaries)


def default_cache_dir() -> Path:
  return Path(os.environ.get("CIRCUITS_REPRO_CACHE",
                             Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
                             / "circuits-repro"))


class ShardedTokens:
  """Several memory-mapped token shards read as one 1-D array (length, integer/array/slice
  indexing).  ``np.asarray`` of it concatenates every shard: for small corpora only."""

  ndim = 1

  def __init__(self, shards: List[np.ndarray]):
    self.shards = shards
    self.starts = np.cumsum([0] + [len(s) for s in shards])
    self.dtype = shards[0].dtype

  def __len__(self) -> int:
    return int(self.starts[-1])

  @property
  def shape(self):
    return (len(self),)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self[np.arange(len(self))[index]] if index.step not in (None, 1) else \
          self._range(*index.indices(len(self))[:2])
    idx = np.asarray(index)
    if idx.ndim == 0:
      i = int(idx) + (len(self) if int(idx) < 0 else 0)
      if not 0 <= i < len(self):
        raise IndexError(f"index {int(idx)} out of range for {len(self)} tokens")
      k = int(np.searchsorted(self.starts, i, side="right")) - 1
      return self.shards[k][i - self.starts[k]]
    flat = idx.reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + len(self), flat)
    if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
      raise IndexError(f"index out of range for {len(self)} tokens")
    shard = np.searchsorted(self.starts, flat, side="right") - 1
    out = np.empty(flat.shape, self.dtype)
    for k in np.unique(shard):
      mask = shard == k
      out[mask] = self.shards[k][flat[mask] - self.starts[k]]
    return out.reshape(idx.shape)

  def _range(self, lo: int, hi: int) -> np.ndarray:
    parts = []
    for k, s in enumerate(self.shards):
      a, b = max(lo, self.starts[k]), min(hi, self.starts[k + 1])
      if a < b:
        parts.append(np.asarray(s[a - self.starts[k]:b - self.starts[k]]))
    return np.concatenate(parts) if parts else np.zeros((0,), self.dtype)

  def __array__(self, dtype=None, copy=None):
    out = self._range(0, len(self))
    return out.astype(dtype) if dtype is not None else out


@dataclasses.dataclass
class TokenizedCorpus:
  """The token streams of a corpus and the tokenizer that made them."""

  tokenizer_path: Path
  train: object  # 1-D: a memory-mapped array, or ShardedTokens when there are several shards
  heldout: object
  bos_id: int
  eot_id: int
  vocab_size: int  # size of the trained vocabulary (≤ the requested size)
  fingerprint: str
  counts: Optional[np.ndarray] = None  # token frequencies of the training split

  def tokenizer(self) -> Tokenizer:
    return load_tokenizer(self.tokenizer_path)

  def reference(self) -> dict:
    """What a checkpoint records about its tokenizer."""
    return {"path": str(self.tokenizer_path), "fingerprint": self.fingerprint,
            "bos_id": self.bos_id, "eot_id": self.eot_id, "vocab_size": self.vocab_size}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """Byte-level BPE with the special tokens BOS (id 0) and EOT (id 1)."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOT],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return tok


def tokenizer_sample(corpus: Corpus, sample_bytes: int) -> Iterator[str]:
  """At most about ``sample_bytes`` of training text: everything when the training split is
  that small, else the start of every training file with a share in proportion to its size."""
  sizes = [Path(f).stat().st_size for f in corpus.train_files]
  total = sum(sizes)
  if total <= sample_bytes or corpus.split == "document":
    budget = sample_bytes
    for piece in corpus.pieces("train"):
      if total > sample_bytes and budget <= 0:
        return
      text = piece.text if total <= sample_bytes else piece.text[:budget]
      budget -= len(text)
      yield text
    return
  for i, size in enumerate(sizes):
    quota = sample_bytes * size // total
    if quota <= 0:
      continue
    for piece in corpus.pieces("train", Position(file=i)):
      if piece.after.file != i or quota <= 0:
        break
      yield piece.text[:quota]
      quota -= len(piece.text)


def find_bos(tok: Tokenizer, declared: Optional[str] = None) -> int:
  """The id of the token prepended to every window, as TransformerLens prepends BOS by default:
  the ``declared`` BOS token when the vocabulary has it, else ours (<|bos|>), else
  <|endoftext|> (TransformerLens's choice for a tokenizer without one), else <s> or <|BOS|>."""
  for name in ((declared,) if declared else ()) + (BOS, EOT, "<s>", "<|BOS|>"):
    if tok.token_to_id(name) is not None:
      return tok.token_to_id(name)
  raise ValueError("the tokenizer has no BOS-like token (<|bos|>, <|endoftext|> or <s>)")


def format_seconds(s: float) -> str:
  """``1m05s`` below an hour, ``2h03m`` above it."""
  s = int(max(0, s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Progress:
  """A one-line progress bar on a terminal (a log line every 30 s otherwise)."""

  def __init__(self, label: str, total_bytes: int, log):
    self.label, self.total, self.log = label, max(total_bytes, 1), log
    self.started = self.last = time.time()
    self.tty = sys.stderr.isatty()

  def update(self, done_bytes: int, tokens: int, final: bool = False):
    now = time.time()
    if not final and now - self.last < (0.5 if self.tty else 30):
      return
    self.last = now
    elapsed = max(now - self.started, 1e-9)
    frac = min(done_bytes / self.total, 1.0)
    rate = done_bytes / elapsed
    eta = (self.total - done_bytes) / rate if rate and not final else 0.0
    bar = "#" * int(frac * 20)
    line = (f"{self.label} [{bar:<20}] {frac:6.1%} {done_bytes / 1e6:,.1f}/{self.total / 1e6:,.1f}"
            f" MB | {rate / 1e6:.2f} MB/s | {tokens / elapsed / 1e3:,.0f}k tok/s | "
            f"{'done in ' + format_seconds(elapsed) if final else 'ETA ' + format_seconds(eta)}")
    if self.tty:
      print("\r" + line, end="\n" if final else "", file=sys.stderr, flush=True)
    else:
      self.log(line)


def _save_atomic(path: Path, array: np.ndarray) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    np.save(f, array)
  os.replace(tmp, path)


def _write_json(path: Path, value) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(value, indent=1))
  os.replace(tmp, path)


def _finished_shards(folder: Path, split: str) -> List[dict]:
  """The notes of the split's finished shards, in order (a gap ends the list)."""
  notes = []
  while True:
    note = folder / f"{split}-{len(notes):05d}.json"
    if not (note.exists() and (folder / f"{split}-{len(notes):05d}.npy").exists()):
      return notes
    notes.append(json.loads(note.read_text()))


def _build_split(corpus: Corpus, split: str, tok: Tokenizer, eot_id: int, dtype, folder: Path,
                 shard_tokens: int, log) -> List[dict]:
  """Encodes one split into shards in ``folder``, resuming after its finished shards."""
  notes = _finished_shards(folder, split)
  if notes and notes[-1]["complete"]:
    return notes
  start = Position(*notes[-1]["next"]) if notes else Position()
  progress = _Progress(f"prepare {split}", corpus.total_bytes(split), log)
  if notes:
    log(f"resuming {split} after {len(notes)} finished shard(s)")
  buffer: List[np.ndarray] = []
  buffered = 0
  batch: List[str] = []
  ends: List[bool] = []
  batch_chars = 0
  last = None

  def encode_batch():
    nonlocal buffered, batch_chars
    for enc, end in zip(tok.encode_batch_fast(batch), ends):
      buffer.append(np.asarray(enc.ids, dtype))
      buffered += len(enc.ids)
      if end:
        buffer.append(np.asarray([eot_id], dtype))
        buffered += 1
    batch.clear()
    ends.clear()
    batch_chars = 0

  def write_shard(complete: bool):
    nonlocal buffered
    tokens = np.concatenate(buffer) if buffer else np.zeros((0,), dtype)
    name = f"{split}-{len(notes):05d}"
    _save_atomic(folder / f"{name}.npy", tokens)
    note = {"file": f"{name}.npy", "tokens": int(len(tokens)), "complete": complete,
            "next": list(last.after) if last is not None else list(start)}
    _write_json(folder / f"{name}.json", note)
    notes.append(note)
    buffer.clear()
    buffered = 0

  total_tokens = 0  # tokens encoded by this run (for the throughput)
  for piece in corpus.pieces(split, start):
    batch.append(piece.text)
    ends.append(piece.doc_end)
    batch_chars += len(piece.text)
    last = piece
    if batch_chars >= min(_ENCODE_BATCH_CHARS, shard_tokens) or len(batch) >= 256:
      before = buffered
      encode_batch()
      total_tokens += buffered - before
      progress.update(piece.bytes_done, total_tokens)
      if buffered >= shard_tokens:
        write_shard(complete=False)
  before = buffered
  encode_batch()
  total_tokens += buffered - before
  write_shard(complete=True)
  progress.update(corpus.total_bytes(split), total_tokens, final=True)
  return notes


def _open_store(entry: Path, fingerprint: str) -> TokenizedCorpus:
  manifest = json.loads((entry / "manifest.json").read_text())

  def split_tokens(split):
    shards = [np.load(entry / s["file"], mmap_mode="r") for s in manifest["splits"][split]]
    shards = [s for s in shards if len(s)] or shards[:1]
    return shards[0] if len(shards) == 1 else ShardedTokens(shards)

  return TokenizedCorpus(
      tokenizer_path=entry / "tokenizer.json", train=split_tokens("train"),
      heldout=split_tokens("heldout"), bos_id=manifest["bos_id"], eot_id=manifest["eot_id"],
      vocab_size=manifest["vocab_size"], fingerprint=fingerprint,
      counts=np.load(entry / "counts.npy"))


def store_path(corpus: Corpus, vocab_size: int, cache_dir: Optional[str] = None,
               tokenizer_file: Optional[str] = None, sample_bytes: int = DEFAULT_SAMPLE_BYTES,
               shard_tokens: int = DEFAULT_SHARD_TOKENS) -> Path:
  """Where the token store of ``corpus`` lives (it may not exist yet)."""
  cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
  settings = f"{sample_bytes}:{shard_tokens}:{PIECE_BYTES}"
  if tokenizer_file is not None:
    settings += ":" + hashlib.sha256(Path(tokenizer_file).read_bytes()).hexdigest()
    if declared_bos(tokenizer_file) is not None:
      settings += ":" + declared_bos(tokenizer_file)
    vocab = "t"
  else:
    vocab = f"v{vocab_size}"
  digest = hashlib.sha256(settings.encode()).hexdigest()[:8]
  return cache_root / f"{corpus.fingerprint()}-{vocab}-{digest}-r{CACHE_VERSION}"


def prepare_tokens(corpus: Corpus, vocab_size: int, cache_dir: Optional[str] = None,
                   log=print, tokenizer_file: Optional[str] = None, *,
                   sample_bytes: int = DEFAULT_SAMPLE_BYTES,
                   shard_tokens: int = DEFAULT_SHARD_TOKENS) -> TokenizedCorpus:
  """Returns the token store of ``corpus`` at ``vocab_size``, building (or resuming) it if needed.

  With ``tokenizer_file`` the corpus is encoded with that tokenizer (a checkpoint's own, say)
  instead of a newly trained one; the store is then keyed by the tokenizer's hash too.
  """
  if tokenizer_file is None and vocab_size < 258:
    raise ValueError(f"model.d_vocab must be at least 258 (256 bytes + 2 special tokens) for "
                     f"byte-level BPE, got {vocab_size}")
  entry = store_path(corpus, vocab_size, cache_dir, tokenizer_file, sample_bytes, shard_tokens)
  fingerprint = entry.name.split("-")[0]
  if (entry / "manifest.json").exists():
    return _open_store(entry, fingerprint)
  entry.parent.mkdir(parents=True, exist_ok=True)
  with open(entry.parent / f".lock-{entry.name}", "a+") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
    if not (entry / "manifest.json").exists():
      _build_store(corpus, vocab_size, entry, tokenizer_file, sample_bytes, shard_tokens, log)
  return _open_store(entry, fingerprint)


def _build_store(corpus: Corpus, vocab_size: int, entry: Path, tokenizer_file: Optional[str],
                 sample_bytes: int, shard_tokens: int, log) -> None:
  started = time.time()
  folder = entry.parent / f".building-{entry.name}"
  folder.mkdir(exist_ok=True)
  log(f"preparing corpus {corpus.spec!r} ({len(corpus.train_files)} train + "
      f"{len(corpus.heldout_files)} held-out files, split by {corpus.split}) at vocab "
      f"{vocab_size} into {entry}")
  if (folder / "tokenizer.json").exists():
    tok = load_tokenizer(folder / "tokenizer.json")
  else:
    if tokenizer_file is None:
      tok = train_tokenizer(tokenizer_sample(corpus, sample_bytes), vocab_size)
      log(f"trained the tokenizer on up to {sample_bytes / 2**20:.0f} MiB of text in "
          f"{time.time() - started:.1f}s")
    else:
      tok = load_tokenizer(tokenizer_file)
    tmp = folder / "tokenizer.json.tmp"
    tok.save(str(tmp))
    os.replace(tmp, folder / "tokenizer.json")
  if tokenizer_file is None:
    bos_id, eot_id = tok.token_to_id(BOS), tok.token_to_id(EOT)
  else:
    bos_id = find_bos(tok, declared_bos(tokenizer_file))
    eot_id = tok.token_to_id(EOT) if tok.token_to_id(EOT) is not None else bos_id
  vocab = tok.get_vocab_size()
  dtype = np.uint16 if vocab <= 65536 else np.uint32
  splits = {split: _build_split(corpus, split, tok, eot_id, dtype, folder, shard_tokens, log)
            for split in ("train", "heldout")}
  counts = np.zeros(vocab, np.int64)
  for note in splits["train"]:
    shard = np.load(folder / note["file"], mmap_mode="r")
    for lo in range(0, len(shard), 1 << 20):  # bincount copies its input as int64
      counts += np.bincount(shard[lo:lo + (1 << 20)], minlength=vocab)[:vocab]
  n_train = sum(n["tokens"] for n in splits["train"])
  n_heldout = sum(n["tokens"] for n in splits["heldout"])
  if n_train <= int(counts[eot_id]) or n_heldout == 0:
    what = "training" if n_train <= int(counts[eot_id]) else "held-out"
    raise CorpusError(f"corpus {corpus.spec!r} has no {what} text (split by {corpus.split}, "
                      f"every {corpus.heldout_every}th held out); add text or lower "
                      "data.heldout_every")
  _save_atomic(folder / "counts.npy", counts)
  manifest = {
      "version": CACHE_VERSION, "spec": corpus.spec, "split": corpus.split,
      "heldout_every": corpus.heldout_every, "requested_vocab": vocab_size, "vocab_size": vocab,
      "bos_id": bos_id, "eot_id": eot_id, "dtype": np.dtype(dtype).name,
      "train_tokens": n_train, "heldout_tokens": n_heldout,
      "train_files": len(corpus.train_files), "heldout_files": len(corpus.heldout_files),
      "skipped_files": [list(s) for s in corpus.skipped],
      "tokenizer_sample_bytes": sample_bytes, "shard_tokens": shard_tokens,
      "splits": {s: [{"file": n["file"], "tokens": n["tokens"]} for n in notes]
                 for s, notes in splits.items()}}
  _write_json(folder / "manifest.json", manifest)
  os.replace(folder, entry)
  log(f"prepared {n_train:,} train + {n_heldout:,} held-out tokens in "
      f"{format_seconds(time.time() - started)}")
