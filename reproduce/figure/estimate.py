"""The time estimate that ``reproduce.figure`` prints before it starts, from a quick measurement of
this machine's matmul peak and a cost model of the training step fitted on the cpu preset."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp

from reproduce.figure.sources import ModelSource
from reproduce.host import cpu_has_amx
from reproduce.train.plan import plan_step


def best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak_flops(n: int = 4096, repeats: int = 3, dtype=jnp.float32) -> float:
  """Measured FLOP/s of one n×n×n matmul on the default device (operands of ``dtype``,
  float32 accumulation)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  jax.block_until_ready(mm(a, b))
  return 2 * n ** 3 / best_time(lambda: mm(a, b), repeats)


def model_flops_per_token(m) -> float:
  n_matmul = m.d_model * m.d_vocab + m.n_layers * 4 * m.d_model * m.n_heads * m.d_head
  return 6 * n_matmul + 12 * m.n_layers * m.n_heads * m.d_head * m.n_ctx


# Start-up estimate of a training run's time, fitted to the training loops' wall times in cold
# runs on a 2-core Intel Sapphire Rapids host (one CPU device per core).  The model's products run
# at PRODUCT_SPEED_VS_FLOAT32_PEAK times the float32 matmul peak measured at start-up (a multiple,
# not a fraction): below 1 in float32, where the step's small products and the rest of its work
# (loss, optimiser) fall short of a large product's rate; above 1 with bfloat16 products, which
# AMX runs faster than float32 ones.  Both are fitted on the 0L model, which has no attention.
# Each causal attention score costs ATTENTION_SCORE_FLOPS float32-peak FLOP equivalents per head
# and layer on top (softmax, mask, their backward, and attention's products that stay float32),
# fitted on the 1L and 2L models.  The fits and how close they come are in docs/SPEED.md.
# Each run adds its start-up, each figure its analysis.  Printed as a rough estimate.
# On CPUs with AVX512-BF16 but no AMX ("bfloat16_avx512") the same two constants were fitted
# on one idle cold run of the main job on a 2-core AMD EPYC (Zen 4, family 25), 2026-12-06,
# against the probe's typical reading there (205 GFLOP/s; 186–214 over four starts that day):
# the 0L model gives the product speed, the 1L and 2L models (vanilla and smeared) the attention
# constant; each run's estimate then comes within 9% of its time (docs/PERFORMANCE.md).  Until
# then they were the float32 ones over a 1.4× step gain, which put that job at 16 minutes where
# it took 11.7.
PRODUCT_SPEED_VS_FLOAT32_PEAK = {"float32": 0.62, "bfloat16": 1.43, "bfloat16_avx512": 1.42}
ATTENTION_SCORE_FLOPS = {"float32": 480, "bfloat16": 640, "bfloat16_avx512": 455}

SECONDS_PER_RUN = 3
SECONDS_PER_FIGURE = 10


def product_kind(compute_dtype: str, platform: str) -> str:
  """The key of the constants above: ``compute_dtype``, or "bfloat16_avx512" for bfloat16
  products on a CPU without AMX."""
  if compute_dtype == "bfloat16" and platform == "cpu" and not cpu_has_amx():
    return "bfloat16_avx512"
  return compute_dtype


def estimated_training_seconds(config, peak_flops: float, compute_dtype: str) -> float:
  """steps × tokens/step × (model FLOPs / PRODUCT_SPEED_VS_FLOAT32_PEAK[compute_dtype]
  + ATTENTION_SCORE_FLOPS[compute_dtype] · L · H · n_ctx/2) per token over the float32
  ``peak_flops``, plus ``SECONDS_PER_RUN``."""
  m, t = config.model, config.train
  scores_per_token = m.n_layers * m.n_heads * m.n_ctx / 2
  per_token = (model_flops_per_token(m) / PRODUCT_SPEED_VS_FLOAT32_PEAK[compute_dtype]
               + ATTENTION_SCORE_FLOPS[compute_dtype] * scores_per_token)
  tokens = t.steps * t.batch_size * m.n_ctx
  return SECONDS_PER_RUN + tokens * per_token / peak_flops


def duration(seconds: float, digits: int = 0) -> str:
  """A time estimate in the unit that reads best: minutes (with ``digits`` decimals), hours or
  days."""
  if seconds < 2 * 3600:
    return f"{seconds / 60:.{digits}f} min"
  if seconds < 2 * 86400:
    return f"{seconds / 3600:.0f} hours"
  return f"{seconds / 86400:,.0f} days"


def first_run_plan(models, n_figures: int, source: ModelSource, seeds: int = 1) -> str:
  """What ``reproduce.figure`` is about to do, with a time estimate for this machine: the models
  still to train for each of ``seeds`` training seeds (``estimated_training_seconds`` against a
  quick float32 matmul-peak measurement, in the compute dtype the step will pick) and the
  figures.  A preset made for accelerators, planned on a CPU, says so."""
  needed = sorted(models)
  peak = matmul_peak_flops(2048, 3)
  lines, total = [], SECONDS_PER_FIGURE * n_figures * seeds
  for seed in range(seeds):
    for name in needed:
      c, run = dataclasses.replace(source, seed=None if seeds == 1 else seed).run(name)
      label = name if seeds == 1 else f"{name} seed {seed}"
      if (run / "checkpoints" / str(c.train.steps)).is_dir():
        lines.append(f"  {label}: trained, reused")
        continue
      dtype = plan_step(c, len(jax.devices()), jax.default_backend(),
                        check_cudnn=False).compute_dtype
      seconds = estimated_training_seconds(c, peak, product_kind(dtype, jax.default_backend()))
      total += seconds
      tokens = c.train.steps * c.train.batch_size * c.model.n_ctx
      amount = f"{tokens / 1e9:.1f}B" if tokens >= 1e9 else f"{tokens / 1e6:.1f}M"
      lines.append(f"  {label}: train {c.train.steps:,} steps, {amount} tokens, "
                   f"{dtype} products, ~{duration(seconds, 1)}")
  if source.preset == "paper" and jax.default_backend() == "cpu":
    lines.append("  the paper preset is made for accelerators (GPUs, TPUs), not a CPU: see "
                 "BUILD.md for GPU/TPU installs and batch jobs")
  return (f"plan: {n_figures} figure(s) from {len(needed)} model(s) ({source.preset} preset"
          f"{'' if seeds == 1 else f', {seeds} seeds'}); estimated {duration(total)} on this "
          f"machine ({os.cpu_count()} cores, {peak / 1e9:.0f} GFLOP/s float32 matmuls), plus "
          "the corpus's tokenization if it is not cached (≈10 s for the default corpus on 2 "
          "cores)\n" + "\n".join(lines))
