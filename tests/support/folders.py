"""Published model folders built from NumPy (random weights in PyTorch's zip format): the
attn-only-Nl layout with its training checkpoints, a folder without a tokenizer whose head L0H0
attends to the previous position, a word-level tokenizer and text in its words."""

import json

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from tests.support import torch_zip_writer as tzw
from tests.support.helpers import tl_model


SHAPES = dict(n_heads=2, d_head=3, d_model=10, d_vocab=17, n_ctx=8)


WORDS = ["[UNK]", "<|endoftext|>"] + [f"w{i}" for i in range(15)]  # 17 ids, one per vocab row


def attn_only_folder(root, labels, norm="LN", pos="standard", config=True):
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


def text_folder(root):
  folder = root / "text"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):  # lines: the held-out split cuts each file at newlines
    (folder / f"{i}.txt").write_text("".join(" ".join(rng.choice(WORDS[2:], 10)) + "\n"
                                             for _ in range(200)))
  return str(folder)


def word_level_tokenizer(path):
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.save(str(path))


def previous_token_head_folder(tmp_path, bos_token_id=None):
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
