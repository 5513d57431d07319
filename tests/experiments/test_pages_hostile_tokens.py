"""Token strings from a user's tokenizer are data, never markup: every HTML page the figures
write shows a hostile vocabulary (script closers, markup, quotes, U+2028) as text, and a small
vocabulary works."""

import json
import re

import pytest

from reproduce.figure.report import write_index
from reproduce.figure.runner import make_figure
from reproduce.figure.sources import ModelSource

from tests.support.helpers import hostile_model

PAGES = ("induction_attention", pytest.param("skip_trigrams", marks=pytest.mark.slow))


def _script_blocks(page: str):
  return re.findall(r"<script>(.*?)</script>", page, flags=re.S | re.I)


@pytest.mark.parametrize("name", PAGES)
def test_hostile_tokens_stay_text_on_every_page(name, tmp_path, cache_dir):
  layers = 2 if name == "induction_attention" else 1
  weights, corpus = hostile_model(tmp_path / "model", layers)
  out = tmp_path / "figures"
  make_figure(name, ModelSource("test", checkpoint=str(weights), corpus=str(corpus),
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
