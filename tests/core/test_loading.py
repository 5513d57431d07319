"""reproduce.core.loading: what load / load_with_meta / weights_of read from a run, a step and a
folder of training checkpoints, and their errors."""

from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.core.checkpoint import CheckpointError

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
