"""reproduce.data.files: the readers (text, JSONL, gzipped JSONL, Parquet) in bounded pieces that
encode like the whole text and restart exactly from every position."""

import gzip
import json
from pathlib import Path

import pytest

from reproduce.data import files as corpus_module
from reproduce.data.corpus import CorpusError, resolve_corpus
from reproduce.data.store import train_tokenizer

from tests.support.text import words as _words


def test_jsonl_gz_and_parquet_inputs(tmp_path):
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  docs = [f"record {i} {_words(5, i)}" for i in range(30)]
  with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
    f.writelines(json.dumps({"body": d}) + "\n" for d in docs[:10])
  pq.write_table(pa.table({"body": docs[10:], "n": list(range(20))}), tmp_path / "b.parquet",
                 row_group_size=7)
  corpus = resolve_corpus(str(tmp_path), jsonl_field="body", heldout_every=4)
  assert corpus.split == "document"  # two files: too few for a file split
  got = list(corpus.documents("train")) + list(corpus.documents("heldout"))
  assert sorted(got) == sorted(docs)
  with pytest.raises(CorpusError, match=r"b\.parquet: Parquet file has no column 'text'"):
    resolve_corpus(str(tmp_path / "b.parquet"))


def test_pieces_cut_at_word_starts_encode_like_the_whole_text():
  cut = lambda t: corpus_module._cut(t, 2000, corpus_module._CUT_TEXT)  # pylint: disable=protected-access
  text = "".join(Path(f).read_text() for f in resolve_corpus("stdlib").train_files[:12])
  text += " " + _words(3000, 1)  # and one long line
  tok = train_tokenizer([text], 400)
  pieces, rest = [], text
  while len(rest) > 2000:  # the reader's rule, at a small limit
    pieces.append(rest[:cut(rest)])
    rest = rest[len(pieces[-1]):]
  pieces.append(rest)
  assert "".join(pieces) == text and max(map(len, pieces)) <= 2000 and len(pieces) > 50
  ids = [i for enc in tok.encode_batch(pieces) for i in enc.ids]
  assert ids == tok.encode(text).ids
  assert cut("x" * 5000) == 2000  # no word start: a hard cut at the limit
  two_byte = "é".encode() * 3000  # a hard cut in bytes moves back to a character boundary
  assert corpus_module._cut(two_byte, 2001, corpus_module._CUT_BYTES) == 2000  # pylint: disable=protected-access


@pytest.mark.parametrize("kind", ["text", "one_text", "jsonl", "parquet"])
def test_reading_restarts_exactly_from_every_piece_position(tmp_path, kind):
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  docs = [_words(n, i) for i, n in enumerate([30, 40000, 5, 25000, 60, 12])]  # two > 64 KiB
  if kind == "text":
    for i, d in enumerate(docs):
      (tmp_path / f"{i}.txt").write_text(d)
  elif kind == "one_text":  # split into byte ranges
    (tmp_path / "a.txt").write_text("\n".join(docs))
  elif kind == "jsonl":
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  else:
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet", row_group_size=2)
  corpus = resolve_corpus(str(tmp_path), heldout_every=2)
  for split in ("train", "heldout"):
    pieces = list(corpus.pieces(split))
    assert max(len(p.text.encode()) for p in pieces) <= 1 << 16
    for k, piece in enumerate(pieces):
      rest = [(p.text, p.doc_end) for p in corpus.pieces(split, piece.after)]
      assert rest == [(p.text, p.doc_end) for p in pieces[k + 1:]], (split, k)
