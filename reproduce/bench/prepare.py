"""``python -m reproduce.bench prepare``: throughput and peak memory of ``python -m
reproduce.prepare`` at two corpus sizes (see ``bench_prepare``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reproduce.data.corpus import stdlib_files

ROOT = Path(__file__).resolve().parent.parent

# Runs `python -m reproduce.prepare ARGS` and then prints this process image's own peak RSS
# (Linux VmHWM; ru_maxrss would also count the parent, which vfork/exec carries over).
_PEAK_RSS_CHILD = """
import runpy, sys
sys.argv[0] = "reproduce.prepare"
try:
  runpy.run_module("reproduce.prepare", run_name="__main__", alter_sys=True)
finally:
  print("peak_kib=" + [l.split()[1] for l in open("/proc/self/status")
                       if l.startswith("VmHWM")][0], file=sys.stderr)
"""


def _peak_kib(stderr: str) -> int:
  return int(stderr.rsplit("peak_kib=", 1)[1].split()[0])


def _write_corpus(folder: Path, size_mb: int, sources, rng) -> tuple:
  """``size_mb`` MB of whole ``sources`` files in ``rng``'s order, as ~1 MB text files in
  ``folder``; returns (bytes written, files written)."""
  folder.mkdir()
  written, part, n_files = 0, [], 0
  while written < size_mb * 10**6:
    text = sources[int(rng.integers(len(sources)))].read_bytes()
    part.append(text)
    written += len(text)
    if sum(map(len, part)) >= 10**6 or written >= size_mb * 10**6:
      (folder / f"part-{n_files:05d}.txt").write_bytes(b"".join(part))
      part, n_files = [], n_files + 1
  return written, n_files


def _run_prepare(corpus: Path, tmp: Path, sample_mib: int, shard_tokens: int):
  """(its JSON manifest, seconds, peak RSS in KiB) of ``python -m reproduce.prepare`` on
  ``corpus``, in a child process with its cache under ``tmp``."""
  cmd = [sys.executable, "-c", _PEAK_RSS_CHILD, "--config=configs/attn2l.py:cpu",
         f"--config.data.corpus={corpus}", f"--config.data.cache_dir={tmp / 'cache'}",
         f"--config.data.tokenizer_sample_bytes={sample_mib << 20}",
         f"--config.data.shard_tokens={shard_tokens}"]
  started = time.perf_counter()
  with open(tmp / "stderr.txt", "w+b") as err:
    child = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, check=False)
    seconds = time.perf_counter() - started
    err.seek(0)
    log = err.read().decode()
  if child.returncode != 0:
    raise RuntimeError(f"prepare failed: {log[-2000:]}")
  return json.loads(child.stdout), seconds, _peak_kib(log)


def bench_prepare(sizes_mb=(8, 40), sample_mib: int = 4, shard_tokens: int = 1 << 20,
                  seed: int = 0) -> dict:
  """Throughput and peak memory of ``python -m reproduce.prepare`` at corpus sizes 5× apart.

  Each corpus is written to a temporary folder as 1 MB text files of whole standard-library
  files in a seeded random order, so it is real code and prose, repeated.  The tokenizer
  sample (``sample_mib``) and the shard size are smaller than both corpora, so a peak RSS that
  did not grow with the corpus would show that nothing scales with it.  Peak RSS is the child
  process's own (Linux VmHWM), next to that of a child that only imports the command; tokens/s
  counts both splits over the whole command, tokenizer training included.
  """
  sources = stdlib_files()
  rng = np.random.default_rng(seed)
  runs = []
  with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
    for size_mb in sizes_mb:
      corpus = Path(tmp) / f"corpus-{size_mb}mb"
      written, n_files = _write_corpus(corpus, size_mb, sources, rng)
      manifest, seconds, peak_kib = _run_prepare(corpus, Path(tmp), sample_mib, shard_tokens)
      tokens = manifest["train_tokens"] + manifest["heldout_tokens"]
      runs.append({"corpus_mb": round(written / 1e6, 1), "files": n_files, "tokens": tokens,
                   "shards": -(-manifest["train_tokens"] // shard_tokens),
                   "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds),
                   "mb_per_s": round(written / 1e6 / seconds, 2),
                   "peak_rss_mib": round(peak_kib / 1024, 1)})
    imports = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, "--helpshort"], cwd=ROOT,
                             capture_output=True, text=True, check=False)
  return {"runs": runs, "tokenizer_sample_mib": sample_mib, "shard_tokens": shard_tokens,
          "vocab": 2048, "cpu_count": os.cpu_count(),
          "imports_only_rss_mib": round(_peak_kib(imports.stderr) / 1024, 1),
          "rss_ratio_large_to_small": round(runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], 3)}
