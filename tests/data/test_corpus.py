"""reproduce.data.corpus: corpus resolution, the held-out splits (by file, by document, by byte
range), corpus hygiene and clear errors."""

import json

import numpy as np
import pytest

from reproduce.data.corpus import CorpusError, resolve_corpus
from reproduce.data.store import EOT, prepare_tokens
from reproduce.train.loop import train

from tests.support.text import words as _words


def test_stdlib_corpus_is_deterministic_and_split_by_file():
  a = resolve_corpus("stdlib", max_files=40, heldout_every=4)
  b = resolve_corpus("stdlib", max_files=40, heldout_every=4)
  assert a == b and a.fingerprint() == b.fingerprint()
  assert len(a.train_files) == 30 and len(a.heldout_files) == 10
  assert not set(a.train_files) & set(a.heldout_files)
  assert all(f.endswith(".py") and "site-packages" not in f for f in a.train_files)


def test_local_files_globs_and_jsonl(tmp_path):
  (tmp_path / "a.txt").write_text("alpha beta gamma\n")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "b.txt").write_text("delta epsilon\n")
  (tmp_path / "c.jsonl").write_text(json.dumps({"body": "one"}) + "\n\n" +
                                    json.dumps({"body": "two"}) + "\n")
  corpus = resolve_corpus(f"{tmp_path}/*.txt,{tmp_path}/sub,{tmp_path}/c.jsonl", jsonl_field="body",
                          heldout_every=2)
  docs = list(corpus.documents("train")) + list(corpus.documents("heldout"))
  assert sorted(docs) == sorted(["alpha beta gamma\n", "delta epsilon\n", "one", "two"])


def test_bad_corpora_give_clear_errors(tmp_path):
  with pytest.raises(CorpusError, match="matches no files"):
    resolve_corpus(str(tmp_path / "nothing-*.txt"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "blank.txt").write_text("")
  (tmp_path / "empty" / "image.bin").write_bytes(b"\x00\x01\x02")
  with pytest.raises(CorpusError, match="no non-empty text files"):
    resolve_corpus(str(tmp_path / "empty"))
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"other": 1}\n')
  with pytest.raises(CorpusError, match=r"bad.jsonl:2: record has no field 'text'"):
    list(resolve_corpus(str(tmp_path / "bad.jsonl")).documents("train"))


def test_single_jsonl_file_is_split_by_documents(tmp_path):
  path = tmp_path / "one.jsonl"
  records = [f"document {i}: {_words(20, i)}" for i in range(40)]
  path.write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
  corpus = resolve_corpus(str(path), heldout_every=4)
  assert corpus.split == "document"
  train, heldout = list(corpus.documents("train")), list(corpus.documents("heldout"))
  assert heldout == [r for i, r in enumerate(records) if i % 4 == 2]  # the rule, spelled out
  assert train == [r for i, r in enumerate(records) if i % 4 != 2]
  assert not set(train) & set(heldout)


def test_single_text_file_is_split_by_byte_ranges(tmp_path):
  lines = [f"line {i} {_words(8, i)}\n" for i in range(500)]
  path = tmp_path / "one.txt"
  path.write_text("".join(lines))
  corpus = resolve_corpus(str(path), heldout_every=5)
  train, heldout = list(corpus.documents("train")), list(corpus.documents("heldout"))
  assert len(train) == 4 and len(heldout) == 1  # ranges 0, 1, 3, 4 train; range 2 held out
  assert "".join(train[:2] + heldout + train[2:]) == path.read_text()  # the ranges tile the file
  held_lines = set(heldout[0].splitlines(keepends=True))
  assert held_lines and all(d.endswith("\n") for d in train + heldout)  # cut after newlines
  assert not held_lines & {l for d in train for l in d.splitlines(keepends=True)}
  size = path.stat().st_size
  assert abs(len(heldout[0]) - size / 5) < 100  # about a fifth of the file
  cache = str(tmp_path / "cache")
  tokens = prepare_tokens(corpus, 300, cache, log=lambda *_: 0)
  text = tokens.tokenizer().decode(list(np.asarray(tokens.heldout)))
  assert text.replace(EOT, "") == heldout[0]


def test_binary_file_without_nul_is_skipped_with_a_warning(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "blob.dat").write_bytes(bytes(rng.integers(1, 256, 200_000, dtype=np.uint8)))
  (tmp_path / "koi8.txt").write_bytes("Привет, мир! " .encode("koi8_r") * 1000)
  (tmp_path / "good.txt").write_text("plain text\n" * 100)
  warnings = []
  corpus = resolve_corpus(str(tmp_path), heldout_every=2, warn=warnings.append)
  assert corpus.train_files + corpus.heldout_files == (str(tmp_path / "good.txt"),) * 2
  assert len(warnings) == 2 and all("not UTF-8 text" in w for w in warnings)
  assert str(tmp_path / "blob.dat") in warnings[0] and str(tmp_path / "koi8.txt") in warnings[1]


def test_empty_corpus_is_an_error(make_config, tmp_path):
  (tmp_path / "corpus").mkdir()
  with pytest.raises(CorpusError, match="corpus entry .*corpus' matches no files"):
    train(make_config(data=dict(corpus=str(tmp_path / "corpus"))), tmp_path / "w")
  (tmp_path / "corpus" / "empty.txt").write_text("")
  with pytest.raises(CorpusError, match="no non-empty text files"):
    train(make_config(data=dict(corpus=str(tmp_path / "corpus"))), tmp_path / "w")
