"""reproduce.figure.sources: where a figure's models come from: runs (paths inside a checkpoint
shown, not followed), TransformerLens weight files, model folders with their checkpoints as
training snapshots, folders without a tokenizer, and the batch job's --corpus."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.core import circuits, scores
from reproduce.data.tokenizer import TokenizerFileError
from reproduce.figure import sources
from reproduce.figure.runner import make_figure
from reproduce.figure.sources import FigureError, ModelSource, model_from_run

from tests.support import torch_zip_writer as tzw
from tests.support.folders import (attn_only_folder as _folder,
                                   previous_token_head_folder as _previous_token_head_model,
                                   text_folder as _text, word_level_tokenizer as _tokenizer)
from tests.support.helpers import one_line, tl_model, word_tokenizer as _word_tokenizer
from tests.support.runs import copy_run as _copy_run


def test_paths_stored_in_a_checkpoint_are_shown_not_followed(trained_2l, cache_dir, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  secret = tmp_path / "secret.txt"
  secret.write_text("SECRET-MARKER " * 200)
  elsewhere = tmp_path / "elsewhere-cache"
  for step_dir in (workdir / "checkpoints").iterdir():
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"]["data"].update(corpus=str(secret), cache_dir=str(elsewhere))
    meta["tokenizer"]["path"] = str(tmp_path / "stolen-tokenizer.json")
    meta_file.write_text(json.dumps(meta))
  messages = []
  model = model_from_run("edited", workdir, cache_dir=cache_dir, log=messages.append)
  assert not elsewhere.exists()
  assert any(str(secret) in m and "not read" in m for m in messages), messages
  text = model.tokens.tokenizer().decode([int(t) for t in model.tokens.train[:20000]])
  assert "SECRET-MARKER" not in text and "import" in text  # the default corpus: Python source
  assert model.tokens.bos_id == trained_2l.tokens.bos_id

  mine = tmp_path / "mine"
  mine.mkdir()
  for i in range(4):
    (mine / f"{i}.txt").write_text(f"my own words, file {i}. " * 300)
  named = model_from_run("edited", workdir, cache_dir=cache_dir, log=messages.append,
                         corpus=str(mine))
  assert "my own words" in named.tokens.tokenizer().decode([int(t) for t in
                                                            named.tokens.train[:200]])


@pytest.mark.slow  # tokenizes the whole standard library (a --checkpoint's default corpus)
def test_checkpoint_option_takes_transformer_lens_weights(figures, tmp_path):
  workdir, _, loaded = figures
  model = loaded["attn2l:test"]
  path = reproduce.save_transformer_lens(tmp_path / "model.safetensors", model.cfg, model.weights)
  shutil.copy(model.workdir / "tokenizer.json", tmp_path / "tokenizer.json")
  summary = make_figure("ov_qk_scatter",
                        ModelSource("test", checkpoint=str(path), cache_dir=str(Path(model.tokens.tokenizer_path).parent.parent)),
                        tmp_path / "out",
                        log=lambda *_: None)
  assert summary["models"]["model.safetensors"]["architecture"]["n_layers"] == 2
  ours = json.loads((workdir / "ov_qk_scatter" / "claims.json").read_text())["claims"]
  assert summary["claims"][0]["value"] == ours[0]["value"]  # same weights, same numbers


@pytest.mark.slow  # tokenizes the whole standard library (a --checkpoint's default corpus)
def test_weight_file_figures_say_what_is_missing_and_make_the_rest(figures, tmp_path):
  _, _, loaded = figures
  model = loaded["attn2l:test"]
  path = reproduce.save_transformer_lens(tmp_path / "model.safetensors", model.cfg, model.weights)
  shutil.copy(model.workdir / "tokenizer.json", tmp_path / "tokenizer.json")
  cache = str(Path(model.tokens.tokenizer_path).parent.parent)
  out, here = tmp_path / "out", {}
  formation = make_figure("induction_formation",
                          ModelSource("test", checkpoint=str(path), cache_dir=cache),
                          out,
                          log=lambda *_: None,
                          loaded=here)
  assert (out / "induction_formation" / "induction_formation.png").is_file()
  numbers = json.loads((out / "induction_formation" / "induction_formation.json").read_text())
  assert "snapshots" in numbers["model.safetensors"]["missing"]
  assert formation["claims"] == []  # nothing that needs a trajectory is claimed
  hist = make_figure("eigen_hist",
                     ModelSource("test", checkpoint=str(path), cache_dir=cache),
                     out,
                     log=lambda *_: None,
                     loaded=here)
  assert all("no training snapshots" in c["measured"] for c in hist["claims"]
             if c["id"].startswith("eigen_hist.random_init"))


def test_checkpoint_option_reads_a_model_folder_and_its_tokenizer(tmp_path, cache_dir):
  """What ``figure --checkpoint=DIR --tl_config=...`` builds: no work directory, the folder's
  tokenizer with <|endoftext|> as BOS; a damaged tokenizer.json is one line."""
  _, state = tl_model(1, pos="shortformer", norm=None)
  folder = tmp_path / "arena"
  tzw.save_state_dict(folder / "attn_only_2L_half.pth", state, dtype="float16")
  words = ["[UNK]", "<|endoftext|>", "a", "b"]
  _word_tokenizer(folder / "tokenizer.json", words)
  (tmp_path / "text").mkdir()
  for i in range(4):
    (tmp_path / "text" / f"{i}.txt").write_text("a b b a\n" * 50)
  tl = {"positional_embedding_type": "shortformer"}
  model = model_from_run("arena", folder, cache_dir=cache_dir, log=lambda *_: 0,
                         corpus=str(tmp_path / "text"), tl_config=tl)
  assert model.workdir is None and model.cfg.pos == "shortformer"
  assert model.tokens.bos_id == words.index("<|endoftext|>")
  assert model.meta["tokenizer"]["path"] == str(folder / "tokenizer.json")
  (folder / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
  with pytest.raises(TokenizerFileError, match=r"arena/tokenizer\.json: not a readable") as e:
    model_from_run("arena", folder, cache_dir=cache_dir, log=lambda *_: 0,
                   corpus=str(tmp_path / "text"), tl_config=tl)
  one_line(str(e.value), folder / "tokenizer.json")


def test_a_folders_checkpoints_are_the_models_training_snapshots(tmp_path, cache_dir, capsys):
  labels = [1_200_000_000, 5_000_000, 300_000_000, 40_000_000]  # the largest > 1e9: tokens
  folder, _ = _folder(tmp_path, labels)
  _tokenizer(folder / "tokenizer.json")
  snapshots = reproduce.training_snapshots(folder)
  assert (snapshots.source, snapshots.axis, snapshots.labels) == (
      "training checkpoints", "tokens", tuple(sorted(labels)))
  corpus = _text(tmp_path)
  summary = make_figure("induction_formation",
                        ModelSource("test", checkpoint=str(folder), cache_dir=cache_dir, corpus=corpus),
                        tmp_path / "out",
                        log=lambda *_: 0)
  numbers = json.loads((tmp_path / "out" / "induction_formation" /
                        "induction_formation.json").read_text())["attn-only-2l"]
  assert numbers["x_axis"] == "tokens" and numbers["x"] == sorted(labels)
  assert numbers["tokens"] == sorted(labels) and "4 training checkpoints" in numbers["snapshots"]
  assert "missing" not in numbers and np.all(np.isfinite(numbers["heldout_loss"]))
  model = model_from_run("m", folder, cache_dir=cache_dir, corpus=corpus,
                                    log=lambda *_: 0)
  for n, prefix in zip(sorted(labels), numbers["prefix_matching"]):  # each checkpoint's own
    cfg, w = reproduce.load(folder / "checkpoints" / f"attn-only-2l_{n}.pth")
    np.testing.assert_allclose(prefix, scores.prefix_matching_score(
        cfg, w, model.sampling_pool(), model.bos_id), atol=1e-6)  # the one definition
  assert "induction_formation.abrupt.attn-only-2l" in [c["id"] for c in summary["claims"]]
  progress = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith("training checkpoints ")]
  assert [line.split(":")[0] for line in progress] == [f"training checkpoints {i}/4"
                                                      for i in range(1, 5)]
  assert "tokens 5,000,000 (attn-only-2l_5000000.pth" in progress[0]

  hist = make_figure("eigen_hist",
                     ModelSource("test", checkpoint=str(folder), cache_dir=cache_dir, corpus=corpus),
                     tmp_path / "out",
                     log=lambda *_: 0)
  hist_numbers = json.loads((tmp_path / "out" / "eigen_hist" / "eigen_hist.json").read_text())
  earliest = reproduce.load(folder / "checkpoints" / "attn-only-2l_5000000.pth")[1]
  np.testing.assert_allclose(hist_numbers["attn-only-2l"]["random_init"],
                             circuits.positivity(circuits.ov_eigenvalues(earliest)), atol=1e-6)
  assert "training checkpoint at tokens 5,000,000" in hist_numbers["attn-only-2l"][
      "random_init_source"]
  assert all("5,000,000" in c["measured"] for c in hist["claims"]
             if c["id"].startswith("eigen_hist.random_init"))


def test_role_figures_run_without_a_tokenizer_and_text_figures_say_why_not(tmp_path):
  folder = _previous_token_head_model(tmp_path)
  out, loaded = tmp_path / "out", {}
  make_figure("ov_qk_scatter",
              ModelSource("test", checkpoint=str(folder)),
              out,
              log=lambda *_: 0,
              loaded=loaded)
  numbers = json.loads((out / "ov_qk_scatter" / "ov_qk_no-tokenizer.json").read_text())
  assert numbers["head_roles_probe"].startswith("no tokenizer: previous-token and prefix-matching")
  assert np.asarray(numbers["previous_token_scores"])[0, 0] > 0.9
  with pytest.raises(FigureError, match="bigram measures the model on text, but "
                     "no-tokenizer has no tokenizer"):
    make_figure("bigram",
                ModelSource("test", checkpoint=str(folder)),
                out,
                log=lambda *_: 0,
                loaded=loaded)


def test_circuit_figures_run_on_a_layer_norm_shortformer_folder(tmp_path):
  folder, _ = _folder(tmp_path, [], norm="LN", pos="shortformer")  # redwood_attn_2l's kind
  for name in ("ov_eigenvalues", "positional_heads"):
    summary = make_figure(name,
                          ModelSource("test", checkpoint=str(folder)),
                          tmp_path / "out",
                          log=lambda *_: 0)
    assert summary["models"]["attn-only-2l"]["architecture"]["pos_after_norm"], name
    assert (tmp_path / "out" / name / "claims.json").is_file(), name


def test_batch_job_corpus_replaces_the_config_corpus_and_its_run_directory(tmp_path):
  plain_config, plain_run = ModelSource("paper", models_dir=tmp_path).run("attn2l")
  config, run = ModelSource("paper", models_dir=tmp_path, corpus="/data/text").run("attn2l")
  assert plain_config.data.corpus == "stdlib" and config.data.corpus == "/data/text"
  assert run != plain_run and run.parent == Path(tmp_path)


def test_a_training_code_version_bump_trains_into_new_run_directories(tmp_path, monkeypatch):
  source = ModelSource("test", models_dir=tmp_path)
  config, today = source.run("attn2l")
  assert today.name == f"attn2l-test-{sources.config_hash(config)}"
  monkeypatch.setattr(sources, "TRAINING_CODE_VERSION", sources.TRAINING_CODE_VERSION + 1)
  _, bumped = source.run("attn2l")
  assert bumped != today and bumped.parent == today.parent
