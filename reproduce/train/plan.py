"""How the training step computes on this platform: compute dtype, attention kernel,
micro-batches and loss blocks, each chosen automatically unless the config sets it, and logged."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from reproduce.core.kernels import largest_divisor_at_most
from reproduce.host import cpu_has_amx, cpu_has_avx512_bf16

@dataclasses.dataclass(frozen=True)
class StepPlan:
  """How the training step computes; every field is chosen by ``plan_step`` and logged."""
  compute_dtype: str  # "float32" or "bfloat16": the matmul/attention operand dtype
  attention: str  # "explicit", "xla" or "cudnn" (see model.residual_stream)
  n_micro: int  # gradient-accumulation slices per step
  loss_block: int  # logits held at once by the chunked cross-entropy
  reasons: tuple = ()  # one line per automatic choice or fallback

  def describe(self) -> str:
    return (f"step: compute {self.compute_dtype}, attention {self.attention}, "
            f"{self.n_micro} micro-batch(es), loss blocks of {self.loss_block:,} logits"
            + "".join(f"\n  {r}" for r in self.reasons))


def _cudnn_accepts(shape, dtype) -> Optional[str]:
  """None if cuDNN's fused attention compiles (forward and backward) for q/k/v of ``shape``
  [B, T, H, E] and ``dtype``; otherwise the error's first line."""
  spec = jax.ShapeDtypeStruct(shape, dtype)
  attend = lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, is_causal=True, implementation="cudnn").astype(jnp.float32).sum()
  try:
    jax.jit(jax.grad(attend, argnums=(0, 1, 2))).lower(spec, spec, spec).compile()
  except Exception as e:  # pylint: disable=broad-except  # any refusal means: use XLA
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
  return None


def plan_step(config, n_devices: int, platform: str, check_cudnn: bool = True) -> StepPlan:
  """Resolves ``train.compute_dtype``, ``train.attention`` and ``train.micro_batch_size``.

  compute_dtype "auto": bfloat16 on GPU/TPU, on CPUs with AMX, whose bfloat16 products run
  several times faster than float32 ones, and on CPUs with AVX512-BF16, where the step runs
  about 1.4× faster (docs/PERFORMANCE.md); float32 on other CPUs.  The claims hold alike on three
  seeds in either dtype, bar those listed on the landing page (docs/RECIPE.md).
  attention "auto": cuDNN's fused kernel on GPU; on CPU causal query blocks with a hand-written
  backward (``kernels.blocked_causal_attention``), which skip the fully masked blocks above the
  diagonal (XLA's ``dot_product_attention`` was slower than explicit patterns on CPU;
  docs/SPEED.md); explicit patterns on TPU.  cuDNN falls back to XLA's
  ``dot_product_attention`` when it cannot take the shape (not a GPU, float32, head size...).
  Micro-batches: a set ``train.micro_batch_size`` wins (it must divide the per-device batch).
  Otherwise, with cuDNN nothing [T, T]-sized is materialised, so the whole per-device batch is
  one slice; with materialised patterns a slice keeps one layer's patterns under 2²⁹ floats on an
  accelerator, and on CPU holds about ``CPU_SLICE_TOKENS`` tokens (activations stay in cache).
  """
  t, m = config.train, config.model
  reasons = []
  dtype = t.compute_dtype
  if dtype == "auto":
    if platform != "cpu":
      dtype, why = "bfloat16", platform
    elif cpu_has_amx():
      dtype, why = "bfloat16", "CPU with AMX: bf16 products, float32 sums and state"
    elif cpu_has_avx512_bf16():
      dtype, why = "bfloat16", "CPU with AVX512-BF16: bf16 products, float32 sums and state"
    else:
      dtype, why = "float32", "CPU without native bfloat16 products"
    reasons.append(f"compute_dtype auto → {dtype} ({why})")
  attention = t.attention
  if attention == "auto":
    attention = {"gpu": "cudnn", "cpu": "blocked"}.get(platform, "explicit")
    reasons.append(f"attention auto → {attention} ({platform})")
  per_device = t.batch_size // n_devices
  if attention == "cudnn":
    size = t.micro_batch_size or per_device
    refusal = ("not a GPU" if platform != "gpu" else
               _cudnn_accepts((size, m.n_ctx, m.n_heads, m.d_head), jnp.dtype(dtype))
               if check_cudnn else None)
    if refusal:
      attention = "xla"
      reasons.append(f"cuDNN attention cannot take this step ({refusal}); using XLA's")
  size = t.micro_batch_size
  if size == 0:
    if attention == "cudnn":
      size = per_device
    elif platform == "cpu":
      size = largest_divisor_at_most(per_device, CPU_SLICE_TOKENS // m.n_ctx)
    else:
      size = largest_divisor_at_most(per_device, (1 << 29) // (m.n_heads * m.n_ctx ** 2))
  if per_device % size:
    raise ValueError(f"train.micro_batch_size={size} must divide the per-device batch "
                     f"{per_device} (batch_size {t.batch_size} over {n_devices} devices)")
  block = t.loss_block_elements or loss_block_elements(platform)
  return StepPlan(dtype, attention, per_device // size, block, tuple(reasons))


CPU_SLICE_TOKENS = 512  # tokens per gradient-accumulation slice on CPU (docs/SPEED.md)


def micro_batches(config, n_devices: int, platform: str) -> int:
  """How many gradient-accumulation slices a step's batch is cut into (see ``plan_step``)."""
  return plan_step(config, n_devices, platform, check_cudnn=False).n_micro


def loss_block_elements(platform: str) -> int:
  """Logits held at once by the chunked cross-entropy (``train.loss_block_elements`` = 0):
  cache-sized on CPU (2²⁰ floats = 4 MiB, one block per 512-token slice; smaller blocks made the
  step slower, docs/SPEED.md), larger on accelerators."""
  return 1 << 20 if platform == "cpu" else 1 << 26
