"""``python -m reproduce.bench compare``: our training step beside TransformerLens's, timed
alternately in one run at the same shape (see ``compare_with_transformerlens``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.figure.estimate import matmul_peak_flops, model_flops_per_token
from reproduce.train.plan import plan_step
from reproduce.train.step import (TrainState, compile_train_step, data_mesh, initial_weights,
                                  make_optimizer, put_batch)

DTYPES = ("float32", "bfloat16")  # our step is timed in each compute dtype

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


class TransformerLensWorker:
  """``_TL_WORKER`` running under ``tl_python``: ``info`` (its torch version and threads) once it
  has warmed up, ``time(n)`` the seconds n of its training steps take; ``close()`` ends it."""

  def __init__(self, tl_python: str, shape: dict):
    self._dir = tempfile.mkdtemp(prefix="tl-worker-")  # private: nothing else on its sys.path
    self._proc = None
    try:
      script = os.path.join(self._dir, "tl_worker.py")
      with open(script, "w") as f:
        f.write(_TL_WORKER)
      self._proc = subprocess.Popen([tl_python, "-I", script, json.dumps(shape)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
      self.info = json.loads(self._proc.stdout.readline() or "null")
      if self.info is None:
        raise RuntimeError(f"the TransformerLens worker ({tl_python}) failed to start")
    except BaseException:
      self.close()
      raise

  def time(self, n: int) -> float:
    self._proc.stdin.write(f"{n}\n")
    self._proc.stdin.flush()
    return json.loads(self._proc.stdout.readline())["seconds"]

  def close(self) -> None:
    if self._proc is not None:
      self._proc.stdin.close()
      self._proc.wait(timeout=60)
    shutil.rmtree(self._dir, ignore_errors=True)


class OurSteps:
  """Our compiled training step in each of ``DTYPES`` at ``config``'s shape, each with its own
  state, all on one random batch; ``default`` is the dtype ``train.compute_dtype`` resolves to."""

  def __init__(self, config):
    m, t = config.model, config.train
    mesh = data_mesh()
    platform = mesh.devices.flat[0].platform
    self.default = plan_step(config, mesh.size, platform, check_cudnn=False).compute_dtype
    rng = np.random.default_rng(0)
    self.batch = put_batch(mesh, *(rng.integers(0, m.d_vocab, (t.batch_size, m.n_ctx))
                                      .astype(np.int32),) * 2)
    self.plans, self.steps, self.states = {}, {}, {}
    for dtype in DTYPES:
      c = config.copy_and_resolve_references()
      c.train.compute_dtype = dtype
      tx = make_optimizer(c)
      weights = initial_weights(c)
      self.plans[dtype] = plan_step(c, mesh.size, platform)
      self.steps[dtype] = compile_train_step(c, tx, mesh, self.plans[dtype])
      self.states[dtype] = TrainState(jnp.zeros((), jnp.int32), weights, tx.init(weights))

  def time(self, dtype: str, n: int) -> float:
    """Seconds for n steps in ``dtype`` (the first call also compiles)."""
    step = self.steps[dtype]
    jax.block_until_ready(self.states[dtype])
    start = time.perf_counter()
    for _ in range(n):
      self.states[dtype], _ = step(self.states[dtype], *self.batch)
    jax.block_until_ready(self.states[dtype])
    return time.perf_counter() - start


def _timed_rounds(tl: TransformerLensWorker, ours: OurSteps, tokens_per_step: int, rounds: int,
                  seconds_per_round: float):
  """(TransformerLens tokens/s per round, ours per dtype per round, matmul peaks per dtype per
  round); each round times TransformerLens, ours in each dtype, then both peaks."""
  for dtype in DTYPES:
    ours.time(dtype, 3)  # compile and warm up
  n_tl = max(1, int(seconds_per_round / tl.time(1)))
  n_ours = {d: max(1, int(seconds_per_round / ours.time(d, 1))) for d in DTYPES}
  tl_rates, our_rates, peaks = [], {d: [] for d in DTYPES}, {d: [] for d in DTYPES}
  for _ in range(rounds):
    tl_rates.append(n_tl * tokens_per_step / tl.time(n_tl))
    for d in DTYPES:
      our_rates[d].append(n_ours[d] * tokens_per_step / ours.time(d, n_ours[d]))
    for d in DTYPES:
      peaks[d].append(matmul_peak_flops(2048, 2, jnp.dtype(d)))
  return tl_rates, our_rates, peaks


def _our_summary(plans, tl_rates, our_rates, peaks, flops: float) -> dict:
  """Per dtype: its step plan, rates, ratios to TransformerLens and MFUs (see the caller)."""
  theirs = max(tl_rates)
  ours = {}
  for d in DTYPES:
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
  return ours


def compare_with_transformerlens(config, tl_python: str, rounds: int = 5,
                                 seconds_per_round: float = 3.0) -> dict:
  """Training tokens/s of our step, in float32 and in bfloat16 compute, and of TransformerLens
  (float32, its default) at the same shape, timed alternately in one run (round k:
  TransformerLens, ours in each compute dtype, then the float32 and bfloat16 matmul peaks).  Per
  dtype: the ratio to TransformerLens (best rates, median rates) and the MFU per round against
  that round's peak of the same dtype, and best rate over best peak.  ``default`` names the
  dtype ``train.compute_dtype`` resolves to on this machine."""
  m, t = config.model, config.train
  shape = {k: m[k] for k in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx")}
  shape |= {"batch_size": t.batch_size, "threads": os.cpu_count() or 1}
  tl = TransformerLensWorker(tl_python, shape)
  try:
    ours = OurSteps(config)
    tl_rates, our_rates, peaks = _timed_rounds(tl, ours, t.batch_size * m.n_ctx, rounds,
                                               seconds_per_round)
  finally:
    tl.close()
  flops = model_flops_per_token(m)
  return {
      "benchmark": "compare", "shape": shape, "device_kind": jax.devices()[0].device_kind,
      "cpu_count": os.cpu_count(), "default": ours.default,
      "transformerlens": tl.info, "rounds": rounds,
      "transformerlens_tokens_per_s_rounds": [round(r) for r in tl_rates],
      "ours": _our_summary(ours.plans, tl_rates, our_rates, peaks, flops),
      "matmul_peak_gflops_float32": round(max(peaks["float32"]) / 1e9, 1),
      "matmul_peak_gflops_bfloat16": round(max(peaks["bfloat16"]) / 1e9, 1),
      "mfu_transformerlens_vs_float32_peak": round(max(tl_rates) * flops
                                                   / max(peaks["float32"]), 3),
      "load_average_after": [round(x, 2) for x in os.getloadavg()],
  }
