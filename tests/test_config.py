"""reproduce.config: configs by name, file and variant; overrides naming a misspelled field and
the closest one; validation naming the first bad value; saved configs rebuilt exactly; the paper
preset's corpus and snapshots, FW's wide one-layer variant."""

import re
import sys

import pytest

from reproduce.config import (ConfigFlagError, _ConfigSpecParser, check_corpus_size,
                              check_override, config_names, from_dict, load_config, parse_flags,
                              validate)
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


def test_a_config_by_name_by_file_and_by_variant(tmp_path):
  """The short name, the file path and the default variant (cpu) give the same configs; the
  presets differ where they say; unknown names and variants, and files that cannot give a
  config, are refused naming what is wrong."""
  short, path = load_config("attn2l:test"), load_config("configs/attn2l.py:test")
  assert short.to_dict() == path.to_dict() and short.name == "attn2l"
  assert load_config("attn2l").to_dict() == load_config("attn2l:cpu").to_dict()
  assert (short.model.d_model, short.train.steps) == (32, 30)
  assert {"attn0l", "attn1l", "attn2l"} <= set(config_names())
  with pytest.raises(ValueError, match=r"no config named 'attn9l' \(the project's configs/ "
                     r"folder has .*attn2l"):
    load_config("attn9l:test")
  with pytest.raises(ValueError, match="unknown config variant 'laptop'"):
    load_config("attn2l:laptop")
  mine = tmp_path / "mine.py"
  mine.write_text("from reproduce.config import preset\n\n"
                  "def get_config(variant):\n  return preset(1, variant, train=dict(steps=7))\n")
  assert load_config(f"{mine}:test").train.steps == 7
  (tmp_path / "empty.py").write_text("X = 1\n")
  with pytest.raises(ValueError, match="defines no get_config"):
    load_config(f"{tmp_path / 'empty.py'}:test")
  (tmp_path / "broken.py").write_text("import nothing_of_this_name\n")
  with pytest.raises(ValueError, match=r"broken\.py failed to load: ModuleNotFoundError"):
    load_config(f"{tmp_path / 'broken.py'}:test")


def test_overrides_name_a_misspelled_field_and_the_closest_one(monkeypatch):
  c = load_config("attn2l:test")
  check_override(c, "train.lr")  # a field: fine
  for name, message in (("train.lrr", '''no field 'train.lrr'. Did you mean "lr"?'''),
                        ("trian.steps", '''no field 'trian'. Did you mean "train"?'''),
                        ("model.n_heads.x", "no field 'model.n_heads.x'."),
                        ("zzz", "no field 'zzz'.")):
    with pytest.raises(ValueError) as e:
      check_override(c, name)
    assert str(e.value).startswith(f"--config.{name}: ") and str(e.value).endswith(message), e.value
  with pytest.raises(AttributeError, match='Did you mean "lr"'):  # locked: no new fields
    c.train.lrr = 0.1
  # --config's parser checks every override on the command line before applying any
  monkeypatch.setattr(sys, "argv", ["prog", "--config=attn2l:test", "--config.data.corpsu=x"])
  with pytest.raises(ConfigFlagError, match=r'--config.data.corpsu: .* Did you mean "corpus"\?'):
    _ConfigSpecParser().parse("attn2l:test")
  monkeypatch.setattr(sys, "argv", ["prog", "--config=attn2l:test", "--config.train.steps=3"])
  assert _ConfigSpecParser().parse("attn2l:test").train.steps == 30  # applied later, by absl


def test_validation_names_the_first_bad_field():
  for section, field, value, message in (
      ("train", "lr", -1.0, "config field train.lr = -1.0: must be > 0"),
      ("train", "decay_fraction", 0.0, "train.decay_fraction"),
      ("train", "grad_clip", 0.0, "config field train.grad_clip = 0.0: must be > 0"),
      ("model", "n_heads", 0, "model.n_heads must be a positive integer, got 0"),
      ("model", "norm", "rms", "model.norm must be one of")):
    c = load_config("attn1l:test")
    c.unlock()
    c[section][field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
      validate(c)
  validate(load_config("attn1l:test"))  # the presets themselves are valid


def test_a_saved_config_rebuilds_exactly_and_unknown_fields_are_named():
  saved = load_config("attn2l:paper").to_dict()
  assert from_dict(saved).to_dict() == saved
  bad = dict(saved, train=dict(saved["train"], lrr=0.1), extra=1)
  with pytest.raises(ValueError, match=re.escape("unknown config fields ['train.lrr', 'extra']")):
    from_dict(bad)


def test_parse_flags_prints_one_error_line_and_exits_2(capsys):
  with pytest.raises(SystemExit) as e:
    parse_flags(["prog", "--no_such_flag=1"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err == "error: Unknown command line flag 'no_such_flag'\n", err


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("variant", ["test", "cpu", "paper"])
def test_smeared_key_configs_are_the_vanilla_recipes_with_smeared_keys(layers, variant):
  """The smeared configs add ``model.smear_keys`` and their own name to the vanilla recipe; the
  vanilla configs hold no such field, so their hashes (their run directories) are unchanged."""
  vanilla = load_config(f"attn{layers}l:{variant}").to_dict()
  smeared = load_config(f"attn{layers}l_smeared:{variant}").to_dict()
  assert "smear_keys" not in vanilla["model"]
  assert smeared["name"] == f"attn{layers}l_smeared" and smeared["model"].pop("smear_keys") is True
  if (layers, variant) == (2, "cpu"):  # a smeared 2L forms early: it trains half as long
    assert smeared["train"].pop("steps") < vanilla["train"].pop("steps")
    smeared["train"].pop("n_snapshots"), vanilla["train"].pop("n_snapshots")
  assert {**smeared, "name": vanilla["name"]} == vanilla
  assert from_dict(load_config(f"attn{layers}l_smeared:{variant}").to_dict()).model.smear_keys
