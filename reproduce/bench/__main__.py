"""Benchmarks (scripts that print JSON; never run inside tests).

    python -m reproduce.bench train --config=configs/attn2l.py:cpu
    python -m reproduce.bench train --shape=anchor      # the issue's comparison shape
    python -m reproduce.bench circuits                  # paper-scale circuit maths, random weights
    python -m reproduce.bench plan --config=configs/attn2l.py:paper [--devices=8] [--platform=gpu]
    python -m reproduce.bench compare --tl-python=/path/to/venv/bin/python   # vs TransformerLens
    python -m reproduce.bench prepare                   # token-store build: tokens/s, peak RSS
    python -m reproduce.bench export --config=configs/attn2l.py:paper --platform=cuda [--devices=8]
    python -m reproduce.bench export --figures=paper --platform=tpu   # every figure's kernels
    python -m reproduce.bench figures --shape=attn-only-2l   # every figure: wall time, peak RSS
    python -m reproduce.bench atlas --shape=attn-only-2l     # the atlas: wall time, peak RSS, work

``train`` measures the machine's matmul peak (a 4096³ product) in the step's compute dtype and
in float32 in the same run, and reports model FLOP utilisation against both.  ``compare`` times
our step in float32 and in bfloat16 compute beside TransformerLens.  Model FLOPs per token
follow the usual convention: 6·N (N = matmul parameters: W_U and the per-head W_Q, W_K, W_V,
W_O; the embedding gather is free) plus 12·L·H·d_head·n_ctx for the attention scores and mixing
(the full square, masked half included).

``compare``, ``prepare``, ``figures``, ``atlas`` and ``export`` live in the modules of those
names beside this one; a new subcommand is one more entry in ``COMMANDS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from reproduce.bench import export
from reproduce.bench.atlas import bench_atlas
from reproduce.bench.compare import compare_with_transformerlens
from reproduce.bench.figures import SHAPES as FIGURE_SHAPES, bench_figures
from reproduce.bench.prepare import bench_prepare
from reproduce.config import define_config_flag, load_config, parse_flags, validate
from reproduce.core import circuits
from reproduce.core.model import ModelConfig
from reproduce.core.weights import init_weights
from reproduce.figure.estimate import best_time, matmul_peak_flops, model_flops_per_token
from reproduce.host import split_cpu
from reproduce.train.plan import plan_step
from reproduce.train.step import (TrainState, abstract_step_inputs, compile_train_step, data_mesh,
                                  initial_weights, make_optimizer, put_batch)

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


def _compilable_plan(config, n_devices: int, platform: str, local: str):
  """(config, step plan) for ``platform``'s rules, compilable on the ``local`` backend: off-GPU a
  cuDNN attention is planned as XLA's ``dot_product_attention`` with the same slicing."""
  plan = plan_step(config, n_devices, platform, check_cudnn=local == "gpu")
  if plan.attention == "cudnn" and local != "gpu":  # cannot compile cuDNN here: plan XLA's
    config = config.copy_and_resolve_references()
    config.train.attention = "xla"
    plan = dataclasses.replace(plan_step(config, n_devices, platform),
                               reasons=plan.reasons + ("cuDNN cannot compile on this host; "
                                                       "planned with XLA's attention",))
  return config, plan


def _compile_abstract_step(config, plan, mesh):
  """(the step compiled ahead of time for abstract inputs of the config's shapes, seconds)."""
  tx = make_optimizer(config)
  step = compile_train_step(config, tx, mesh, plan)
  start = time.perf_counter()
  compiled = step.lower(*abstract_step_inputs(config, tx, mesh)).compile()
  return compiled, time.perf_counter() - start


def _memory_gib(mem) -> dict:
  """XLA's per-device memory analysis in GiB, with a peak estimate."""
  gib = lambda b: round(b / 2 ** 30, 3)
  memory = {"arguments_gib": gib(mem.argument_size_in_bytes),
            "outputs_gib": gib(mem.output_size_in_bytes),
            "temporaries_gib": gib(mem.temp_size_in_bytes),
            "aliased_gib": gib(mem.alias_size_in_bytes),
            "generated_code_gib": gib(mem.generated_code_size_in_bytes)}
  memory["peak_estimate_gib"] = round(memory["arguments_gib"] + memory["outputs_gib"]
                                      + memory["temporaries_gib"] - memory["aliased_gib"], 3)
  return memory


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
  config, plan = _compilable_plan(config, n_devices, platform, local)
  compiled, compile_s = _compile_abstract_step(config, plan, mesh)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  tokens = t.batch_size * m.n_ctx
  analytic = model_flops_per_token(m) * tokens
  unembed = 6 * m.d_model * m.d_vocab * tokens
  per_device = analytic / n_devices
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
      "memory_per_device": _memory_gib(compiled.memory_analysis()),
      "peak_tflops": peak_tflops,
      "step_time_floor_s": round(per_device / (peak_tflops * 1e12), 4),
      "step_time_at_40pct_mfu_s": round(per_device / (0.4 * peak_tflops * 1e12), 4),
      "note": "XLA's cost analysis counts a loop body once: the cross-entropy's chunk scans "
              "(and the micro-batch scan when there is one) are counted for one trip, so with "
              "one micro-batch XLA's FLOPs compare with the analytic FLOPs outside the unembed. "
              "Analytic: 6·N + 12·L·H·d_head·n_ctx per token (module docstring).",
  }


def bench_circuits(n_layers: int = 2, n_heads: int = 12, d_head: int = 64, d_model: int = 768,
                   d_vocab: int = 50000, repeats: int = 5) -> dict:
  """Paper-scale circuit maths on random weights: best-of-``repeats`` seconds, compiled."""
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


def _anchor_shape(config):
  """``config`` with the ``ANCHOR`` shape."""
  config.unlock()
  for section, fields in ANCHOR.items():
    config[section].update(fields)
  config.lock()
  return config


def _split_cpu(opts) -> None:
  split_cpu(opts.cpu_devices, log=lambda line: print(line, file=sys.stderr))


def _train(opts) -> dict:
  if opts.shape not in (None, "anchor"):
    raise ValueError(f"train takes --shape=anchor only; {opts.shape} is a shape of `figures`")
  _split_cpu(opts)
  config = opts.config if opts.config is not None else load_config("attn2l:cpu")
  if opts.shape == "anchor":
    config = _anchor_shape(config)
  return bench_train(validate(config), seconds=opts.seconds)


def _compare(opts) -> dict:
  _split_cpu(opts)
  if not opts["tl-python"].value:
    raise ValueError("compare needs --tl-python=PATH (a Python with torch and transformer-lens)")
  config = _anchor_shape(opts.config if opts.config is not None else load_config("attn2l:cpu"))
  return compare_with_transformerlens(validate(config), opts["tl-python"].value, opts.rounds)


def _plan(opts) -> dict:
  if opts.config is None:
    raise ValueError("plan needs --config, e.g. --config=configs/attn2l.py:paper")
  platform = "gpu" if opts.platform == "cuda" else opts.platform  # export's name for the GPU
  return plan_train_step(opts.config, opts.devices, platform, opts.peak_tflops)


def _export(opts) -> dict:
  """Lowers the training step (or every figure's kernels) for an accelerator on this host."""
  return export.main(opts.config, opts.platform or "cuda", opts.devices, opts.figures,
                     log=lambda line: print(line, file=sys.stderr))


# Subcommand → its runner: flags in, the JSON-able result out; a ValueError is the user's to fix.
COMMANDS: Dict[str, Callable[[flags.FlagValues], dict]] = {
    "train": _train,
    "circuits": lambda opts: bench_circuits(),
    "plan": _plan,
    "compare": _compare,
    "prepare": lambda opts: bench_prepare(),
    "export": _export,
    "figures": lambda opts: bench_figures(opts.shape or "attn-only-2l", opts.only),
    "atlas": lambda opts: bench_atlas(opts.shape or "attn-only-2l"),
}


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    print(f"usage: python -m reproduce.bench {{{'|'.join(COMMANDS)}}} [--config=...] "
          "[--shape=anchor] [--devices=N] [--platform=gpu] [--tl-python=PATH]", file=sys.stderr)
    sys.exit(2)
  try:
    result = COMMANDS[argv[1]](flags.FLAGS)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result, indent=1))


def run_cli():
  define_config_flag()
  flags.DEFINE_enum("shape", None, ["anchor", *FIGURE_SHAPES],
                    "train: anchor, the TransformerLens comparison shape; figures, atlas: a "
                    "public model's shape (default attn-only-2l)")
  flags.DEFINE_list("only", None, "figures: only these figures (comma-separated)")
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
  app.run(_with_simulated_devices(main), flags_parser=parse_flags)


def _with_simulated_devices(main_fn):
  """On a CPU-only host, ``plan --devices=N`` needs N host devices, set before JAX starts."""
  def wrapped(argv):
    n = flags.FLAGS.devices
    if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                 + f" --xla_force_host_platform_device_count={n}").strip()
    return main_fn(argv)
  return wrapped


if __name__ == "__main__":
  run_cli()
