"""reproduce.train.plan: the step plan's rules."""

import pytest

import reproduce.train.plan
from reproduce.config import load_config
from reproduce.train.plan import CPU_SLICE_TOKENS, plan_step


def test_plan_rules(make_config, monkeypatch):
  c = make_config("attn2l", train=dict(batch_size=8))
  # bf16 products where the CPU has them natively (AMX, or AVX512-BF16), float32 elsewhere
  for amx, avx512_bf16, dtype in ((True, True, "bfloat16"), (False, True, "bfloat16"),
                                  (True, False, "bfloat16"), (False, False, "float32")):
    monkeypatch.setattr(reproduce.train.plan, "cpu_has_amx", lambda amx=amx: amx)
    monkeypatch.setattr(reproduce.train.plan, "cpu_has_avx512_bf16", lambda x=avx512_bf16: x)
    plan = plan_step(c, 1, "cpu")
    assert plan.compute_dtype == dtype and any(f"auto → {dtype}" in r for r in plan.reasons)
  cpu = plan_step(c, 1, "cpu")
  assert (cpu.compute_dtype, cpu.attention) == ("float32", "blocked")
  assert cpu.n_micro == 8 // min(8, CPU_SLICE_TOKENS // c.model.n_ctx)
  assert any("auto" in r for r in cpu.reasons)
  gpu = plan_step(c, 2, "gpu", check_cudnn=False)  # no patterns: one slice per device
  assert (gpu.compute_dtype, gpu.attention, gpu.n_micro) == ("bfloat16", "cudnn", 1)
  fallback = plan_step(make_config("attn2l", train=dict(attention="cudnn")), 1, "cpu")
  assert fallback.attention == "xla" and any("cuDNN" in r for r in fallback.reasons)
  paper = load_config("attn2l:paper")  # materialised patterns: each slice's under 2²⁹ floats
  xla = plan_step(paper, 1, "gpu", check_cudnn=False)
  paper.unlock()
  paper.train.attention = "xla"
  sliced = plan_step(paper, 1, "gpu")
  m = paper.model
  per_slice = paper.train.batch_size // sliced.n_micro
  assert per_slice * m.n_heads * m.n_ctx ** 2 <= 1 << 29 < 2 * per_slice * m.n_heads * m.n_ctx ** 2
  assert xla.n_micro == 1
  with pytest.raises(ValueError, match="micro_batch_size=3 must divide"):
    plan_step(make_config("attn2l", train=dict(micro_batch_size=3)), 1, "cpu")
