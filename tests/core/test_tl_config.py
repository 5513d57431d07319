"""reproduce.core.tl_config: TransformerLens and training configs mapped as TransformerLens maps
them, the refused ones, and the --tl_config option."""

import re

import pytest

import reproduce
from reproduce.core import tl_config as tlc

from tests.support.helpers import tl_model, write_tl_model


TRAINING_CONFIG = {"n_layers": 2, "d_model": 512, "d_head": 64, "n_heads": 8, "d_mlp": 2048,
                   "n_ctx": 1024, "d_vocab": 48262, "act_fn": "solu_ln", "attn_only": True,
                   "normalization": "LN", "shortformer_pos": False, "ln_eps": 1e-5,
                   "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits", "lr_hidden": 2e-3,
                   "batch_size_per_device": 32, "seed": 1, "use_attn_scale": False}


@pytest.mark.parametrize("change, expected", [
    ({}, {"normalization_type": "LN", "positional_embedding_type": "standard"}),
    ({"normalization": None, "shortformer_pos": True},
     {"normalization_type": None, "positional_embedding_type": "shortformer"}),
    ({"shortformer_pos": True}, {"normalization_type": "LN",
                                 "positional_embedding_type": "shortformer"}),
    ({"normalization": "LNPre"}, {"normalization_type": "LNPre"}),
])
def test_training_config_is_mapped_as_transformer_lens_maps_it(change, expected):
  tl, info = tlc.normalise(dict(TRAINING_CONFIG, **change))
  assert info["config_form"] == "training" and info["notes"] == []
  assert info["tokenizer_name"] == "NeelNanda/gpt-neox-tokenizer-digits"
  assert {k: tl[k] for k in expected} == expected and tl["eps"] == 1e-5
  assert (tl["n_layers"], tl["d_vocab"], tl["attn_only"]) == (2, 48262, True)
  assert "use_attn_scale" not in tl and "lr_hidden" not in tl  # training fields: not read
  tlc.check_supported(tl)
  no_pos = {k: v for k, v in TRAINING_CONFIG.items() if k != "shortformer_pos"}
  assert tlc.normalise(no_pos)[0]["positional_embedding_type"] == "standard"
  plain, info = tlc.normalise({"d_model": 4, "normalization_type": None})  # cfg.to_dict() form
  assert info["config_form"] == "transformer_lens" and plain == {"d_model": 4,
                                                                 "normalization_type": None}


@pytest.mark.parametrize("change, message", [
    ({"normalization": "RMS"}, "normalization_type 'RMS' is not supported"),
    ({"attn_only": False}, "MLP layers"),
    ({"final_rms": True}, "final_rms"),
    ({"architecture": "neel-solu-old"}, "needs a weight conversion"),
    ({"architecture": "mingpt"}, "'mingpt' needs a weight conversion"),
    ({"shortformer_pos": "yes"}, "shortformer_pos must be true or false"),
    ({"normalization_type": None}, "normalization='LN' but normalization_type=None"),
    ({"positional_embedding_type": "shortformer"}, "positional_embedding_type='shortformer'"),
])
def test_training_configs_that_are_refused(change, message):
  with pytest.raises(tlc.ConfigError, match=message):
    tl, _ = tlc.normalise(dict(TRAINING_CONFIG, **change))
    tlc.check_supported(tl)


def test_training_config_beside_any_weight_file_and_its_eps_note(tmp_path):
  config, state = tl_model(2, norm="LN")
  training = {k: config[k] for k in ("n_layers", "d_model", "d_head", "n_heads", "n_ctx",
                                     "d_vocab")}
  training.update(normalization="LN", shortformer_pos=False, attn_only=True, d_mlp=40,
                  ln_eps=1e-6)
  path = write_tl_model(tmp_path, training, state)
  cfg, _, meta = reproduce.load_with_meta(path, fold=False)
  assert cfg.eps == 1e-5 and meta["config_form"] == "training"
  assert meta["config_source"] == str(tmp_path / "config.json")
  assert "ln_eps=1e-06" in meta["notes"][0]


def test_tl_config_option(tmp_path):
  assert tlc.parse_cli('{"positional_embedding_type": "shortformer"}') == {
      "positional_embedding_type": "shortformer"}
  (tmp_path / "tl.json").write_text('{"n_ctx": 2048}')
  assert tlc.parse_cli(str(tmp_path / "tl.json")) == {"n_ctx": 2048}
  for value, message in (("{bad", "--tl_config: not valid JSON"),
                         ("[1]", "must be a JSON object"),
                         ("absent.json", "neither a JSON object nor a file")):
    with pytest.raises(tlc.ConfigError, match=re.escape(message)):
      tlc.parse_cli(value)
  with pytest.raises(tlc.ConfigError, match="give --checkpoint"):
    tlc.parse_cli("{}", has_checkpoint=False)
