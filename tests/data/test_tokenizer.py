"""reproduce.data.tokenizer: a damaged tokenizer.json is one line naming it; BOS is the declared
token, else <|endoftext|>."""

import json

import pytest

from reproduce.data.corpus import resolve_corpus
from reproduce.data.store import find_bos, prepare_tokens
from reproduce.data.tokenizer import TokenizerFileError, declared_bos, load_tokenizer

from tests.support.helpers import one_line, word_tokenizer as _word_tokenizer


def test_a_damaged_tokenizer_is_one_line_naming_the_file(tmp_path, cache_dir):
  _word_tokenizer(tmp_path / "ok" / "tokenizer.json", ["[UNK]", "<|endoftext|>", "a"])
  config = json.loads((tmp_path / "ok" / "tokenizer.json").read_text())
  damaged = {"vocab": (json.dumps(dict(config, model={"type": "BPE"})), "Missing vocab/merges"),
             "cut": ((tmp_path / "ok" / "tokenizer.json").read_text()[:50], "EOF while parsing")}
  for name, (content, reason) in damaged.items():  # no vocab/merges, and a truncated file
    path = tmp_path / name / "tokenizer.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(TokenizerFileError) as refused:
      load_tokenizer(path)
    message = one_line(str(refused.value), path)
    assert f"not a readable tokenizer.json ({reason}" in message
  (tmp_path / "text").mkdir()
  for i in range(4):
    (tmp_path / "text" / f"{i}.txt").write_text("a b a b\n" * 50)
  corpus = resolve_corpus(str(tmp_path / "text"), heldout_every=2)
  with pytest.raises(TokenizerFileError, match=r"vocab/tokenizer\.json: not a readable"):
    prepare_tokens(corpus, 300, cache_dir, log=lambda *_: 0,
                   tokenizer_file=str(tmp_path / "vocab" / "tokenizer.json"))


def test_bos_is_the_declared_token_else_endoftext(tmp_path, cache_dir):
  """TransformerLens prepends the tokenizer's BOS token; with none, <|endoftext|>."""
  words = ["[UNK]", "<s>", "<|endoftext|>", "a", "b"]
  path = tmp_path / "model" / "tokenizer.json"
  tok = _word_tokenizer(path, words)
  assert declared_bos(path) is None and find_bos(tok) == words.index("<|endoftext|>")
  (tmp_path / "text").mkdir()
  for i in range(4):
    (tmp_path / "text" / f"{i}.txt").write_text("a b b a\n" * 50)
  corpus = resolve_corpus(str(tmp_path / "text"), heldout_every=2)
  tokens = prepare_tokens(corpus, 300, cache_dir, log=lambda *_: 0, tokenizer_file=str(path))
  assert tokens.bos_id == words.index("<|endoftext|>")
  (path.parent / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<s>"}}))
  assert declared_bos(path) == "<s>" and find_bos(tok, "<s>") == words.index("<s>")
  tokens = prepare_tokens(corpus, 300, cache_dir, log=lambda *_: 0, tokenizer_file=str(path))
  assert tokens.bos_id == words.index("<s>")  # a new cache entry: the declared BOS is in its key
  (path.parent / "tokenizer_config.json").write_text("{broken")
  with pytest.raises(TokenizerFileError, match=r"tokenizer_config\.json: not a JSON object"):
    declared_bos(path)
