"""reproduce.train.step: the learning-rate schedule, the bfloat16 step's float32 state, and the
data-parallel step on 8 fake devices against one device."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.core.model import ModelConfig
from reproduce.train.step import (TrainState, compile_train_step, constant_lr_span, data_mesh,
                                  initial_weights, learning_rate_schedule, make_optimizer,
                                  put_batch)

from tests.support.helpers import BF16_LOSS_RTOL, random_batch as _batch
from tests.support.paths import ROOT


def test_schedule_warms_up_holds_and_decays(make_config):
  c = make_config(train=dict(steps=100, warmup_steps=10, decay_fraction=0.5, lr=1.0,
                             final_lr_fraction=0.1))
  lr = learning_rate_schedule(c.train)
  assert lr(0) == 0 and abs(lr(10) - 1) < 1e-6 and abs(lr(50) - 1) < 1e-6
  assert 0.1 < lr(75) < 1 and abs(lr(100) - 0.1) < 1e-6


def test_constant_lr_span_is_where_the_schedule_sits_at_its_peak():
  """Every update in [first, last] runs at the peak lr, the one before and after do not: the
  cpu 2L recipe (4,500 steps, 200 warm-up, a quarter of the rest in the cosine) and others."""
  for steps, warmup, decay in ((4500, 200, 0.25), (100, 10, 0.5), (50, 0, 0.3), (40, 10, 1.0)):
    t = {"steps": steps, "warmup_steps": warmup, "decay_fraction": decay, "lr": 0.01,
         "final_lr_fraction": 0.0}
    lr = np.asarray(learning_rate_schedule(type("T", (), t))(np.arange(steps)))
    first, last = constant_lr_span(t)
    assert np.all(lr[first:last + 1] == np.float32(0.01)), (steps, first, last)
    assert (first == 0 or lr[first - 1] < 0.01) and lr[last + 1] < 0.01
  assert constant_lr_span({"steps": 4500, "warmup_steps": 200, "decay_fraction": 0.25}) == (
      200, 3425)


def test_bfloat16_step_keeps_float32_state_and_close_loss(make_config):
  losses = {}
  for dtype in ("float32", "bfloat16"):
    c = make_config("attn2l", train=dict(compute_dtype=dtype, attention="explicit"))
    mesh = data_mesh()
    tx = make_optimizer(c)
    w = initial_weights(c)
    state = TrainState(jnp.zeros((), jnp.int32), w, tx.init(w))
    x, y = _batch(ModelConfig.from_any(c), batch=c.train.batch_size)
    state, out = compile_train_step(c, tx, mesh)(state, *put_batch(mesh, x, y))
    losses[dtype] = float(out["loss"])
    assert {a.dtype for a in jax.tree.leaves(state.weights)} == {jnp.dtype(jnp.float32)}
    assert all(a.dtype in (jnp.float32, jnp.int32) for a in jax.tree.leaves(state.opt_state))
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=BF16_LOSS_RTOL)


SHARDED_STEP = textwrap.dedent("""
  import json, sys
  import jax, numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from reproduce.config import load_config
  from reproduce.train.plan import micro_batches
  from reproduce.train.step import (TrainState, compile_train_step, data_mesh, initial_weights,
                                    make_optimizer, put_batch, training_devices)
  assert len(jax.devices()) == 8, jax.devices()
  c = load_config("attn2l:test")
  c.unlock(); c.train.batch_size = 16; c.lock()
  tx = make_optimizer(c)
  rng = np.random.default_rng(0)
  x = rng.integers(0, c.model.d_vocab, (16, c.model.n_ctx)).astype(np.int32)
  y = rng.integers(0, c.model.d_vocab, (16, c.model.n_ctx)).astype(np.int32)
  results = {}
  for name, devices, micro in (("one", jax.devices()[:1], 2), ("eight", jax.devices(), 0)):
    c.unlock(); c.train.micro_batch_size = micro; c.lock()
    mesh = data_mesh(devices)
    w = initial_weights(c)
    state = TrainState(np.int32(0), w, tx.init(w))
    step = compile_train_step(c, tx, mesh)
    state, out = step(jax.device_put(state, NamedSharding(mesh, P())), *put_batch(mesh, x, y))
    results[name] = (float(out["loss"]), {k: np.asarray(v) for k, v in state.weights.to_dict().items()},
                     micro_batches(c, mesh.size, "cpu"))
  (l1, w1, m1), (l8, w8, m8) = results["one"], results["eight"]
  assert m1 == 8 and m8 == 1, (m1, m8)  # 8 accumulated slices of 2 rows vs one slice
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for k in w1:
    np.testing.assert_allclose(w1[k], w8[k], rtol=1e-4, atol=1e-6, err_msg=k)
  said = []
  assert len(training_devices(12, said.append)) == 6 and "6 of 8 devices" in said[0], said
  assert len(training_devices(16, said.append)) == 8 and len(said) == 1
  print("OK", l1, l8)
""")


@pytest.mark.slow  # a process with 8 fake devices
def test_data_parallel_step_on_8_fake_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED_STEP], cwd=ROOT, env=env,
                       capture_output=True, text=True)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
