"""Token strings from a user's tokenizer are data, never markup: every HTML page the figures
write shows a hostile vocabulary (script closers, markup, quotes, U+2028) as text, and a small
vocabulary works."""

import json
import re

import jax
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import reproduce
from reproduce.core.model import ModelConfig
from reproduce.core.weights import init_weights
from reproduce.figure.report import write_index
from reproduce.figure.runner import make_figure
from reproduce.figure.sources import ModelSource

HOSTILE = ["</script><b>X", "<img/src=x/onerror=alert(1)>", "<!--", "\"quoted'", "a&amp;b",
           "\u2028", "]]>", "${1}", "{{VIEWS}}", "</SCRIPT >"]
PAGES = ("induction_attention", pytest.param("skip_trigrams", marks=pytest.mark.slow))


def _hostile_model(folder, n_layers):
  """A random model with a word-level tokenizer of hostile tokens beside it, and a corpus of
  them; 40 tokens in all (a small vocabulary)."""
  words = HOSTILE + [f"w{i}" for i in range(29 - len(HOSTILE))]
  vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
  folder.mkdir(parents=True)
  tok.save(str(folder / "tokenizer.json"))
  cfg = ModelConfig(n_layers=n_layers, n_heads=2, d_head=8, d_model=16, d_vocab=len(vocab),
                    n_ctx=64)
  reproduce.save_transformer_lens(folder / "model.npz", cfg, init_weights(cfg, jax.random.key(1)))
  corpus = folder.parent / f"text{n_layers}"
  corpus.mkdir()
  for i in range(12):  # every word many times, in a different order per file
    order = [words[(i * 7 + j * (i + 3)) % len(words)] for j in range(400)]
    (corpus / f"doc{i}.txt").write_text(" ".join(order), encoding="utf-8")
  return folder / "model.npz", str(corpus)


def _script_blocks(page: str):
  return re.findall(r"<script>(.*?)</script>", page, flags=re.S | re.I)


@pytest.mark.parametrize("name", PAGES)
def test_hostile_tokens_stay_text_on_every_page(name, tmp_path, cache_dir):
  layers = 2 if name == "induction_attention" else 1
  weights, corpus = _hostile_model(tmp_path / "model", layers)
  out = tmp_path / "figures"
  make_figure(name, ModelSource("test", checkpoint=str(weights), corpus=corpus,
                                cache_dir=cache_dir), out, log=lambda *_: None)
  write_index(out, [name])
  pages = sorted(out.rglob("*.html"))
  assert len(pages) >= 2, pages  # the figure's page(s) and index.html
  for page_file in pages:
    page = page_file.read_text(encoding="utf-8")
    assert "<b>X" not in page and "<img/src" not in page, page_file
    assert "\u2028" not in page, page_file
    scripts = _script_blocks(page)
    assert page.lower().count("</script") == len(scripts), page_file  # no early closer
    assert page.count("<!--") == 0, page_file
    for script in scripts:  # the data still arrives: the tokens decode from the script's JSON
      data = re.search(r"const V = (.*);\n", script)
      if data:
        decoded = json.dumps(json.loads(data.group(1)), ensure_ascii=False)
        assert "</script><b>X" in decoded and "<img/src" in decoded, page_file
