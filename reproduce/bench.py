"""Benchmarks (scripts that print JSON; never run inside tests).

    python -m reproduce.bench train --config=configs/attn2l.py:cpu
    python -m reproduce.bench train --shape=anchor      # the issue's comparison shape
    python -m reproduce.bench circuits                  # paper-scale circuit maths, random weights
    python -m reproduce.bench prepare                   # token-store build: tokens/s, peak RSS

``train`` measures the machine's float32 matmul peak (a 4096³ product) in the same run and
reports model FLOP utilisation against it.  Model FLOPs per token follow the usual convention:
6·N (N = matmul parameters: W_U and the per-head W_Q, W_K, W_V, W_O; the embedding gather is
free) plus 12·L·H·d_head·n_ctx for the attention scores and mixing (the full square, masked half
included).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# The shape the issue compares against TransformerLens: 2 layers, d_model 128, 4 heads × 32,
# vocab 2048, n_ctx 256, batch 16.
ANCHOR = {"model": dict(n_layers=2, d_model=128, n_heads=4, d_head=32, d_vocab=2048, n_ctx=256),
          "train": dict(batch_size=16)}


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak_flops(n: int = 4096, repeats: int = 3) -> float:
  """Measured float32 FLOP/s of one n×n×n matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  return 2 * n ** 3 / _best_time(lambda: mm(a, b), repeats)


def model_flops_per_token(m) -> float:
  n_matmul = m.d_model * m.d_vocab + m.n_layers * 4 * m.d_model * m.n_heads * m.d_head
  return 6 * n_matmul + 12 * m.n_layers * m.n_heads * m.d_head * m.n_ctx


def bench_train(config, seconds: float = 15.0) -> dict:
  """Steady-state training throughput on random tokens (data loading excluded)."""
  from reproduce import train as tr  # pylint: disable=import-outside-toplevel
  m, t = config.model, config.train
  peak = matmul_peak_flops()
  mesh = tr.data_mesh()
  tx = tr.make_optimizer(config)
  weights = tr.initial_weights(config)
  state = tr.TrainState(jnp.zeros((), jnp.int32), weights, tx.init(weights))
  step = tr.compile_train_step(config, tx, mesh)
  rng = np.random.default_rng(0)
  batches = [tr.put_batch(mesh, *(rng.integers(0, m.d_vocab, (t.batch_size, m.n_ctx))
                                   .astype(np.int32),) * 2) for _ in range(4)]
  start = time.perf_counter()
  state, _ = step(state, *batches[0])
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  for i in range(3):
    state, _ = step(state, *batches[i % 4])
  jax.block_until_ready(state)
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or steps < 5:
    state, _ = step(state, *batches[steps % 4])
    steps += 1
    if steps % 5 == 0:
      jax.block_until_ready(state)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - start) / steps
  tokens_per_s = t.batch_size * m.n_ctx / step_s
  flops = model_flops_per_token(m)
  return {
      "benchmark": "train", "config": config.name, "devices": mesh.size,
      "device_kind": jax.devices()[0].device_kind,
      "shape": {k: m[k] for k in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx")}
      | {"batch_size": t.batch_size},
      "steps_timed": steps, "step_time_s": round(step_s, 5), "tokens_per_s": round(tokens_per_s),
      "compile_s": round(compile_s, 2), "model_flops_per_token": flops,
      "achieved_gflops": round(tokens_per_s * flops / 1e9, 1),
      "matmul_peak_gflops": round(peak / 1e9, 1),
      "mfu": round(tokens_per_s * flops / peak, 3),
  }


def bench_circuits(n_layers: int = 2, n_heads: int = 12, d_head: int = 64, d_model: int = 768,
                   d_vocab: int = 50000, repeats: int = 5) -> dict:
  """Paper-scale circuit maths on random weights: best-of-``repeats`` seconds, compiled."""
  import resource  # pylint: disable=import-outside-toplevel
  from reproduce import circuits  # pylint: disable=import-outside-toplevel
  from reproduce.weights import ModelConfig, init_weights  # pylint: disable=import-outside-toplevel
  cfg = ModelConfig(n_layers, n_heads, d_head, d_model, d_vocab, n_ctx=2048)
  w = jax.block_until_ready(init_weights(cfg, jax.random.key(0)))
  contraction = circuits.unembed_embed

  def eigen_positivity():
    return circuits.positivity(circuits.ov_eigenvalues(w, full=True))

  def all_compositions():
    return [circuits.composition_scores(w, kind) for kind in circuits.COMPOSITION_KINDS]

  def baseline():
    return circuits.composition_baseline(w, jax.random.key(1))

  timings = {}
  for name, fn in (("unembed_embed_contraction_s", lambda: contraction(w)),
                   ("ov_eigenvalues_positivity_s", eigen_positivity),
                   ("composition_scores_qkv_s", all_compositions),
                   ("composition_baseline_s", baseline)):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    timings[name.removesuffix("_s") + "_first_call_s"] = round(time.perf_counter() - start, 4)
    timings[name] = round(_best_time(fn, repeats), 4)
  contraction_s = timings["unembed_embed_contraction_s"]
  return {
      "benchmark": "circuits", "device_kind": jax.devices()[0].device_kind,
      "shape": {"n_layers": n_layers, "n_heads": n_heads, "d_head": d_head, "d_model": d_model,
                "d_vocab": d_vocab},
      **timings,
      "eigen_over_contraction": round(timings["ov_eigenvalues_positivity_s"] / contraction_s, 3),
      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "note": "best of repeats after a first (compiling) call; W_U·W_E is the one vocab-sized "
              "contraction the OV eigenvalues cannot avoid",
  }


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from reproduce.config import load_config, validate  # pylint: disable=import-outside-toplevel
  FLAGS = flags.FLAGS
  if len(argv) != 2 or argv[1] not in ("train", "circuits", "prepare"):
    print("usage: python -m reproduce.bench {train|circuits|prepare} [--config=...] "
          "[--shape=anchor]", file=sys.stderr)
    sys.exit(2)
  if argv[1] == "train":
    config = FLAGS.config if FLAGS.config is not None else load_config("attn2l:cpu")
    if FLAGS.shape == "anchor":
      config.unlock()
      for section, fields in ANCHOR.items():
        config[section].update(fields)
      config.lock()
    result = bench_train(validate(config), seconds=FLAGS.seconds)
  elif argv[1] == "prepare":
    result = bench_prepare()
  else:
    result = bench_circuits()
  print(json.dumps(result, indent=1))


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
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  from reproduce.corpus import stdlib_files  # pylint: disable=import-outside-toplevel
  sources = stdlib_files()
  rng = np.random.default_rng(seed)
  root = Path(__file__).resolve().parent.parent
  runs = []
  with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
    for size_mb in sizes_mb:
      corpus = Path(tmp) / f"corpus-{size_mb}mb"
      corpus.mkdir()
      written, part, n_files = 0, [], 0
      while written < size_mb * 10**6:
        text = sources[int(rng.integers(len(sources)))].read_bytes()
        part.append(text)
        written += len(text)
        if sum(map(len, part)) >= 10**6 or written >= size_mb * 10**6:
          (corpus / f"part-{n_files:05d}.txt").write_bytes(b"".join(part))
          part, n_files = [], n_files + 1
      cmd = [sys.executable, "-c", _PEAK_RSS_CHILD, "--config=configs/attn2l.py:cpu",
             f"--config.data.corpus={corpus}", f"--config.data.cache_dir={Path(tmp) / 'cache'}",
             f"--config.data.tokenizer_sample_bytes={sample_mib << 20}",
             f"--config.data.shard_tokens={shard_tokens}"]
      started = time.perf_counter()
      with open(Path(tmp) / "stderr.txt", "w+b") as err:
        child = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=err, check=False)
        seconds = time.perf_counter() - started
        err.seek(0)
        log = err.read().decode()
      if child.returncode != 0:
        raise RuntimeError(f"prepare failed: {log[-2000:]}")
      stdout = child.stdout
      manifest = json.loads(stdout)
      tokens = manifest["train_tokens"] + manifest["heldout_tokens"]
      runs.append({"corpus_mb": round(written / 1e6, 1), "files": n_files, "tokens": tokens,
                   "shards": -(-manifest["train_tokens"] // shard_tokens),
                   "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds),
                   "mb_per_s": round(written / 1e6 / seconds, 2),
                   "peak_rss_mib": round(_peak_kib(log) / 1024, 1)})
    imports = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, "--helpshort"], cwd=root,
                             capture_output=True, text=True, check=False)
  return {"runs": runs, "tokenizer_sample_mib": sample_mib, "shard_tokens": shard_tokens,
          "vocab": 2048, "cpu_count": os.cpu_count(),
          "imports_only_rss_mib": round(_peak_kib(imports.stderr) / 1024, 1),
          "rss_ratio_large_to_small": round(runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], 3)}


def run_cli():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/attn2l.py:cpu",
                                  lock_config=True)
  flags.DEFINE_enum("shape", None, ["anchor"], "anchor: the TransformerLens comparison shape")
  flags.DEFINE_float("seconds", 15.0, "how long to time the train step")
  app.run(main)


if __name__ == "__main__":
  run_cli()
