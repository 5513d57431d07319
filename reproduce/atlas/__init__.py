"""The atlas: what each head of an attention-only model does, and how sure we are
(``python -m reproduce.atlas``; docs/METHODS.md, "Atlas").

    from reproduce.atlas import Atlas, head_records
    record = head_records(model)          # one plain dict for a sources.Model, with "heads"
    atlas = Atlas(model)                  # or Atlas([model_1l, model_2l])
    atlas                                 # in a notebook: the summary table inline
    atlas.write("atlas/")                 # index.html, atlas.json, one page per head

``measure`` measures (every number by a figure's own function, on the trained weights and at
random init), ``records`` decides roles and checks and makes the plain records, ``pages`` writes
the HTML, ``plan`` counts the work before it starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, List

from reproduce.atlas.measure import Measured, measure_model
from reproduce.atlas.pages import TEMPLATE, head_table, index_page, model_facts, write_model_pages
from reproduce.atlas.records import head_records, model_record
from reproduce.config import project_module
from reproduce.figure.claims import plain
from reproduce.figure.outputs import OutputDir
from reproduce.figure.sources import Model

__all__ = ["Atlas", "head_records", "default_config"]


def default_config(preset: str = "cpu"):
  """configs/atlas.py's config for ``preset``."""
  return project_module("configs", "atlas").get_config(preset)


class Atlas:
  """The atlas of one or more models (``sources.Model``): measured when built.

  ``records``: one plain dict per model (``records.model_record``), as in ``atlas.json``;
  ``write(out_dir)``: the index, the JSON, each model's head pages, pictures and attention page;
  in a notebook the object shows its summary tables (no script needed)."""

  def __init__(self, models, config=None, log: Callable[[str], None] = lambda line: None):
    if isinstance(models, Model):
      models = [models]
    elif isinstance(models, dict):
      models = list(models.values())
    self.config = config if config is not None else default_config()
    self.measured: List[Measured] = [measure_model(m, self.config, log) for m in models]
    self.records: List[dict] = [model_record(m) for m in self.measured]

  def to_json(self) -> str:
    """``atlas.json``: the config and every model's record (strict JSON: no NaN)."""
    return json.dumps({"atlas_version": 1, "config": plain(self.config.to_dict()),
                       "models": self.records}, indent=1, allow_nan=False, ensure_ascii=False)

  def write(self, out_dir) -> Path:
    """Writes ``index.html``, ``atlas.json`` and ``<model>/`` (a page and two eigenvalue
    pictures per head, ``attention.html``) into ``out_dir``, swapped in whole when done."""
    out = OutputDir(Path(out_dir))
    try:
      (out.path / "atlas.json").write_text(self.to_json(), encoding="utf-8")
      (out.path / "index.html").write_text(index_page(self.records), encoding="utf-8")
      for record, measured in zip(self.records, self.measured):
        write_model_pages(out.path, record, measured)
      return out.commit()
    except BaseException:
      out.discard()
      raise

  def _repr_html_(self) -> str:
    style = re.search(r"<style>.*?</style>", TEMPLATE.read_text("utf-8"), re.S).group(0)
    return style + "".join(f"<h3>{r['label']}</h3>" + model_facts(r) + head_table(r, link=False)
                           for r in self.records)

  def __repr__(self) -> str:
    return f"Atlas({', '.join(r['label'] for r in self.records)})"
