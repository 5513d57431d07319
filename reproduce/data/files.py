"""Reading one corpus file as bounded pieces of text: plain text (whole, or cut into byte ranges
for a document split), JSONL (plain or gzipped) and Parquet, each resumable from a ``Position``.
``reproduce.data.corpus`` decides which files and which split; see its docstring for the rules."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Callable, Iterator, List, NamedTuple, Tuple

PIECE_BYTES = 1 << 16  # longest piece of text handed to the tokenizer at once (bounds its memory)


_READ_BYTES = 4 << 20  # read size of the streaming readers


_CUT_WINDOW = 1 << 12  # how far back from PIECE_BYTES a word boundary is looked for


_CUT_BYTES = re.compile(rb"[\x21-\x7e][ \n](?=[\x21-\x7e])")


_CUT_TEXT = re.compile(r"[\x21-\x7e][ \n](?=[\x21-\x7e])")


class CorpusError(ValueError):
  """A corpus that names no readable text, or a file in it that cannot be read."""


class Position(NamedTuple):
  """Where reading a split stands: file ``file`` of the split, at byte (or Parquet row)
  ``offset``, after ``record`` records (``line`` lines for JSONL, to name errors), with the
  first ``part`` pieces of the record there already read."""

  file: int = 0
  offset: int = 0
  record: int = 0
  line: int = 0
  part: int = 0


class Piece(NamedTuple):
  text: str
  doc_end: bool  # the last piece of its document
  after: Position  # reading restarts here to continue after this piece
  bytes_done: int  # input bytes of the split consumed so far (for progress)


def file_kind(path) -> str:
  name = str(path).lower()
  if name.endswith(".jsonl"):
    return "jsonl"
  if name.endswith(".jsonl.gz"):
    return "jsonl.gz"
  if name.endswith(".parquet"):
    return "parquet"
  return "text"


def unit_selector(split: str, every: int) -> Callable[[int], bool]:
  if split == "train":
    return lambda unit: unit % every != every // 2
  return lambda unit: unit % every == every // 2


def _cut(buf, limit: int, pattern) -> int:
  """Where to end a piece of ``buf`` (longer than ``limit``): just before the last word-start
  space/newline in ``buf[limit - _CUT_WINDOW : limit]``, else at ``limit`` (moved back to a
  UTF-8 character boundary for bytes)."""
  best = -1
  for m in pattern.finditer(buf, max(1, limit - _CUT_WINDOW), limit + 1):
    best = m.start() + 1
  if best > 0:
    return best
  cut = limit
  if isinstance(buf, bytes):
    while cut > 1 and 0x80 <= buf[cut] < 0xC0:
      cut -= 1
  return cut


def _split_text(text: str) -> List[str]:
  """A long string as pieces of at most ``PIECE_BYTES`` characters, cut at word starts."""
  out = []
  while len(text) > PIECE_BYTES:
    cut = _cut(text, PIECE_BYTES, _CUT_TEXT)
    out.append(text[:cut])
    text = text[cut:]
  out.append(text)
  return out


def _text_ranges(path: Path, n: int) -> List[Tuple[int, int]]:
  """``n`` consecutive byte ranges covering the file, each cut just after a newline."""
  size = path.stat().st_size
  cuts = [0]
  with open(path, "rb") as f:
    for k in range(1, n):
      nominal = max(cuts[-1], size * k // n)
      f.seek(nominal)
      block = f.read(PIECE_BYTES)
      nl = block.find(b"\n")
      cut = nominal + nl + 1 if nl >= 0 else nominal
      while 0 < cut < size and cut == nominal:  # no newline near: a character boundary
        f.seek(cut)
        if not 0x80 <= f.read(1)[0] < 0xC0:
          break
        cut += 1
        nominal += 1
      cuts.append(min(max(cut, cuts[-1]), size))
  cuts.append(size)
  return list(zip(cuts[:-1], cuts[1:]))


def _read_text(path: Path, pos: Position, select, corpus):
  """A text file: one document (file split) or ``heldout_every`` range documents."""
  try:
    yield from _read_text_ranges(path, pos, select, corpus)
  except OSError as e:
    raise CorpusError(f"{path}: cannot read ({e})") from None


def _read_text_ranges(path: Path, pos: Position, select, corpus):
  size = path.stat().st_size
  ranges = [(0, size)] if select is None else _text_ranges(path, corpus.heldout_every)
  with open(path, "rb") as f:
    for unit, (lo, hi) in enumerate(ranges):
      if (select is not None and not select(unit)) or hi <= pos.offset or hi == lo:
        continue
      offset = max(lo, pos.offset)
      f.seek(offset)
      buf = b""
      while True:
        while len(buf) <= PIECE_BYTES and offset + len(buf) < hi:
          block = f.read(min(_READ_BYTES, hi - offset - len(buf)))
          if not block:  # the file shrank while we read it
            hi = offset + len(buf)
            break
          buf += block
        if len(buf) > PIECE_BYTES:
          cut = _cut(buf, PIECE_BYTES, _CUT_BYTES)
          offset += cut
          yield (buf[:cut].decode("utf-8", "replace"), False, Position(pos.file, offset, unit + 1),
                 offset)
          buf = buf[cut:]
          continue
        offset += len(buf)
        yield buf.decode("utf-8", "replace"), True, Position(pos.file, offset, unit + 1), offset
        break


def _read_jsonl(path: Path, pos: Position, select, corpus):
  """JSONL (optionally gzipped): one document per non-blank line's ``text_field``."""
  gz = file_kind(path) == "jsonl.gz"
  raw = open(path, "rb")  # pylint: disable=consider-using-with
  try:
    f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
    f.seek(pos.offset)  # a gzip stream seeks forward by decompressing
    offset, record, line_no = pos.offset, pos.record, pos.line
    for line in f:
      offset += len(line)
      line_no += 1
      if not line.strip():
        continue
      unit = record
      record += 1
      after = Position(pos.file, offset, record, line_no)
      done = raw.tell() if gz else offset
      if select is not None and not select(unit):
        continue
      try:
        value = json.loads(line.decode("utf-8", "replace"))
      except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
      if not isinstance(value, dict) or corpus.jsonl_field not in value:
        raise CorpusError(f"{path}:{line_no}: record has no field {corpus.jsonl_field!r} "
                          "(set data.jsonl_field)")
      text = value[corpus.jsonl_field]
      if isinstance(text, str) and text:
        parts = _split_text(text)
        skip, pos = (pos.part, pos._replace(part=0)) if unit == pos.record else (0, pos)
        for k in range(skip, len(parts)):
          last = k == len(parts) - 1
          # inside a record, reading restarts at the record and skips the pieces already read
          within = Position(pos.file, offset - len(line), unit, line_no - 1, k + 1)
          yield parts[k], last, after if last else within, done
  except (OSError, EOFError, zlib.error) as e:
    raise CorpusError(f"{path}: cannot read ({e})") from None
  finally:
    raw.close()


def _read_parquet(path: Path, pos: Position, select, corpus):
  """Parquet: one document per row of the ``text_field`` column, read in row batches."""
  pf = open_parquet(path, corpus.jsonl_field)
  size, rows = path.stat().st_size, max(pf.metadata.num_rows, 1)
  first_row, groups = 0, []
  for g in range(pf.metadata.num_row_groups):
    n = pf.metadata.row_group(g).num_rows
    if first_row + n > pos.offset:
      groups.append(g)
    elif not groups:
      first_row += n
  row = first_row
  if not groups:
    return
  for batch in _parquet_batches(pf, path, groups, corpus.jsonl_field):
    for text in batch:
      unit = row
      row += 1
      if unit < pos.offset or (select is not None and not select(unit)):
        continue
      if isinstance(text, str) and text:
        parts = _split_text(text)
        skip = pos.part if unit == pos.offset else 0
        for k in range(skip, len(parts)):
          last = k == len(parts) - 1
          after = Position(pos.file, row, row) if last else Position(pos.file, unit, unit, 0, k + 1)
          yield parts[k], last, after, size * row // rows


def _parquet_batches(pf, path: Path, groups, field: str) -> Iterator[list]:
  batches = pf.iter_batches(batch_size=256, row_groups=groups, columns=[field])
  while True:
    try:
      batch = next(batches, None)
    except Exception as e:  # pyarrow raises its own error types for damaged files
      raise CorpusError(f"{path}: cannot read Parquet rows ({e})") from None
    if batch is None:
      return
    yield batch.column(0).to_pylist()


def open_parquet(path: Path, field: str):
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CorpusError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
  try:
    pf = pq.ParquetFile(path)
  except Exception as e:  # pyarrow raises its own error types for damaged files
    raise CorpusError(f"{path}: not a readable Parquet file ({e})") from None
  if field not in pf.schema_arrow.names:
    raise CorpusError(f"{path}: Parquet file has no column {field!r} (set data.jsonl_field; "
                      f"columns: {pf.schema_arrow.names[:10]})")
  return pf


READERS = {"text": _read_text, "jsonl": _read_jsonl, "jsonl.gz": _read_jsonl,
            "parquet": _read_parquet}
