"""reproduce.core.checkpoint: checkpoints and snapshots read back bit for bit with the sha256 of
every array recorded; corrupt checkpoints are detected, set aside and resumed past (in process and
through the training command); non-finite weights and another config's checkpoint are refused;
old optimiser layouts restore; a smeared-key model's α round-trips; snapshot steps are
log-spaced."""

import dataclasses
import hashlib
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import reproduce
from reproduce.core import checkpoint
from reproduce.core.weights import init_weights
from reproduce.train.loop import train

from tests.support.runs import copy_run as _copy_run, run_command as _run, train_command as _cli


def _flip_one_byte(step_dir: Path) -> Path:
  """Flips one bit in the middle of the largest weight data file of a checkpoint."""
  data = [p for p in (step_dir / "weights").rglob("*") if p.is_file() and p.parent.name == "d"]
  target = max(data, key=lambda p: p.stat().st_size)
  raw = bytearray(target.read_bytes())
  raw[len(raw) // 2] ^= 0x40
  target.write_bytes(bytes(raw))
  return target


@pytest.mark.slow  # the training command resumes; in process: test_a_corrupted_checkpoint_...
def test_flipped_byte_in_checkpoint_is_detected_moved_aside_and_resumed_past(
    trained_2l, cache_dir, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  _flip_one_byte(workdir / "checkpoints" / "30")

  with pytest.raises(checkpoint.CheckpointError, match="30 is corrupt: weights"):
    reproduce.load(workdir / "checkpoints" / "30")  # figure --checkpoint=<step dir>
  messages = []
  weights, meta = checkpoint.load_checkpoint(workdir, log=messages.append)  # --checkpoint=<run>
  assert meta["step"] == 20 and any("30 is corrupt" in m for m in messages), messages
  assert checkpoint.last_sound_step(workdir / "checkpoints") == 20  # what divergence names

  # resume: 30 moved aside, 20 → 30 again, on one device as the fixture trained (another device
  # count sums the gradient in another order: equal only to float rounding)
  out = _run(_cli(workdir, cache_dir, "--cpu_devices=1"))
  assert out.returncode == 0, out.stderr
  assert "30 is corrupt" in out.stdout and "resuming" in out.stdout and "from step 20" in out.stdout
  assert out.stderr == "", out.stderr  # no library log noise without --verbose
  aside = list((workdir / "unreadable-checkpoints").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("30-")
  _, resumed = reproduce.load(workdir)
  for name, x in trained_2l.weights.to_dict().items():
    np.testing.assert_array_equal(np.asarray(x), np.asarray(getattr(resumed, name)), err_msg=name)


def test_non_finite_weights_are_refused(trained_2l, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  step_dir = workdir / "snapshots" / "30"
  weights, meta = checkpoint.load_checkpoint(step_dir)
  w = weights.to_dict()
  w["W_O"] = np.asarray(w["W_O"]).copy()
  w["W_O"].flat[3] = np.nan
  shutil.rmtree(step_dir)
  ckpts = checkpoint.RunCheckpoints(workdir)
  meta = {k: v for k, v in meta.items() if k not in ("checksums", "format", "weight_shapes")}
  ckpts.save_snapshot(30, reproduce.Weights.from_dict(w), meta)  # checksums match the NaN
  ckpts.wait()
  ckpts.close()
  with pytest.raises(checkpoint.CheckpointError, match="non-finite values in weight W_O"):
    reproduce.load(step_dir)


@pytest.mark.parametrize("missing", [("smear",), ("W_Q_pos", "W_K_pos", "smear")],
                         ids=["before smeared keys", "before the positional readers"])
def test_an_optimiser_state_saved_before_later_weight_fields_resumes(tmp_path, missing):
  """Runs trained before ``Weights`` gained its smeared-key logits (``smear``), or before that
  W_Q_pos / W_K_pos, saved their optimiser state as a dataclass without them: written here by
  such a class, it restores into today's layout."""
  cfg = reproduce.ModelConfig(2, 2, 4, 8, 11, 6)
  weights = init_weights(cfg, jax.random.key(0))
  old_fields = [f.name for f in dataclasses.fields(reproduce.Weights) if f.name not in missing]
  OldWeights = jax.tree_util.register_dataclass(
      dataclasses.make_dataclass("OldWeights", [(n, object, None) for n in old_fields],
                                 frozen=True))
  tx = optax.adamw(1e-3)
  old_state = tx.init(OldWeights(**{n: getattr(weights, n) for n in old_fields}))
  old_state = jax.tree.map(lambda x: np.asarray(x) + np.asarray(3, np.asarray(x).dtype),
                           old_state)  # not the init values
  ckpts = checkpoint.RunCheckpoints(tmp_path)
  ckpts.save(7, weights, old_state, {"step": 7})
  ckpts.wait()
  step, got_weights, got_state, _ = ckpts.restore_latest(weights, tx.init(weights),
                                                         log=pytest.fail)
  ckpts.close()
  assert step == 7 and not (tmp_path / "unreadable-checkpoints").exists()
  assert jax.tree.structure(got_state) == jax.tree.structure(tx.init(weights))
  for want, got in zip(jax.tree.leaves(old_state), jax.tree.leaves(got_state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  for name, x in weights.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(got_weights, name)), np.asarray(x))


def test_checkpoint_of_another_config_is_a_mismatch_and_nothing_moves(
    trained_2l, make_config, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  (workdir / "config.json").unlink()
  before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  with pytest.raises(checkpoint.CheckpointConfigMismatch,
                     match=r"config mismatch: checkpoint .*30 .*model.d_head: 8 → 4"):
    train(make_config(model=dict(d_head=4)), workdir, log=lambda *_: None)
  after = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                 if p.name != "lock")
  assert after == before  # nothing moved, no config.json written, no restart from 0


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


def _sha256(a) -> str:
  """The recorded checksum, written out: sha256 of the dtype string, the shape and the bytes."""
  a = np.ascontiguousarray(np.asarray(a))
  return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def _small_weights(seed):
  rng = np.random.default_rng(seed)
  shapes = {"W_E": (11, 8), "W_pos": (6, 8), "W_Q": (2, 2, 8, 4), "W_K": (2, 2, 8, 4),
            "W_V": (2, 2, 8, 4), "W_O": (2, 2, 4, 8), "W_U": (8, 11)}
  return reproduce.Weights.from_dict({k: rng.normal(size=s).astype(np.float32)
                                      for k, s in shapes.items()})


def test_checkpoints_read_back_bit_for_bit_and_record_sha256_of_every_array(tmp_path):
  """A resumable checkpoint and a snapshot of step 7: weights and optimiser state restore exactly,
  the meta records each array's sha256 as written out here, and a step directory reads alone."""
  weights = _small_weights(0)
  opt_state = {"mu": np.arange(6, dtype=np.float32).reshape(2, 3), "count": np.array(7, np.int32)}
  ckpts = checkpoint.RunCheckpoints(tmp_path)
  ckpts.save(7, weights, opt_state, {"step": 7, "tokens_seen": 700})
  ckpts.save_snapshot(7, weights, {"step": 7})
  ckpts.wait()
  step, got_weights, got_state, meta = ckpts.restore_latest(weights, opt_state, log=pytest.fail)
  ckpts.close()
  assert step == 7 and meta["tokens_seen"] == 700 and meta["format"] == checkpoint.FORMAT
  for name, a in weights.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(got_weights, name)), a)
    assert meta["checksums"]["weights"][f"['{name}']"] == _sha256(a), name
  np.testing.assert_array_equal(got_state["mu"], opt_state["mu"])
  assert meta["checksums"]["opt_state"]["['mu']"] == _sha256(opt_state["mu"])
  assert meta["weight_shapes"]["W_Q"] == [2, 2, 8, 4]
  for step_dir in (tmp_path / "checkpoints" / "7", tmp_path / "snapshots" / "7"):
    read, read_meta = checkpoint.load_checkpoint(step_dir)
    assert read_meta["step"] == 7, step_dir
    for name, a in weights.to_dict().items():
      np.testing.assert_array_equal(np.asarray(getattr(read, name)), a)
  assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [7]


def test_a_corrupted_checkpoint_is_named_set_aside_and_the_previous_one_restored(tmp_path):
  """Step 2's weight files replaced by those of another save (readable arrays that no longer
  match the checksums step 2 recorded): reading that step alone names it corrupt, reading the run
  falls back to step 1, and restoring moves step 2 to unreadable-checkpoints/ (kept, not
  deleted) and returns step 1 exactly."""
  first, second = _small_weights(1), _small_weights(2)
  state = {"mu": np.zeros(3, np.float32)}
  other = checkpoint.RunCheckpoints(tmp_path / "other")
  other.save(2, _small_weights(3), state, {"step": 2})
  other.wait()
  other.close()
  ckpts = checkpoint.RunCheckpoints(tmp_path / "run", keep=3)
  ckpts.save(1, first, state, {"step": 1})
  ckpts.save(2, second, state, {"step": 2})
  ckpts.wait()
  run = tmp_path / "run"
  shutil.rmtree(run / "checkpoints" / "2" / "weights")
  shutil.copytree(tmp_path / "other" / "checkpoints" / "2" / "weights",
                  run / "checkpoints" / "2" / "weights")
  with pytest.raises(checkpoint.CheckpointError, match=r"2 is corrupt: weights \['W_E'\]"):
    checkpoint.load_checkpoint(run / "checkpoints" / "2")
  messages = []
  _, meta = checkpoint.load_checkpoint(run, log=messages.append)
  assert meta["step"] == 1 and any("2 is corrupt" in m for m in messages), messages
  assert checkpoint.last_sound_step(run / "checkpoints") == 1
  messages.clear()
  step, weights, _, _ = ckpts.restore_latest(first, state, log=messages.append)
  ckpts.close()
  assert step == 1 and any("moved it to" in m and "2 is corrupt" in m for m in messages)
  for name, a in first.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(weights, name)), a)
  assert [p.name.split("-")[0] for p in (run / "unreadable-checkpoints").iterdir()] == ["2"]
  assert checkpoint.checkpoint_steps(run / "checkpoints") == [1]


def test_snapshot_steps_are_log_spaced_from_zero_to_the_last_step():
  """Step 0, then n − 1 steps from 1 to the last at a constant ratio (rounded to whole steps,
  so the first few may merge)."""
  for total, n in ((30, 6), (20000, 64), (1000, 3)):
    steps = [int(s) for s in checkpoint.snapshot_steps(total, n)]
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == total, steps
    assert steps == sorted(set(steps)) and len(steps) <= n, steps
    ratio = total ** (1 / (n - 2))
    later = [s for s in steps if s >= 20]  # far enough from 1 that rounding barely moves them
    np.testing.assert_allclose(np.diff(np.log(later)), np.log(ratio), atol=0.05)
  assert len(checkpoint.snapshot_steps(30, 6)) == 6
  assert len(checkpoint.snapshot_steps(20000, 64)) > 50
  assert checkpoint.snapshot_steps(5, 10) == [0, 1, 2, 3, 4, 5]  # duplicates merged
  assert checkpoint.snapshot_steps(100, 0) == []


def test_checkpoint_steps_lists_only_finished_step_folders(tmp_path):
  for name in ("3", "10", "7.orbax-checkpoint-tmp-12", "tmp"):
    (tmp_path / name).mkdir()
  (tmp_path / "5").write_text("a file, not a step folder")
  assert checkpoint.checkpoint_steps(tmp_path) == [3, 10]
  assert checkpoint.checkpoint_steps(tmp_path / "absent") == []


def test_a_smeared_key_model_round_trips_its_logits(tmp_path):
  """``smear`` is a weight like the others: saved, restored (resumable checkpoint and the plain
  reader), and trained by the optimiser whose state comes back with it."""
  cfg = reproduce.ModelConfig(2, 2, 4, 8, 11, 6, smear_keys=True)
  weights = init_weights(cfg, jax.random.key(0))
  weights = weights.replace(smear=weights.smear + np.array([[0.5, -1.0], [2.0, 0.25]], np.float32))
  tx = optax.adamw(1e-3)
  state = tx.init(weights)
  ckpts = checkpoint.RunCheckpoints(tmp_path)
  ckpts.save(3, weights, state, {"step": 3})
  ckpts.wait()
  step, got, got_state, _ = ckpts.restore_latest(weights, tx.init(weights), log=pytest.fail)
  ckpts.close()
  assert step == 3 and jax.tree.structure(got_state) == jax.tree.structure(state)
  np.testing.assert_array_equal(np.asarray(got.smear), np.asarray(weights.smear))
  assert got_state[0].mu.smear is not None
  plain, meta = checkpoint.load_checkpoint(tmp_path / "checkpoints" / "3")
  assert meta["weight_shapes"]["smear"] == [2, 2]
  np.testing.assert_array_equal(np.asarray(plain.smear), np.asarray(weights.smear))
