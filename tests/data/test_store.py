"""reproduce.data.store: the token cache (reused, safe under concurrency), the sharded store read
like one array, a killed build resumed, the tokenizer sample, and bounded memory."""

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reproduce.data import batches
from reproduce.data.corpus import resolve_corpus
from reproduce.data.store import BOS, ShardedTokens, prepare_tokens, tokenizer_sample

from tests.support.paths import ROOT
from tests.support.text import words as _words, write_corpus as _write_corpus


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


@pytest.mark.slow  # a 5 MB file tokenized in a child process
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
