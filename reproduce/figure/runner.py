"""Make the papers' figures, end to end: train (once, cached) → analyse → plot → check claims.

Each figure writes ``<workdir>/<name>/``: the picture (PNG and SVG), the numbers behind it, and
``claims.json`` (per claim: id, kind "paper" or "control", what the paper says (``paper_says``,
paper claims only), the statement we test and its source, the criterion, the measured value,
whether it holds; see ``claims.claim``).  Models come from a ``ModelSource``: trained into
``<workdir>/models/`` (or its ``models_dir``) and reused by every figure that needs them, or one
checkpoint.  ``make_all`` is one resumable batch job: it trains the models first, skips every
figure whose ``claims.json`` is current (``figure_is_current``), and, re-run after an
interruption, continues where it stopped.

A figure is a module of ``experiments/`` that defines ``DESCRIPTION`` (one line) and
``run(config, models, outdir) -> list of claims``, with its config in ``configs/<name>.py``;
``models`` maps a label to a ``sources.Model``.  The figures are found, not listed, in the order
of each module's optional integer ``ORDER`` (``figure_names``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import pkgutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from reproduce.config import project_module
from reproduce.figure.outputs import OutputDir, write_json
from reproduce.figure.report import claim_lines, training_record
from reproduce.figure.sources import FigureError, Model, ModelSource

def _experiment_folders() -> List[str]:
  """Where the figure modules are: the ``reproduce.experiments`` package's folders (imported,
  installed, or registered from a clone), else the ``experiments/`` folder beside ``reproduce/``."""
  package = sys.modules.get("reproduce.experiments")
  if package is not None:
    return list(package.__path__)
  spec = importlib.util.find_spec("reproduce.experiments")
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)
  return [str(Path(__file__).resolve().parents[2] / "experiments")]


def _module_names() -> List[str]:
  """The modules of ``experiments/``, by name (none imported)."""
  return sorted(info.name for info in pkgutil.iter_modules(_experiment_folders())
                if not info.ispkg and not info.name.startswith("_"))


def _is_figure(module) -> bool:
  return hasattr(module, "DESCRIPTION") and callable(getattr(module, "run", None))


@functools.lru_cache(maxsize=None)
def figure_names() -> Tuple[str, ...]:
  """Every figure, in the order the batch job and index.html use: each module of ``experiments/``
  that defines ``DESCRIPTION`` and ``run``, sorted by its integer ``ORDER`` (modules without one
  come last), then by name.  Other modules there are not figures."""
  found = []
  for name in _module_names():
    module = project_module("experiments", name)
    if _is_figure(module):
      found.append((getattr(module, "ORDER", math.inf), name))
  return tuple(name for _, name in sorted(found))


class UnknownFigure(ValueError):
  def __init__(self, name):
    super().__init__(f"unknown figure {name!r}; choose one of: {', '.join(figure_names())}")


def figure_module(name: str):
  """``experiments/<name>.py`` (installed as ``reproduce.experiments.<name>``), if it is a figure;
  only that module is imported."""
  module = project_module("experiments", name) if name in _module_names() else None
  if module is None or not _is_figure(module):
    raise UnknownFigure(name)
  return module


def figure_config(name: str, preset: str):
  """``configs/<name>.py``'s config for ``preset`` (installed as ``reproduce.configs.<name>``)."""
  figure_module(name)  # an unknown figure is an error, even if a config of that name exists
  return project_module("configs", name).get_config(preset)


def describe() -> str:
  width = max(map(len, figure_names())) + 1
  return "\n".join(f"{name:{width}s} {figure_module(name).DESCRIPTION}" for name in figure_names())


def make_figure(name: str, source: ModelSource, workdir="figures",
                log: Callable[[str], None] = print,
                loaded: Optional[Dict[str, Model]] = None) -> dict:
  """Makes one figure from the models ``source`` gives; returns its claims summary.  ``loaded``
  keeps models across figures (``ModelSource.models``)."""
  module, config = figure_module(name), figure_config(name, source.preset)
  workdir = Path(workdir)
  source = source.in_folder(workdir)
  started = time.time()
  models = source.models(config.models, {} if loaded is None else loaded, log)
  log(f"figure {name}: analysing {', '.join(models) or 'the models it builds itself'}")
  out = OutputDir(workdir / name)
  try:
    claims = module.run(config, models, out.path)
    summary = {
        "figure": name, "description": module.DESCRIPTION, "preset": source.preset,
        "seed": source.seed, "figure_config": config.to_dict(), "code": code_version(name),
        "models": {label: {"source": str(m.workdir or m.meta.get("path", "")),
                           "step": m.meta.get("step"), "tokens_seen": m.meta.get("tokens_seen"),
                           "architecture": m.cfg.to_dict(),
                           "training": training_record(m.workdir)}
                   for label, m in models.items()},
        "claims": claims, "analysis_seconds": round(time.time() - started, 1)}
    write_json(out.path / "claims.json", summary)
    out.commit()
  except BaseException:
    out.discard()
    raise
  for line in claim_lines(claims):
    log(line)
  return summary


# The code a figure's numbers and verdicts come from, besides its own module and config: the
# analysis core, the data it reads and the figure machinery.
MEASURING_PACKAGES = ("core", "data", "figure")


def measuring_sources(name: str) -> List[Path]:
  """The source files figure ``name`` is made by: every module of ``MEASURING_PACKAGES``, then its
  module and config file, and those of each figure it reads passes from (its module's optional
  ``SHARES``, a tuple of figure names)."""
  package = Path(__file__).resolve().parents[1]
  files = sorted(p for folder in MEASURING_PACKAGES for p in (package / folder).rglob("*.py"))
  for figure in (name,) + tuple(getattr(figure_module(name), "SHARES", ())):
    files += [Path(figure_module(figure).__file__),
              Path(project_module("configs", figure).__file__)]
  return files


def source_hash(files) -> str:
  """A hash of the files' names and bytes, in the order given."""
  digest = hashlib.sha256()
  for path in files:
    digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
  return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def code_version(name: str) -> str:
  """``source_hash`` of ``measuring_sources(name)``: recorded in each figure's claims.json, so a
  figure made by other code than today's (after an upgrade) is remade.  Trained models are keyed
  on their configs instead (``sources.config_hash``)."""
  return source_hash(measuring_sources(name))


# ----------------------------------------------------------------------------------------------
# The batch job: train every model first, then make each figure not already made.


def figure_is_current(name: str, source: ModelSource, workdir) -> bool:
  """Whether ``<workdir>/<name>/claims.json`` came from this figure's config, preset and code
  (``code_version``) and from the finished runs the source names now: the same run directories
  (keyed by their configs' hashes) at their final steps.  A folder is only ever swapped in whole,
  so then it is complete."""
  path = Path(workdir) / name / "claims.json"
  try:
    summary = json.loads(path.read_text())
  except (OSError, ValueError):
    return False
  config = figure_config(name, source.preset)
  source = source.in_folder(workdir)
  expected = {}
  for model_name in config.models:
    model_config, run = source.run(model_name)
    expected[model_name] = [str(run), model_config.train.steps]
  recorded = {label: [m.get("source"), m.get("step")]
              for label, m in summary.get("models", {}).items()}
  same_config = summary.get("figure_config") == json.loads(json.dumps(config.to_dict()))
  return (summary.get("preset") == source.preset and summary.get("seed") == source.seed
          and same_config and summary.get("code") == code_version(name)
          and recorded == expected)


def make_all(source: ModelSource, workdir, log: Callable[[str], None] = print) -> List[str]:
  """Every figure as one resumable batch job; returns the names of the figures that failed.

  Figures already made from the current models, configs and code are skipped.  The models the
  others need are trained first, in order (0L, 1L, 2L): a finished run is found by its directory
  and reused, an interrupted one resumes from its newest checkpoint, and a training error stops
  the job before any figure is attempted.  Re-running the same command after a pre-emption
  therefore continues where it stopped.
  """
  source = source.in_folder(workdir)
  todo = []
  for name in figure_names():
    if figure_is_current(name, source, workdir):
      log(f"figure {name}: up to date, skipped")
    else:
      todo.append(name)
  needed = list(dict.fromkeys(m for name in todo for m in figure_config(name, source.preset).models))
  loaded: Dict[str, Model] = {}
  source.models(needed, loaded, log)
  failures = []
  for name in todo:
    try:
      make_figure(name, source, workdir, log=log, loaded=loaded)
    except (FigureError, ValueError, FileNotFoundError, RuntimeError) as e:
      print(f"error: figure {name}: {e}", file=sys.stderr)
      failures.append(name)
  return failures
