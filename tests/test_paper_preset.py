"""The `paper` preset: its token budget needs a real corpus, its snapshots cover the window where
induction heads form, FW's wide one-layer variant, and the batch job's --corpus."""

from pathlib import Path

import pytest
from reproduce.config import check_corpus_size, load_config
from reproduce.core.checkpoint import snapshot_steps
from reproduce.figure.sources import ModelSource
from reproduce.train.loop import train


def test_paper_preset_refuses_a_corpus_it_would_repeat_a_thousand_times():
  c = load_config("attn2l:paper")
  planned = c.train.steps * c.train.batch_size * c.model.n_ctx
  assert 9e9 < planned < 12e9  # IH: about 10B tokens
  with pytest.raises(ValueError, match=r"data.corpus.*passes over it.*data.max_epochs"):
    check_corpus_size(c, 10_000_000)  # the default stdlib corpus's size
  check_corpus_size(c, 1_000_000_000)  # ~10 passes over a 1B-token corpus are allowed


def test_training_stops_before_writing_anything_when_the_corpus_is_too_small(make_config,
                                                                            tmp_path):
  c = make_config("attn0l", data=dict(max_epochs=1e-3))
  with pytest.raises(ValueError, match="data.max_epochs"):
    train(c, tmp_path / "run", log=lambda *_: None)
  assert not (tmp_path / "run" / "config.json").exists()
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_paper_snapshots_cover_the_induction_head_window():
  c = load_config("attn2l:paper")
  tokens_per_step = c.train.batch_size * c.model.n_ctx
  inside = [s for s in snapshot_steps(c.train.steps, c.train.n_snapshots)
            if 1e9 <= s * tokens_per_step <= 3e9]
  assert len(inside) >= 5, inside  # enough points to see a phase change within 1-3B tokens


def test_fw_wide_one_layer_variant(tmp_path):
  wide, base = load_config("attn1l:paper_32x128"), load_config("attn1l:paper")
  assert (wide.model.n_heads, wide.model.d_head, wide.model.d_model) == (32, 128, 768)
  assert (base.model.n_heads, base.model.d_head) == (12, 64)
  assert wide.name != base.name
  assert wide.train.to_dict() == base.train.to_dict()  # same schedule and token budget


def test_batch_job_corpus_replaces_the_config_corpus_and_its_run_directory(tmp_path):
  plain_config, plain_run = ModelSource("paper", models_dir=tmp_path).run("attn2l")
  config, run = ModelSource("paper", models_dir=tmp_path, corpus="/data/text").run("attn2l")
  assert plain_config.data.corpus == "stdlib" and config.data.corpus == "/data/text"
  assert run != plain_run and run.parent == Path(tmp_path)
