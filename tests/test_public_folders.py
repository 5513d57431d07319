"""A downloaded model folder in the figures: its checkpoints/ as the model's training snapshots
(induction_formation's trajectory, eigen_hist's initial weights), and head roles measured on
random tokens when the folder has no tokenizer.json."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import reproduce
import torch_zip_writer as tzw
from reproduce.core import circuits, scores
from reproduce.figure.roles import head_roles
from reproduce.figure.runner import figure_config, make_figure
from reproduce.figure.sources import FigureError, ModelSource, model_from_run
from test_tl_format import tl_model

SHAPES = dict(n_heads=2, d_head=3, d_model=10, d_vocab=17, n_ctx=8)
WORDS = ["[UNK]", "<|endoftext|>"] + [f"w{i}" for i in range(15)]  # 17 ids, one per vocab row


def _folder(root, labels, norm="LN", pos="standard", config=True):
  """attn-only-Nl's layout: training config.json, model_final.pth, checkpoints/<name>_<n>.pth
  (random weights, seed i for the i-th label); returns (folder, {label: state})."""
  folder = root / "attn-only-2l"
  tl, state = tl_model(2, pos=pos, norm=norm, seed=1, **SHAPES)
  tzw.save_state_dict(folder / "model_final.pth", state)
  if config:
    fields = {k: tl[k] for k in ("n_layers", "d_model", "d_head", "n_heads", "n_ctx", "d_vocab")}
    (folder / "config.json").write_text(json.dumps(dict(
        fields, normalization=norm, shortformer_pos=pos == "shortformer", attn_only=True,
        d_mlp=40, act_fn="solu_ln", ln_eps=1e-5, lr=1e-3, seed=0,
        tokenizer_name="NeelNanda/gpt-neox-tokenizer-digits")))
  states = {}
  for i, n in enumerate(labels):
    states[n] = tl_model(2, pos=pos, norm=norm, seed=10 + i, **SHAPES)[1]
    tzw.save_state_dict(folder / "checkpoints" / f"attn-only-2l_{n}.pth", states[n])
  return folder, states


def _text(root):
  folder = root / "text"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):  # lines: the held-out split cuts each file at newlines
    (folder / f"{i}.txt").write_text("".join(" ".join(rng.choice(WORDS[2:], 10)) + "\n"
                                             for _ in range(200)))
  return str(folder)


def _tokenizer(path):
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.save(str(path))


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


def _previous_token_head_model(tmp_path, bos_token_id=None):
  """A 2-layer no-norm folder (config.json, no tokenizer) whose head L0H0 attends to the previous
  position: positions on a circle, W_Q rotating them back by one step, W_K the identity."""
  config, state = tl_model(2, pos="standard", norm=None, seed=4, **SHAPES)
  step, radius = np.pi / 8, 25.0
  angles = np.arange(SHAPES["n_ctx"]) * step
  state["embed.W_E"] *= 0.01
  state["pos_embed.W_pos"][:] = 0
  state["pos_embed.W_pos"][:, :2] = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
  back = np.array([[np.cos(step), -np.sin(step)], [np.sin(step), np.cos(step)]])  # p @ back: −1 step
  for name, block in (("W_Q", back), ("W_K", np.eye(2))):
    state[f"blocks.0.attn.{name}"][0] = 0
    state[f"blocks.0.attn.{name}"][0, :2, :2] = block
  for name in ("b_Q", "b_K"):
    state[f"blocks.0.attn.{name}"][0] = 0
  folder = tmp_path / "no-tokenizer"
  tzw.save_state_dict(folder / "model_final.pth", state)
  if bos_token_id is not None:
    config = dict(config, bos_token_id=bos_token_id)
  (folder / "config.json").write_text(json.dumps(config))
  return folder


def test_head_roles_without_a_tokenizer_come_from_random_tokens(tmp_path):
  model = model_from_run("m", _previous_token_head_model(tmp_path), log=lambda *_: 0)
  assert model.tokens is None and model.bos_id == 0
  assert np.array_equal(model.sampling_pool(), np.arange(1, 17))  # uniform, BOS left out
  roles = head_roles(model)
  assert roles.previous_token[0, 0] > 0.9, roles.previous_token  # the constructed head
  assert roles.previous_token_head(1) == (0, 0) and roles.previous_token[0, 1] < 0.9
  assert roles.probe.startswith("no tokenizer") and "BOS = token 0 (id 0 assumed" in roles.probe
  named = model_from_run("m", _previous_token_head_model(tmp_path / "b", 5),
                                    log=lambda *_: 0)
  assert named.bos_id == 5 and 5 not in named.sampling_pool() and len(named.sampling_pool()) == 16
  assert "BOS = token 5 (bos_token_id of its config)" in head_roles(named).probe


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
