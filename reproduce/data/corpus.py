"""Where training text comes from: the standard library's own source, or the user's local files.

A corpus spec is either ``"stdlib"`` (every ``.py`` file of the running interpreter's standard
library, ``site-packages`` excluded: real text on every machine, no download) or a comma-separated
list of local paths, directories and globs.  Directories are searched recursively.  File kinds, by
name: ``.jsonl`` and ``.jsonl.gz`` give one document per record (the ``text_field`` of each JSON
object), ``.parquet`` one document per row (its ``text_field`` column, read with pyarrow in row
batches); any other file is one document of UTF-8 text.  A file that does not look like text (a
NUL byte, or more than ``NOT_TEXT_RATIO`` of invalid UTF-8 and control characters in its first
``SNIFF_BYTES``) is skipped with a warning naming it (the stdlib corpus keeps its few test files
in legacy encodings: only NUL bytes exclude a stdlib file).

Files are sorted by path, so the same spec gives the same corpus everywhere.  The held-out split:

- by file, when there are enough files: every ``heldout_every``-th file, counting from the middle
  of the first stride (file ``k`` is held out iff ``k % heldout_every == heldout_every // 2``);
- by document, when there are too few files for that (a single ``.jsonl`` or text file, say):
  record ``r`` of each JSONL/Parquet file is held out iff ``r % heldout_every == heldout_every //
  2``; a plain text file is cut into ``heldout_every`` byte ranges of equal size (each cut moved
  forward to just after the next newline) and range ``heldout_every // 2`` is held out.
  Each range is then its own document.  No text is ever in both splits.

Everything is streamed: a document reaches the tokenizer as pieces of at most ``PIECE_BYTES``,
cut just before an ASCII space or newline that sits between two printable ASCII characters.  The
byte-level pre-tokenizer always starts a new word there, so the pieces encode to exactly the
tokens of the whole document; only a piece with no such point is cut hard (at a character
boundary).  ``pieces(split, start)`` yields each piece with the position after it, from which
reading can restart: the token store's builder uses it to resume after being killed.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import os
import sys
import sysconfig
import zlib
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from reproduce.data.files import (READERS, CorpusError, Piece, Position, file_kind, open_parquet,
                                    unit_selector)

SNIFF_BYTES = 1 << 16  # bytes read from the start of each file to decide whether it is text
NOT_TEXT_RATIO = 0.10  # invalid UTF-8 + control characters above this fraction: not text
DEFAULT_HELDOUT_EVERY = 20  # every n-th file (or document) is held out (config data.heldout_every)
_CONTROL = bytes(sorted(set(range(32)) - {9, 10, 11, 12, 13, 27} | {127}))  # not in text


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A resolved corpus: its files and how they are split into training and held-out text.

  With ``split == "file"`` the two file lists are disjoint; with ``split == "document"`` both
  are every file and each split reads its own documents (or byte ranges) of them.
  """

  spec: str
  train_files: tuple
  heldout_files: tuple
  jsonl_field: str = "text"
  split: str = "file"
  heldout_every: int = DEFAULT_HELDOUT_EVERY
  skipped: tuple = ()  # (path, reason) of files left out as not text

  def files(self, split: str) -> tuple:
    return self.train_files if split == "train" else self.heldout_files

  def total_bytes(self, split: str) -> int:
    return sum(Path(f).stat().st_size for f in self.files(split))

  def fingerprint(self) -> str:
    """The cache key: sha256 over the split rule and, per file, its path, size, modification
    time and the bytes of its first and last 64 KiB.

    It costs a stat and two small reads per file, whatever the corpus size (hashing every byte
    of a billion-token corpus at each start would take minutes).  An edit that keeps a file's
    size, modification time and both ends is not noticed; touch the file to force a rebuild.
    """
    h = hashlib.sha256()
    h.update(f"{self.jsonl_field}\n{self.split}\n{self.heldout_every}\n".encode())
    for split in ("train", "heldout"):
      for f in self.files(split):
        st = os.stat(f)
        h.update(f"{split}:{f}:{st.st_size}:{st.st_mtime_ns}:".encode())
        with open(f, "rb") as fh:
          h.update(hashlib.sha256(fh.read(SNIFF_BYTES)).digest())
          if st.st_size > SNIFF_BYTES:
            fh.seek(max(SNIFF_BYTES, st.st_size - SNIFF_BYTES))
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:16]

  def pieces(self, split: str = "train", start: Position = Position()) -> Iterator[Piece]:
    """The split's text as pieces of at most ``PIECE_BYTES``, from ``start`` on."""
    files = self.files(split)
    done = sum(Path(f).stat().st_size for f in files[:start.file])
    for i in range(start.file, len(files)):
      path = Path(files[i])
      pos = start if i == start.file else Position(i)
      select = None
      if self.split == "document":
        select = unit_selector(split, self.heldout_every)
      reader = READERS[file_kind(path)]
      for text, doc_end, after, file_done in reader(path, pos, select, self):
        yield Piece(text, doc_end, after, done + file_done)
      done += path.stat().st_size

  def documents(self, split: str = "train") -> Iterator[str]:
    """Whole documents (for small corpora and tests; ``pieces`` is the bounded-memory way)."""
    parts = []
    for piece in self.pieces(split):
      parts.append(piece.text)
      if piece.doc_end:
        yield "".join(parts)
        parts = []


def not_text_reason(path: Path) -> Optional[str]:
  """Why ``path`` is not a text (or JSONL) file, from its first ``SNIFF_BYTES``; None if it is."""
  try:
    if file_kind(path) == "jsonl.gz":
      with gzip.open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    else:
      with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
  except (OSError, EOFError, zlib.error) as e:
    return f"unreadable ({e})"
  if b"\0" in head:
    return "binary (holds NUL bytes)"
  text = head.decode("utf-8", "replace")
  if len(head) == SNIFF_BYTES:  # a character cut by the sample's end is not an error
    text = text.rstrip("\ufffd")
  bad = text.count("\ufffd") + len(head) - len(head.translate(None, _CONTROL))
  if text and bad > NOT_TEXT_RATIO * len(text):
    return f"not UTF-8 text ({bad / len(text):.0%} invalid or control characters)"
  return None


def stdlib_files() -> List[Path]:
  root = Path(sysconfig.get_paths()["stdlib"])
  return sorted(f for f in root.rglob("*.py")
                if "site-packages" not in f.parts and "__pycache__" not in f.parts)


def _expand(spec: str) -> List[Path]:
  files: List[Path] = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    path = Path(os.path.expanduser(item))
    if path.is_dir():
      found = [p for p in path.rglob("*") if p.is_file()]
    elif path.is_file():
      found = [path]
    else:
      found = [Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True)
               if Path(p).is_file()]
    if not found:
      raise CorpusError(f"corpus entry {item!r} matches no files")
    files.extend(found)
  return sorted(set(files))


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr)


def resolve_corpus(spec: str = "stdlib", *, jsonl_field: str = "text", max_files: int = 0,
                   heldout_every: int = DEFAULT_HELDOUT_EVERY,
                   warn: Callable[[str], None] = _warn) -> Corpus:
  """Turns a corpus spec into a ``Corpus``; raises ``CorpusError`` if it holds no text.

  Cheap whatever the corpus size (a stat and a 64 KiB read per file, a schema read per Parquet
  file), so it can validate a run's corpus before anything is written.  ``max_files`` > 0 keeps
  that many files, evenly spaced through the sorted list (for quick runs).  Files that are not
  text are skipped, each with a ``warn`` naming it.
  """
  if heldout_every < 2:
    raise ValueError(f"data.heldout_every must be >= 2, got {heldout_every}")
  files = stdlib_files() if spec == "stdlib" else _expand(spec)
  kept, skipped = [], []
  for f in files:
    if f.stat().st_size == 0:
      continue
    if file_kind(f) == "parquet":
      open_parquet(f, jsonl_field)
      kept.append(f)
      continue
    reason = not_text_reason(f)
    if spec == "stdlib" and reason and "NUL" not in reason:
      reason = None  # a few stdlib tests are text in legacy encodings: kept, as they always were
    if reason is None:
      kept.append(f)
    else:
      skipped.append((str(f), reason))
      warn(f"skipping {f}: {reason}")
  files = kept
  if not files:
    raise CorpusError(f"corpus {spec!r} has no non-empty text files")
  if max_files and len(files) > max_files:
    stride = len(files) / max_files
    files = [files[int(i * stride)] for i in range(max_files)]
  names = tuple(str(f) for f in files)
  offset = heldout_every // 2
  if len(files) <= offset:  # too few files to hold one out: split each file by documents
    return Corpus(spec=spec, train_files=names, heldout_files=names, jsonl_field=jsonl_field,
                  split="document", heldout_every=heldout_every, skipped=tuple(skipped))
  heldout = tuple(f for i, f in enumerate(names) if i % heldout_every == offset)
  train = tuple(f for i, f in enumerate(names) if i % heldout_every != offset)
  return Corpus(spec=spec, train_files=train, heldout_files=heldout, jsonl_field=jsonl_field,
                split="file", heldout_every=heldout_every, skipped=tuple(skipped))


def corpus_from_config(data_config, warn: Callable[[str], None] = _warn) -> Corpus:
  """The corpus a config's ``data`` section names (raises ``CorpusError`` naming the problem)."""
  return resolve_corpus(data_config.corpus, jsonl_field=data_config.jsonl_field,
                        max_files=data_config.max_files, heldout_every=data_config.heldout_every,
                        warn=warn)
