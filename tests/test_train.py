"""Training: it learns, resumes exactly after SIGKILL, shards over devices, and fails clearly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.core.checkpoint import CheckpointError
from reproduce.data.corpus import CorpusError
from reproduce.train.loop import TrainingDiverged, train
from reproduce.train.plan import micro_batches
from reproduce.train.step import (TrainState, compile_train_step, data_mesh, initial_weights,
                                  learning_rate_schedule, make_optimizer, put_batch,
                                  training_devices)

ROOT = Path(__file__).resolve().parents[1]


def _cli(workdir, cache_dir, *extra):
  return [sys.executable, "-m", "reproduce.train", "--config=configs/attn2l.py:test",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}", *extra]


def _records(workdir):
  return [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_loss_decreases(trained_2l):
  losses = [r["loss"] for r in _records(trained_2l.workdir) if "loss" in r]
  evals = [r["heldout_loss"] for r in _records(trained_2l.workdir) if "heldout_loss" in r]
  assert losses[-1] < losses[0] - 0.1, losses
  assert evals[-1] < evals[0] - 0.1, evals
  assert trained_2l.step == 30


def test_schedule_warms_up_holds_and_decays(make_config):
  c = make_config(train=dict(steps=100, warmup_steps=10, decay_fraction=0.5, lr=1.0,
                             final_lr_fraction=0.1))
  lr = learning_rate_schedule(c.train)
  assert lr(0) == 0 and abs(lr(10) - 1) < 1e-6 and abs(lr(50) - 1) < 1e-6
  assert 0.1 < lr(75) < 1 and abs(lr(100) - 0.1) < 1e-6


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, cache_dir):
  steps = ["--config.train.steps=100", "--config.train.checkpoint_every=20",
           "--config.train.log_every=20", "--config.train.eval_every=50"]
  straight = subprocess.Popen(_cli(tmp_path / "straight", cache_dir, *steps), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # meanwhile
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cli(killed, cache_dir, *steps), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while not (killed / "checkpoints" / "40").is_dir() and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = [int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved and max(saved) < 100, "the run finished before it could be killed"
  resumed = subprocess.run(_cli(killed, cache_dir, *steps), cwd=ROOT, check=True,
                           capture_output=True, text=True)
  assert f"resuming {killed} from step" in resumed.stdout
  assert straight.wait(timeout=300) == 0
  (_, a), (_, b) = reproduce.load(tmp_path / "straight"), reproduce.load(killed)
  for name, x in a.to_dict().items():
    np.testing.assert_array_equal(np.asarray(x), np.asarray(getattr(b, name)), err_msg=name)
  steps_logged = [r["step"] for r in _records(killed) if "loss" in r]
  assert steps_logged == sorted(set(steps_logged))  # no duplicate records after the resume


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


def test_data_parallel_step_on_8_fake_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED_STEP], cwd=ROOT, env=env,
                       capture_output=True, text=True)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_misspelled_config_field_is_named(tmp_path, cache_dir):
  args = [a.replace("configs/attn2l.py:test", "attn2l:test")  # the short form of --config
          for a in _cli(tmp_path / "w", cache_dir, "--config.train.lrr=0.1")]
  out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert out.returncode == 2, out.stderr
  assert out.stderr == ("error: --config.train.lrr: the config has no field 'train.lrr'. "
                        'Did you mean "lr"?\n')


def test_bad_config_values_are_named(make_config, tmp_path):
  with pytest.raises(ValueError, match="model.pos"):
    train(make_config(model=dict(pos="rotary")), tmp_path / "a")
  with pytest.raises(ValueError, match="train.decay_fraction"):
    train(make_config(train=dict(decay_fraction=0.0)), tmp_path / "b")


def test_empty_corpus_is_an_error(make_config, tmp_path):
  (tmp_path / "corpus").mkdir()
  with pytest.raises(CorpusError, match="corpus entry .*corpus' matches no files"):
    train(make_config(data=dict(corpus=str(tmp_path / "corpus"))), tmp_path / "w")
  (tmp_path / "corpus" / "empty.txt").write_text("")
  with pytest.raises(CorpusError, match="no non-empty text files"):
    train(make_config(data=dict(corpus=str(tmp_path / "corpus"))), tmp_path / "w")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(make_config, tmp_path):
  c = make_config(train=dict(lr=1e30, warmup_steps=0, log_every=1, checkpoint_every=1,
                             eval_every=100, grad_clip=1e30))
  with pytest.raises(TrainingDiverged, match="the last good checkpoint is step") as err:
    train(c, tmp_path, log=lambda *_: None)
  bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < bad_step


def test_unreadable_newest_checkpoint_falls_back(trained_2l, make_config, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(trained_2l.workdir, workdir)
  newest = workdir / "checkpoints" / "30"
  for f in newest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b"corrupt")
  messages = []
  result = train(make_config("attn2l"), workdir, log=messages.append)
  assert any("checkpoint" in m and "unreadable" in m for m in messages), messages
  assert any("resuming" in m and "from step 20" in m for m in messages), messages
  assert result.step == 30
  assert len(list((workdir / "unreadable-checkpoints").iterdir())) == 1  # kept, not deleted
  np.testing.assert_array_equal(np.asarray(result.weights.W_Q), np.asarray(trained_2l.weights.W_Q))


def test_changed_config_in_existing_workdir_is_refused(trained_2l, make_config):
  with pytest.raises(ValueError, match="different config.*model.d_head"):
    train(make_config("attn2l", model=dict(d_head=4)), trained_2l.workdir)


def test_finished_run_is_not_retrained(trained_2l, make_config):
  messages = []
  result = train(make_config("attn2l"), trained_2l.workdir, log=messages.append)
  assert any("already trained" in m for m in messages) and result.step == 30


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError):
    reproduce.load(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="holds no checkpoints"):
    reproduce.load(tmp_path / "empty")


def test_checkpoint_and_snapshots_describe_themselves(trained_2l):
  np.testing.assert_array_equal(np.asarray(reproduce.weights_of(trained_2l.workdir).W_O),
                                np.asarray(trained_2l.weights.W_O))
  cfg, w, meta = reproduce.load_with_meta(trained_2l.workdir / "snapshots" / "0")
  assert meta["step"] == 0 and meta["config"]["name"] == "attn2l"
  assert Path(meta["tokenizer"]["path"]).is_file()
  snaps = sorted(int(p.name) for p in (trained_2l.workdir / "snapshots").iterdir())
  assert snaps[0] == 0 and snaps[-1] == 30 and len(snaps) >= 4
