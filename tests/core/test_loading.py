"""reproduce.core.loading: what load / load_with_meta / weights_of read from a work directory, a
step directory, a weight file and a folder of training checkpoints (the same weights, each with
its step and tokenizer), a run's snapshots as its trajectory, and the errors."""

from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.core.checkpoint import CheckpointError
from reproduce.core.model import ModelConfig

from tests.support import torch_zip_writer as tzw
from tests.support.folders import SHAPES, attn_only_folder as _folder
from tests.support.helpers import tl_model


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


def test_checkpoints_labelled_in_steps_give_a_steps_axis(tmp_path):
  folder, _ = _folder(tmp_path, [300, 20, 1000], norm=None, pos="shortformer")
  snapshots = reproduce.training_snapshots(folder)
  assert snapshots.axis == "steps" and snapshots.labels == (20, 300, 1000)
  logged = []
  seen = [(meta["step"], cfg.pos) for cfg, _, meta in snapshots.iterate(log=logged.append)]
  assert seen == [(20, "shortformer"), (300, "shortformer"), (1000, "shortformer")]
  assert logged[0].startswith("training checkpoints 1/3: steps 20 (attn-only-2l_20.pth")
  assert reproduce.training_snapshots(tmp_path / "nothing") is None
  (tmp_path / "plain").mkdir()
  tzw.save_state_dict(tmp_path / "plain" / "model.pth", tl_model(1, **SHAPES)[1])
  assert reproduce.training_snapshots(tmp_path / "plain") is None  # no checkpoints/


def test_a_work_dir_a_step_dir_and_a_weight_file_load_the_same_model(trained_2l, tmp_path):
  """The run loads its newest checkpoint (step 30); its step directories load that step (and an
  older one, its own weights); a TransformerLens file written from them loads them back; each
  names its tokenizer; weights_of takes any of these, a Weights or a module."""
  run = trained_2l.workdir
  expected = trained_2l.weights.to_dict()
  same = lambda w: all(np.array_equal(np.asarray(getattr(w, k)), np.asarray(v))
                       for k, v in expected.items())
  cfg, w, meta = reproduce.load_with_meta(run, fold=False)
  assert meta["step"] == 30 and same(w) and cfg == ModelConfig.from_any(trained_2l.config)
  assert meta["tokenizer"]["path"] == str(run / "tokenizer.json")
  for step_dir in (run / "checkpoints" / "30", run / "snapshots" / "30"):
    cfg_s, w_s, meta_s = reproduce.load_with_meta(step_dir, fold=False)
    assert cfg_s == cfg and meta_s["step"] == 30 and same(w_s), step_dir
    assert meta_s["tokenizer"]["path"] == str(run / "tokenizer.json")
  _, older, older_meta = reproduce.load_with_meta(run / "checkpoints" / "20", fold=False)
  assert older_meta["step"] == 20 and not same(older)
  path = reproduce.save_transformer_lens(tmp_path / "model.npz", cfg, w)
  cfg_f, w_f, meta_f = reproduce.load_with_meta(path, fold=False)
  assert cfg_f == cfg and same(w_f) and meta_f["source"] == "transformer_lens"
  assert "tokenizer" not in meta_f  # none beside the file
  assert same(reproduce.weights_of(run)) and same(reproduce.weights_of(path))  # folded: no norm
  assert reproduce.weights_of(w) is w
  assert same(reproduce.weights_of(reproduce.load_model(run)))


def test_a_runs_snapshots_are_its_training_trajectory(trained_2l):
  snapshots = reproduce.training_snapshots(trained_2l.workdir)
  assert snapshots.source == "run snapshots" and snapshots.axis == "tokens"
  assert snapshots.labels[0] == 0 and snapshots.labels[-1] == 30
  assert list(snapshots.labels) == sorted(snapshots.labels)
  logged = []
  first, last = snapshots.load(0), snapshots.load(len(snapshots) - 1)
  assert first[2]["step"] == 0 and last[2]["step"] == 30
  assert snapshots.position(last[2]) == 30 * 8 * 32  # tokens seen: steps × batch × n_ctx
  assert snapshots.describe(0) == "the run's step-0 snapshot"
  steps = [meta["step"] for _, _, meta in snapshots.iterate(log=logged.append)]
  assert steps == list(snapshots.labels) and len(logged) == len(steps)
  assert logged[-1].startswith(f"run snapshots {len(steps)}/{len(steps)}: tokens 7,680")
