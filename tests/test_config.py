"""reproduce.config: presets, overrides and validation: bad values are named, the paper preset's
corpus and snapshots, FW's wide one-layer variant."""

import pytest

from reproduce.config import check_corpus_size, load_config, validate
from reproduce.core.checkpoint import snapshot_steps
from reproduce.train.loop import train


def test_bad_config_values_are_named(make_config, tmp_path):
  with pytest.raises(ValueError, match="model.pos"):
    train(make_config(model=dict(pos="rotary")), tmp_path / "a")
  with pytest.raises(ValueError, match="train.decay_fraction"):
    train(make_config(train=dict(decay_fraction=0.0)), tmp_path / "b")


def test_new_data_fields_are_validated(make_config):
  for field, value in (("tokenizer_sample_bytes", 1000), ("shard_tokens", 10)):
    c = make_config("attn0l")
    c.unlock()
    c.data[field] = value
    with pytest.raises(ValueError, match=f"data.{field}"):
      validate(c)


def test_paper_preset_refuses_a_corpus_it_would_repeat_a_thousand_times():
  c = load_config("attn2l:paper")
  planned = c.train.steps * c.train.batch_size * c.model.n_ctx
  assert 9e9 < planned < 12e9  # IH: about 10B tokens
  with pytest.raises(ValueError, match=r"data.corpus.*passes over it.*data.max_epochs"):
    check_corpus_size(c, 10_000_000)  # the default stdlib corpus's size
  check_corpus_size(c, 1_000_000_000)  # ~10 passes over a 1B-token corpus are allowed


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
