"""A ``tokenizer.json`` that comes with a model (beside its weights, or in a work directory):
reading it, with one line naming the file when it is damaged, and the BOS token its Hugging Face
companion files declare (``tokenizer_config.json`` / ``special_tokens_map.json``: what
TransformerLens's tokenizer prepends; ``tokenizer.find_bos`` falls back to <|endoftext|>)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tokenizers import Tokenizer


class TokenizerFileError(ValueError):
  """A tokenizer.json (or its special-tokens companion) that cannot be read."""


TOKENIZER_COMPANIONS = ("tokenizer_config.json", "special_tokens_map.json")


def load_tokenizer(path) -> Tokenizer:
  """A Hugging Face ``tokenizer.json``; a damaged one is one line naming the file."""
  try:
    return Tokenizer.from_file(str(path))
  except Exception as e:  # pylint: disable=broad-except  # tokenizers raises a bare Exception
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise TokenizerFileError(f"{path}: not a readable tokenizer.json ({reason})") from None


def declared_bos(tokenizer_file) -> Optional[str]:
  """The ``bos_token`` declared by a Hugging Face ``tokenizer_config.json`` or
  ``special_tokens_map.json`` beside ``tokenizer_file`` (what TransformerLens's tokenizer
  prepends), else None."""
  for name in TOKENIZER_COMPANIONS:
    path = Path(tokenizer_file).parent / name
    if not path.is_file():
      continue
    try:
      bos = json.loads(path.read_text()).get("bos_token")
    except (ValueError, AttributeError) as e:
      raise TokenizerFileError(f"{path}: not a JSON object ({e})") from None
    bos = bos.get("content") if isinstance(bos, dict) else bos
    if isinstance(bos, str) and bos:
      return bos
  return None
