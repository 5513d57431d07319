"""Benchmarks (scripts that print JSON; never run inside tests).

    python -m reproduce.bench train --config=configs/attn2l.py:cpu
    python -m reproduce.bench train --shape=anchor      # the issue's comparison shape
    python -m reproduce.bench circuits                  # paper-scale circuit maths, random weights
    python -m reproduce.bench plan --config=configs/attn2l.py:paper [--devices=8] [--platform=gpu]
    python -m reproduce.bench compare --tl-python=/path/to/venv/bin/python   # vs TransformerLens
    python -m reproduce.bench prepare                   # token-store build: tokens/s, peak RSS
    python -m reproduce.bench export --config=configs/attn2l.py:paper --platform=cuda [--devices=8]
    python -m reproduce.bench export --figures=paper --platform=tpu   # every figure's kernels

``train`` measures the machine's matmul peak (a 4096³ product) in the step's compute dtype and
in float32 in the same run, and reports model FLOP utilisation against both.  ``compare`` times
our step in float32 and in bfloat16 compute beside TransformerLens.  Model FLOPs per token
follow the usual convention: 6·N (N = matmul parameters: W_U and the per-head W_Q, W_K, W_V,
W_O; the embedding gather is free) plus 12·L·H·d_head·n_ctx for the attention scores and mixing
(the full square, masked half included).
"""

from __future__ import annotations

import json
import os
import sys
import time

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from reproduce.estimate import best_time, matmul_peak_flops, model_flops_per_token
from reproduce.train.plan import plan_step
from reproduce.train.step import (TrainState, compile_train_step, data_mesh, initial_weights,
                                  make_optimizer, put_batch)

# The shape the issue compares against TransformerLens: 2 layers, d_model 128, 4 heads × 32,
# vocab 2048, n_ctx 256, batch 16.
ANCHOR = {"model": dict(n_layers=2, d_model=128, n_heads=4, d_head=32, d_vocab=2048, n_ctx=256),
          "train": dict(batch_size=16)}


def bench_train(config, seconds: float = 15.0) -> dict:
  """Steady-state training throughput on random tokens (data loading excluded)."""
  m, t = config.model, config.train
  mesh = data_mesh()
  plan = plan_step(config, mesh.size, mesh.devices.flat[0].platform)
  peak32 = matmul_peak_flops()
  peak = peak32 if plan.compute_dtype == "float32" else matmul_peak_flops(
      dtype=jnp.dtype(plan.compute_dtype))
  tx = make_optimizer(config)
  weights = initial_weights(config)
  state = TrainState(jnp.zeros((), jnp.int32), weights, tx.init(weights))
  step = compile_train_step(config, tx, mesh, plan)
  rng = np.random.default_rng(0)
  batches = [put_batch(mesh, *(rng.integers(0, m.d_vocab, (t.batch_size, m.n_ctx))
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
      "compute_dtype": plan.compute_dtype,
      "matmul_peak_gflops": round(peak / 1e9, 1),
      "mfu": round(tokens_per_s * flops / peak, 3),
      "matmul_peak_gflops_float32": round(peak32 / 1e9, 1),
      "mfu_vs_float32_peak": round(tokens_per_s * flops / peak32, 3),
  }


def plan_train_step(config, n_devices: int = 1, platform: Optional[str] = None,
                    peak_tflops: float = 989.0) -> dict:
  """Compiles the training step ahead of time for the config's real shapes, with abstract
  inputs (nothing is allocated or run), and reports XLA's FLOPs and per-device memory.

  ``platform`` picks the step's rules (compute dtype, micro-batching, loss blocks; default: the
  local backend); the compile itself is for the local backend, so off-GPU a cuDNN attention is
  compiled as XLA's ``dot_product_attention`` with the same slicing.  ``peak_tflops`` (default:
  an H100 SXM's dense bfloat16 rate) turns the analytic FLOPs into a step-time floor.
  """
  m, t = config.model, config.train
  local = jax.devices()[0].platform
  platform = platform or local
  if len(jax.devices()) < n_devices:
    raise ValueError(f"--devices={n_devices} but JAX sees {len(jax.devices())} device(s)")
  mesh = data_mesh(jax.devices()[:n_devices])
  plan = plan_step(config, n_devices, platform, check_cudnn=local == "gpu")
  if plan.attention == "cudnn" and local != "gpu":  # cannot compile cuDNN here: plan XLA's
    config = config.copy_and_resolve_references()
    config.train.attention = "xla"
    plan = dataclasses.replace(plan_step(config, n_devices, platform),
                               reasons=plan.reasons + ("cuDNN cannot compile on this host; "
                                                       "planned with XLA's attention",))
  tx = make_optimizer(config)
  replicated = NamedSharding(mesh, P())
  rows = NamedSharding(mesh, P("data"))

  def abstract_state():
    w = initial_weights(config)
    return TrainState(jnp.zeros((), jnp.int32), w, tx.init(w))

  state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                       jax.eval_shape(abstract_state))
  batch = jax.ShapeDtypeStruct((t.batch_size, m.n_ctx), jnp.int32, sharding=rows)
  step = compile_train_step(config, tx, mesh, plan)
  start = time.perf_counter()
  compiled = step.lower(state, batch, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  gib = lambda b: round(b / 2 ** 30, 3)
  tokens = t.batch_size * m.n_ctx
  analytic = model_flops_per_token(m) * tokens
  unembed = 6 * m.d_model * m.d_vocab * tokens
  per_device = analytic / n_devices
  memory = {"arguments_gib": gib(mem.argument_size_in_bytes),
            "outputs_gib": gib(mem.output_size_in_bytes),
            "temporaries_gib": gib(mem.temp_size_in_bytes),
            "aliased_gib": gib(mem.alias_size_in_bytes),
            "generated_code_gib": gib(mem.generated_code_size_in_bytes)}
  memory["peak_estimate_gib"] = round(memory["arguments_gib"] + memory["outputs_gib"]
                                      + memory["temporaries_gib"] - memory["aliased_gib"], 3)
  return {
      "benchmark": "plan", "config": config.name, "devices": n_devices,
      "rules_for_platform": platform, "compiled_for": local,
      "step_plan": {"compute_dtype": plan.compute_dtype, "attention": plan.attention,
                    "micro_batches": plan.n_micro,
                    "loss_block_elements": plan.loss_block, "choices": list(plan.reasons)},
      "shape": {k: m[k] for k in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx")}
      | {"batch_size": t.batch_size, "tokens_per_step": tokens},
      "compile_s": round(compile_s, 2),
      "analytic_flops_per_step": analytic,
      "analytic_flops_per_device": per_device,
      "analytic_flops_per_device_outside_unembed": (analytic - unembed) / n_devices,
      "xla_flops_per_device": cost.get("flops"),
      "xla_flops_per_device_times_micro_batches": cost.get("flops", 0) * plan.n_micro,
      "xla_bytes_accessed_per_device": cost.get("bytes accessed"),
      "memory_per_device": memory,
      "peak_tflops": peak_tflops,
      "step_time_floor_s": round(per_device / (peak_tflops * 1e12), 4),
      "step_time_at_40pct_mfu_s": round(per_device / (0.4 * peak_tflops * 1e12), 4),
      "note": "XLA's cost analysis counts a loop body once: the cross-entropy's chunk scans "
              "(and the micro-batch scan when there is one) are counted for one trip, so with "
              "one micro-batch XLA's FLOPs compare with the analytic FLOPs outside the unembed. "
              "Analytic: 6·N + 12·L·H·d_head·n_ctx per token (module docstring).",
  }


# The TransformerLens side of ``compare``: run by the given interpreter (an environment with torch
# and transformer-lens that the project never depends on).  It reads "<steps>" lines on stdin and
# answers each with the seconds those training steps took, so the two sides can alternate.
_TL_WORKER = """
import json, sys, time, torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
shape = json.loads(sys.argv[1])
torch.set_num_threads(shape["threads"])
torch.manual_seed(0)
cfg = HookedTransformerConfig(
    n_layers=shape["n_layers"], d_model=shape["d_model"], n_heads=shape["n_heads"],
    d_head=shape["d_head"], d_vocab=shape["d_vocab"], n_ctx=shape["n_ctx"], attn_only=True,
    normalization_type=None, positional_embedding_type="shortformer", act_fn=None,
    device="cpu", seed=0)
model = HookedTransformer(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
tokens = torch.randint(0, shape["d_vocab"], (shape["batch_size"], shape["n_ctx"]))

def step():
  loss = model(tokens, return_type="loss")
  opt.zero_grad(set_to_none=True)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
  opt.step()

for _ in range(3):
  step()
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
for line in sys.stdin:
  n = int(line)
  start = time.perf_counter()
  for _ in range(n):
    step()
  print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""


def compare_with_transformerlens(config, tl_python: str, rounds: int = 5,
                                 seconds_per_round: float = 3.0) -> dict:
  """Training tokens/s of our step, in float32 and in bfloat16 compute, and of TransformerLens
  (float32, its default) at the same shape, timed alternately in one run (round k:
  TransformerLens, ours in each compute dtype, then the float32 and bfloat16 matmul peaks).  Per
  dtype: the ratio to TransformerLens (best rates, median rates) and the MFU per round against
  that round's peak of the same dtype, and best rate over best peak.  ``default`` names the
  dtype ``train.compute_dtype`` resolves to on this machine."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  m, t = config.model, config.train
  threads = os.cpu_count() or 1
  shape = {k: m[k] for k in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx")}
  shape |= {"batch_size": t.batch_size, "threads": threads}
  tokens_per_step = t.batch_size * m.n_ctx
  worker_dir = tempfile.mkdtemp(prefix="tl-worker-")  # private: nothing else on its sys.path
  worker = os.path.join(worker_dir, "tl_worker.py")
  with open(worker, "w") as f:
    f.write(_TL_WORKER)
  tl = subprocess.Popen([tl_python, "-I", worker, json.dumps(shape)], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
  dtypes = ("float32", "bfloat16")
  try:
    tl_info = json.loads(tl.stdout.readline() or "null")
    if tl_info is None:
      raise RuntimeError(f"the TransformerLens worker ({tl_python}) failed to start")

    def tl_time(n):
      tl.stdin.write(f"{n}\n")
      tl.stdin.flush()
      return json.loads(tl.stdout.readline())["seconds"]

    mesh = data_mesh()
    platform = mesh.devices.flat[0].platform
    default = plan_step(config, mesh.size, platform, check_cudnn=False).compute_dtype
    rng = np.random.default_rng(0)
    batch = put_batch(mesh, *(rng.integers(0, m.d_vocab, (t.batch_size, m.n_ctx))
                                 .astype(np.int32),) * 2)
    runs, plans = {}, {}
    for dtype in dtypes:
      c = config.copy_and_resolve_references()
      c.train.compute_dtype = dtype
      tx = make_optimizer(c)
      weights = initial_weights(c)
      plans[dtype] = plan_step(c, mesh.size, platform)
      runs[dtype] = [compile_train_step(c, tx, mesh, plans[dtype]),
                     TrainState(jnp.zeros((), jnp.int32), weights, tx.init(weights))]

    def ours_time(dtype, n):
      step = runs[dtype][0]
      jax.block_until_ready(runs[dtype][1])
      start = time.perf_counter()
      for _ in range(n):
        runs[dtype][1], _ = step(runs[dtype][1], *batch)
      jax.block_until_ready(runs[dtype][1])
      return time.perf_counter() - start

    for dtype in dtypes:
      ours_time(dtype, 3)  # compile and warm up
    n_tl = max(1, int(seconds_per_round / tl_time(1)))
    n_ours = {d: max(1, int(seconds_per_round / ours_time(d, 1))) for d in dtypes}
    tl_rates, our_rates, peaks = [], {d: [] for d in dtypes}, {d: [] for d in dtypes}
    for _ in range(rounds):  # each round: TransformerLens, ours in each dtype, both peaks
      tl_rates.append(n_tl * tokens_per_step / tl_time(n_tl))
      for d in dtypes:
        our_rates[d].append(n_ours[d] * tokens_per_step / ours_time(d, n_ours[d]))
      for d in dtypes:
        peaks[d].append(matmul_peak_flops(2048, 2, jnp.dtype(d)))
  finally:
    tl.stdin.close()
    tl.wait(timeout=60)
    os.unlink(worker)
    os.rmdir(worker_dir)
  flops = model_flops_per_token(m)
  theirs = max(tl_rates)
  ours = {}
  for d in dtypes:
    rates = our_rates[d]
    ours[d] = {
        "step_plan": plans[d].describe(),
        "tokens_per_s_rounds": [round(r) for r in rates],
        "ratio_best": round(max(rates) / theirs, 3),
        "ratio_median": round(float(np.median(rates) / np.median(tl_rates)), 3),
        "mfu_rounds": [round(r * flops / p, 3) for r, p in zip(rates, peaks[d])],
        "mfu_best_rates": round(max(rates) * flops / max(peaks[d]), 3),
        "mfu_vs_float32_peak": round(max(rates) * flops / max(peaks["float32"]), 3),
    }
  return {
      "benchmark": "compare", "shape": shape, "device_kind": jax.devices()[0].device_kind,
      "cpu_count": os.cpu_count(), "default": default,
      "transformerlens": tl_info, "rounds": rounds,
      "transformerlens_tokens_per_s_rounds": [round(r) for r in tl_rates],
      "ours": ours,
      "matmul_peak_gflops_float32": round(max(peaks["float32"]) / 1e9, 1),
      "matmul_peak_gflops_bfloat16": round(max(peaks["bfloat16"]) / 1e9, 1),
      "mfu_transformerlens_vs_float32_peak": round(theirs * flops / max(peaks["float32"]), 3),
      "load_average_after": [round(x, 2) for x in os.getloadavg()],
  }


def bench_circuits(n_layers: int = 2, n_heads: int = 12, d_head: int = 64, d_model: int = 768,
                   d_vocab: int = 50000, repeats: int = 5) -> dict:
  """Paper-scale circuit maths on random weights: best-of-``repeats`` seconds, compiled."""
  import resource  # pylint: disable=import-outside-toplevel
  from reproduce.core import circuits  # pylint: disable=import-outside-toplevel
  from reproduce.core.model import ModelConfig  # pylint: disable=import-outside-toplevel
  from reproduce.core.weights import init_weights  # pylint: disable=import-outside-toplevel
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
    timings[name] = round(best_time(fn, repeats), 4)
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
  if len(argv) != 2 or argv[1] not in ("train", "circuits", "plan", "compare", "prepare",
                                        "export"):
    print("usage: python -m reproduce.bench {train|circuits|plan|compare|prepare|export} "
          "[--config=...] "
          "[--shape=anchor] [--devices=N] [--platform=gpu] [--tl-python=PATH]", file=sys.stderr)
    sys.exit(2)
  if argv[1] == "plan" and FLAGS.platform == "cuda":  # export's name; plan_step says "gpu"
    FLAGS.platform = "gpu"
  if argv[1] in ("train", "compare"):
    from reproduce.host import split_cpu  # pylint: disable=import-outside-toplevel
    try:
      split_cpu(FLAGS.cpu_devices, log=lambda line: print(line, file=sys.stderr))
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  if argv[1] == "compare":
    if not FLAGS["tl-python"].value:
      print("error: compare needs --tl-python=PATH (a Python with torch and transformer-lens)",
            file=sys.stderr)
      sys.exit(2)
    config = FLAGS.config if FLAGS.config is not None else load_config("attn2l:cpu")
    config.unlock()
    for section, fields in ANCHOR.items():
      config[section].update(fields)
    config.lock()
    result = compare_with_transformerlens(validate(config), FLAGS["tl-python"].value, FLAGS.rounds)
  elif argv[1] == "plan":
    if FLAGS.config is None:
      print("error: plan needs --config, e.g. --config=configs/attn2l.py:paper", file=sys.stderr)
      sys.exit(2)
    try:
      result = plan_train_step(validate(FLAGS.config), FLAGS.devices, FLAGS.platform,
                               FLAGS.peak_tflops)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  elif argv[1] == "train":
    config = FLAGS.config if FLAGS.config is not None else load_config("attn2l:cpu")
    if FLAGS.shape == "anchor":
      config.unlock()
      for section, fields in ANCHOR.items():
        config[section].update(fields)
      config.lock()
    result = bench_train(validate(config), seconds=FLAGS.seconds)
  elif argv[1] == "prepare":
    result = bench_prepare()
  elif argv[1] == "export":  # reproduce/export.py: lower for an accelerator on this host
    from reproduce import export  # pylint: disable=import-outside-toplevel
    try:
      config = None if FLAGS.config is None else validate(FLAGS.config)
      result = export.main(config, FLAGS.platform or "cuda", FLAGS.devices, FLAGS.figures,
                           log=lambda line: print(line, file=sys.stderr))
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
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
  flags.DEFINE_string("tl-python", None, "compare: Python interpreter with torch and "
                      "transformer-lens (a throwaway environment, never a project dependency)")
  flags.DEFINE_string("cpu_devices", "auto", "train, compare: JAX CPU devices to split this "
                      "machine into (auto: one per core, at most 8)")
  flags.DEFINE_integer("rounds", 5, "compare: alternating timing rounds")
  flags.DEFINE_integer("devices", 1, "plan: devices the step is split over (on CPU, simulated)")
  flags.DEFINE_enum("platform", None, ["cpu", "gpu", "tpu", "cuda"],
                    "plan: whose step rules to use (default: the local backend); export: the "
                    "target (cuda, tpu; gpu means cuda; default cuda)")
  flags.DEFINE_enum("figures", None, ["test", "cpu", "paper"],
                    "export: every figure's kernels at this preset instead of a --config step")
  flags.DEFINE_float("peak_tflops", 989.0, "plan: peak FLOP rate for the step-time estimate "
                     "(default: H100 SXM dense bfloat16)")
  flags.register_validator("devices", lambda n: n >= 1, "--devices must be >= 1")
  app.run(_with_simulated_devices(main))


def _with_simulated_devices(main_fn):
  """On a CPU-only host, ``plan --devices=N`` needs N host devices, set before JAX starts."""
  def wrapped(argv):
    from absl import flags  # pylint: disable=import-outside-toplevel
    n = flags.FLAGS.devices
    if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                 + f" --xla_force_host_platform_device_count={n}").strip()
    return main_fn(argv)
  return wrapped


if __name__ == "__main__":
  run_cli()
