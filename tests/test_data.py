"""Corpus resolution and splits, corpus hygiene, the sharded token store, and batches as pure
functions of (seed, index)."""

import gzip
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reproduce.config import validate
from reproduce.data import files as corpus_module
from reproduce.data import batches
from reproduce.data.corpus import CorpusError, resolve_corpus
from reproduce.data.store import (BOS, EOT, ShardedTokens, prepare_tokens, tokenizer_sample,
                                 train_tokenizer)

ROOT = str(Path(__file__).resolve().parent.parent)


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


def _prepare(args):
  corpus_spec, cache = args
  tokens = prepare_tokens(resolve_corpus(corpus_spec, heldout_every=2), 300, cache, log=lambda *_: 0)
  return tokens.fingerprint, int(tokens.train.sum())


def test_token_cache_is_reused_and_safe_under_concurrency(tmp_path):
  for i in range(4):
    (tmp_path / f"doc{i}.txt").write_text(f"def function_{i}(x):\n    return x * {i}\n" * 50)
  spec, cache = f"{tmp_path}/*.txt", str(tmp_path / "cache")
  with multiprocessing.get_context("spawn").Pool(3) as pool:
    results = pool.map(_prepare, [(spec, cache)] * 3)
  assert len(set(results)) == 1  # every racing run got the same complete entry
  entries = [e for e in os.listdir(cache) if not e.startswith(".")]
  assert len(entries) == 1 and not [e for e in os.listdir(cache) if e.startswith(".building")]
  logged = []
  tokens = prepare_tokens(resolve_corpus(spec, heldout_every=2), 300, cache, log=logged.append)
  assert logged == []  # served from the cache
  tok = tokens.tokenizer()
  assert tok.token_to_id(BOS) == tokens.bos_id == 0
  assert tok.decode(list(tokens.train[:20])).startswith("def function_")


def test_batches_are_pure_functions_of_seed_and_index():
  tokens = np.arange(1000, dtype=np.uint16) + 5
  a = batches.train_batch(tokens, seed=3, index=7, batch_size=4, n_ctx=16, bos_id=0)
  b = batches.train_batch(tokens, seed=3, index=7, batch_size=4, n_ctx=16, bos_id=0)
  c = batches.train_batch(tokens, seed=3, index=8, batch_size=4, n_ctx=16, bos_id=0)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  inputs, targets = a
  assert np.all(inputs[:, 0] == 0)  # every window starts with BOS
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])  # targets are the next tokens
  np.testing.assert_array_equal(np.diff(targets, axis=1), 1)  # contiguous windows
  with pytest.raises(ValueError, match="fewer than n_ctx"):
    batches.train_batch(tokens[:10], 0, 0, 2, 16, 0)


# --- the sharded token store, held-out splits of single files, corpus hygiene ----------------

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega return yield lambda class def import").split()


def _words(n, seed):
  rng = np.random.default_rng(seed)
  return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


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


def _write_corpus(folder, n_files, words_per_file):
  folder.mkdir()
  for i in range(n_files):
    (folder / f"doc{i:02d}.txt").write_text(
        "\n".join(_words(12, 100 * i + k) for k in range(words_per_file // 12)))


def test_sharded_store_reads_like_one_array(tmp_path):
  _write_corpus(tmp_path / "corpus", 8, 3000)
  corpus = resolve_corpus(str(tmp_path / "corpus"), heldout_every=4)
  one = prepare_tokens(corpus, 300, str(tmp_path / "a"), log=lambda *_: 0)
  many = prepare_tokens(corpus, 300, str(tmp_path / "b"), log=lambda *_: 0, shard_tokens=1000)
  assert isinstance(one.train, np.ndarray) and isinstance(many.train, ShardedTokens)
  assert len(many.train.shards) > 5
  flat = np.concatenate([np.asarray(s) for s in many.train.shards])
  np.testing.assert_array_equal(flat, one.train)  # the stream does not depend on the shard size
  np.testing.assert_array_equal(many.counts, np.bincount(flat, minlength=len(many.counts)))
  rng = np.random.default_rng(0)
  idx = rng.integers(0, len(flat), (7, 13))
  np.testing.assert_array_equal(many.train[idx], flat[idx])
  assert many.train[len(flat) - 1] == flat[-1] and many.train[-1] == flat[-1]
  np.testing.assert_array_equal(many.train[990:2017], flat[990:2017])
  for index in (0, 5):
    a = batches.train_batch(many.train, 1, index, 8, 32, 0)
    b = batches.train_batch(one.train, 1, index, 8, 32, 0)
    np.testing.assert_array_equal(a[0], b[0])
    for p in range(4):  # each of 4 processes reads only its rows, which tile the global batch
      rows = batches.process_rows(8, p, 4)
      part = batches.train_batch(many.train, 1, index, 8, 32, 0, rows=rows)
      np.testing.assert_array_equal(part[1], b[1][2 * p:2 * p + 2])


PREPARE_CHILD = """
import sys
from reproduce.data.corpus import resolve_corpus
from reproduce.data.store import prepare_tokens
prepare_tokens(resolve_corpus(sys.argv[1], heldout_every=4), 300, sys.argv[2],
               log=lambda line: print(line, flush=True), shard_tokens=2000)
"""


def test_killed_prepare_resumes_after_its_finished_shards(tmp_path):
  _write_corpus(tmp_path / "corpus", 12, 12000)
  spec, cache = str(tmp_path / "corpus"), tmp_path / "cache"
  child = subprocess.Popen([sys.executable, "-c", PREPARE_CHILD, spec, str(cache)], cwd=ROOT,
                           stdout=subprocess.DEVNULL)
  deadline = time.time() + 60
  try:
    while not list(cache.glob(".building-*/train-00003.json")) and time.time() < deadline:
      assert child.poll() is None, "the build finished before it could be killed"
      time.sleep(0.01)
  finally:
    child.kill()
    child.wait()
  building = next(cache.glob(".building-*"))
  kept = {p.name: p.stat().st_mtime_ns for p in building.glob("train-*.npy")}
  assert len(kept) >= 4 and not list(cache.glob("*-r*/manifest.json"))
  logged = []
  corpus = resolve_corpus(spec, heldout_every=4)
  resumed = prepare_tokens(corpus, 300, str(cache), log=logged.append, shard_tokens=2000)
  assert any("resuming train after" in line for line in logged)
  entry = resumed.tokenizer_path.parent
  for name, mtime in kept.items():  # finished shards were kept, not rewritten
    assert (entry / name).stat().st_mtime_ns == mtime
  fresh = prepare_tokens(corpus, 300, str(tmp_path / "fresh"), log=lambda *_: 0,
                         shard_tokens=10 ** 6)
  np.testing.assert_array_equal(np.asarray(resumed.train), fresh.train)
  np.testing.assert_array_equal(np.asarray(resumed.heldout), fresh.heldout)


def test_tokenizer_sample_is_bounded_and_spread(tmp_path):
  _write_corpus(tmp_path / "corpus", 9, 6000)
  corpus = resolve_corpus(str(tmp_path / "corpus"), heldout_every=3)
  total = corpus.total_bytes("train")
  sample = list(tokenizer_sample(corpus, total // 10))
  assert 0.8 * total // 10 <= sum(map(len, sample)) <= total // 10
  firsts = {Path(f).read_text()[:40] for f in corpus.train_files}
  assert {s[:40] for s in sample} == firsts  # a share of every training file
  assert "".join(tokenizer_sample(corpus, total)) == "".join(corpus.documents("train"))


MEMORY_CHILD = """
import sys
from reproduce.data.corpus import resolve_corpus
from reproduce.data.store import prepare_tokens
t = prepare_tokens(resolve_corpus(sys.argv[1], heldout_every=4), 300, sys.argv[2],
                   log=lambda *_: 0, sample_bytes=1 << 20)
status = dict(l.split(":", 1) for l in open("/proc/self/status"))  # this image's own peak:
print(len(t.train), len(t.heldout), status["VmHWM"].split()[0])  # ru_maxrss counts the parent's
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmHWM")
def test_long_single_line_file_in_bounded_memory(tmp_path):
  path = tmp_path / "line.txt"
  path.write_text(_words(900_000, 7)[:5_000_000])  # 5 MB, no newline
  out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path), str(tmp_path / "c")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
  n_train, n_heldout, peak_kib = map(int, out.stdout.split())
  assert n_train > 2 * n_heldout > 0  # three of the four byte ranges train
  # the line is read and encoded in bounded pieces (corpus.PIECE_BYTES), so the interpreter, the
  # libraries and the 1 MiB tokenizer sample dominate, not the line's length
  assert peak_kib < 500 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_prepare_command_and_its_errors(tmp_path):
  (tmp_path / "ok").mkdir()
  for i in range(3):
    (tmp_path / "ok" / f"{i}.txt").write_text(f"text number {i}\n" + _words(400, i))
  (tmp_path / "ok" / "blob.bin").write_bytes(bytes(range(1, 256)) * 100)
  base = [sys.executable, "-m", "reproduce.prepare", "--config=configs/attn0l.py:test",
          f"--config.data.cache_dir={tmp_path / 'cache'}"]
  run = lambda corpus: subprocess.run(base + [f"--config.data.corpus={corpus}"], cwd=ROOT,
                                      capture_output=True, text=True, timeout=120)
  out = run(tmp_path / "ok")
  assert out.returncode == 0, out.stderr
  assert f"warning: skipping {tmp_path / 'ok' / 'blob.bin'}: not UTF-8 text" in out.stderr
  manifest = json.loads(out.stdout)
  assert manifest["train_tokens"] > 0 and manifest["heldout_tokens"] > 0
  assert (Path(manifest["store"]) / "manifest.json").exists()
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"other": 1}\n{"text": "fine"}\n')
  out = run(tmp_path / "bad.jsonl")
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'bad.jsonl'}:2: record has no field 'text' (set data.jsonl_field)")


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


def test_new_data_fields_are_validated(make_config):
  for field, value in (("tokenizer_sample_bytes", 1000), ("shard_tokens", 10)):
    c = make_config("attn0l")
    c.unlock()
    c.data[field] = value
    with pytest.raises(ValueError, match=f"data.{field}"):
      validate(c)
