"""Make the papers' figures, end to end: train (once, cached) → analyse → plot → check claims.

    python -m reproduce.figure --name eigen_hist           # cpu preset, outputs in figures/
    python -m reproduce.figure --all                       # every figure, plus figures/index.html
    python -m reproduce.figure --all --preset=paper --train_corpus=/data/text --workdir=DIR
    python -m reproduce.figure --list
    python -m reproduce.figure --name composition_scores --checkpoint=runs/attn2l
    python -m reproduce.figure --name ov_eigenvalues --checkpoint=model.safetensors
    python -m reproduce.figure --all --seeds=3             # 3 training seeds; seeds.md tallies

Each figure writes ``<workdir>/<name>/``: the picture (PNG and SVG), the numbers behind it, and
``claims.json`` (per claim: id, kind "paper" or "control", what the paper says (``paper_says``,
paper claims only), the statement we test and its source, the criterion, the measured value,
whether it holds; see ``experiment.claim``).  Models go to
``<workdir>/models/`` (or ``--models_dir``) and are reused by every figure that needs them.
``--all`` is one resumable batch job: it trains the models first, skips every figure whose
``claims.json`` already matches the current models and figure config, and, re-run after an
interruption, continues where it stopped.

The figures are found, not listed: every module of ``experiments/`` that defines ``DESCRIPTION``
and ``run`` (see ``experiment``), in the order of its optional ``ORDER`` (``figure_names``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import pkgutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, NoReturn, Optional, Tuple

from absl import app, flags

from reproduce import experiment
from reproduce.config import project_module
from reproduce.core.tl_config import parse_cli as parse_tl_config
from reproduce.estimate import first_run_plan
from reproduce.host import CPU_DEVICES_HELP, split_cpu
from reproduce.report import (claim_lines, seed_workdir, tally, training_record, write_index,
                              write_seed_table)
from reproduce.train.loop import USER_ERRORS, quiet_libraries


def _experiment_folders() -> List[str]:
  """Where the figure modules are: the ``reproduce.experiments`` package's folders (imported,
  installed, or registered from a clone), else the ``experiments/`` folder beside ``reproduce/``."""
  package = sys.modules.get("reproduce.experiments")
  if package is not None:
    return list(package.__path__)
  spec = importlib.util.find_spec("reproduce.experiments")
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)
  return [str(Path(__file__).resolve().parent.parent / "experiments")]


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
  return "\n".join(f"{name:22s} {figure_module(name).DESCRIPTION}" for name in figure_names())


def make_figure(name: str, preset: str = "cpu", workdir="figures", checkpoint: Optional[str] = None,
                models_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                log: Callable[[str], None] = print,
                loaded: Optional[Dict[str, experiment.Model]] = None,
                corpus: Optional[str] = None, train_corpus: Optional[str] = None,
                seed: Optional[int] = None, tl_config: Optional[dict] = None,
                compute_dtype: Optional[str] = None) -> dict:
  """Makes one figure; returns its claims summary.  ``loaded`` caches models across figures;
  ``train_corpus`` replaces the model configs' ``data.corpus`` (not with ``checkpoint``);
  ``seed`` trains the models with that training seed instead of the preset's;
  ``compute_dtype`` forces their training step's product dtype (``experiment.model_run``)."""
  module, config = figure_module(name), figure_config(name, preset)
  workdir = Path(workdir)
  loaded = {} if loaded is None else loaded
  started = time.time()
  if checkpoint:
    key = f"checkpoint:{checkpoint}"
    if key not in loaded:
      loaded[key] = experiment.model_from_run(Path(checkpoint).name or str(checkpoint),
                                              checkpoint, cache_dir=cache_dir, log=log,
                                              corpus=corpus, tl_config=tl_config)
    models = {loaded[key].label: loaded[key]}
  else:
    models = trained_models(config.models, preset, Path(models_dir or workdir / "models"),
                            loaded, cache_dir, log, train_corpus, seed, compute_dtype)
  log(f"figure {name}: analysing {', '.join(models)}")
  out = experiment.OutputDir(workdir / name)
  try:
    claims = module.run(config, models, out.path)
    summary = {
        "figure": name, "description": module.DESCRIPTION, "preset": preset, "seed": seed,
        "figure_config": config.to_dict(),
        "models": {label: {"source": str(m.workdir or m.meta.get("path", "")),
                           "step": m.meta.get("step"), "tokens_seen": m.meta.get("tokens_seen"),
                           "architecture": m.cfg.to_dict(),
                           "training": training_record(m.workdir)}
                   for label, m in models.items()},
        "claims": claims, "analysis_seconds": round(time.time() - started, 1)}
    experiment.write_json(out.path / "claims.json", summary)
    out.commit()
  except BaseException:
    out.discard()
    raise
  for line in claim_lines(claims):
    log(line)
  return summary


def trained_models(names, preset: str, models_dir: Path, loaded: Dict[str, experiment.Model],
                   cache_dir: Optional[str] = None, log: Callable[[str], None] = print,
                   train_corpus: Optional[str] = None, seed: Optional[int] = None,
                   compute_dtype: Optional[str] = None) -> Dict[str, experiment.Model]:
  """{name: model} for the model configs ``names``, each trained unless already finished
  (``experiment.trained_model``) and kept in ``loaded`` under "<name>:<preset>[:seed<s>]
  [:<dtype>]", so the figures of one job share it."""
  models = {}
  for name in names:
    key = ":".join([name, preset] + ([] if seed is None else [f"seed{seed}"])
                   + ([compute_dtype] if compute_dtype else []))
    if key not in loaded:
      loaded[key] = experiment.trained_model(name, preset, models_dir, cache_dir, log=log,
                                             seed=seed, corpus=train_corpus,
                                             compute_dtype=compute_dtype)
    models[name] = loaded[key]
  return models


# ----------------------------------------------------------------------------------------------
# The batch job (--all): train every model first, then make each figure not already made.


def figure_is_current(name: str, preset: str, workdir, models_dir=None, cache_dir=None,
                      train_corpus: Optional[str] = None, seed: Optional[int] = None,
                      compute_dtype: Optional[str] = None) -> bool:
  """Whether ``<workdir>/<name>/claims.json`` came from this figure config and preset, and from
  the finished runs the preset names now: the same run directories (keyed by their configs'
  hashes) at their final steps.  A folder is only ever swapped in whole, so then it is complete."""
  path = Path(workdir) / name / "claims.json"
  try:
    summary = json.loads(path.read_text())
  except (OSError, ValueError):
    return False
  config = figure_config(name, preset)
  models_dir = Path(models_dir or Path(workdir) / "models")
  expected = {}
  for model_name in config.models:
    model_config, run = experiment.model_run(model_name, preset, models_dir, cache_dir,
                                             train_corpus, seed, compute_dtype)
    expected[model_name] = [str(run), model_config.train.steps]
  recorded = {label: [m.get("source"), m.get("step")]
              for label, m in summary.get("models", {}).items()}
  same_config = summary.get("figure_config") == json.loads(json.dumps(config.to_dict()))
  return (summary.get("preset") == preset and summary.get("seed") == seed and same_config
          and recorded == expected)


def make_all(preset: str, workdir, models_dir: Optional[str] = None,
             cache_dir: Optional[str] = None, log: Callable[[str], None] = print,
             train_corpus: Optional[str] = None, seed: Optional[int] = None,
             compute_dtype: Optional[str] = None):
  """Every figure as one resumable batch job; returns the names of the figures that failed.

  Figures already made from the current models and configs are skipped.  The models the others
  need are trained first, in order (0L, 1L, 2L): a finished run is found by its directory and
  reused, an interrupted one resumes from its newest checkpoint, and a training error stops the
  job before any figure is attempted.  Re-running the same command after a pre-emption therefore
  continues where it stopped.
  """
  todo = []
  for name in figure_names():
    if figure_is_current(name, preset, workdir, models_dir, cache_dir, train_corpus, seed,
                         compute_dtype):
      log(f"figure {name}: up to date, skipped")
    else:
      todo.append(name)
  needed = list(dict.fromkeys(m for name in todo for m in figure_config(name, preset).models))
  loaded: Dict[str, experiment.Model] = {}
  trained_models(needed, preset, Path(models_dir or Path(workdir) / "models"), loaded, cache_dir,
                 log, train_corpus, seed, compute_dtype)
  failures = []
  for name in todo:
    try:
      make_figure(name, preset, workdir, None, models_dir, cache_dir, log=log, loaded=loaded,
                  train_corpus=train_corpus, seed=seed, compute_dtype=compute_dtype)
    except (experiment.FigureError, ValueError, FileNotFoundError, RuntimeError) as e:
      print(f"error: figure {name}: {e}", file=sys.stderr)
      failures.append(name)
  return failures


def _usage_error(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _figures_to_make(args) -> list:
  """The figures the flags ``args`` ask for, once checked (exit status 2 if they clash)."""
  if not args.all and not args.name:
    _usage_error("give --name=NAME, --all or --list\n\n" + describe())
  if args.name:
    try:
      figure_module(args.name)
    except UnknownFigure as e:
      _usage_error(f"{e}\n\n{describe()}")
  if args.compute_dtype and args.checkpoint:
    _usage_error("--compute_dtype chooses how models are trained; a --checkpoint is not trained")
  if args.corpus and not args.checkpoint:
    _usage_error("--corpus chooses the text a --checkpoint is measured on; give --checkpoint too")
  if args.seeds < 1 or (args.seeds > 1 and args.checkpoint):
    _usage_error("--seeds must be ≥ 1, and a --checkpoint has one seed only")
  return list(figure_names()) if args.all else [args.name]


def _figure_error(name: str, seed: Optional[int], e: Exception) -> str:
  """The CLI's line for a figure that failed: the message alone for the errors it expects."""
  known = isinstance(e, USER_ERRORS + (experiment.FigureError, RuntimeError))
  return (f"error: figure {name}{'' if seed is None else f' (seed {seed})'}: "
          f"{e if known else f'{type(e).__name__}: {e}'}"
          + ("" if known else " (run with --verbose for the traceback)"))


def _made_claims(workdir, name: str) -> list:
  """The claims in ``<workdir>/<name>/claims.json``, none if it is missing."""
  claims_file = Path(workdir) / name / "claims.json"
  return json.loads(claims_file.read_text())["claims"] if claims_file.is_file() else []


def _tl_config(args) -> Optional[dict]:
  """``--tl_config`` parsed (a JSON object or a .json file; only with --checkpoint)."""
  try:
    return parse_tl_config(args.tl_config, bool(args.checkpoint)) if args.tl_config else None
  except ValueError as e:
    _usage_error(str(e))


def _make_seed(args, names, index: int, models_dir: str, loaded) -> Tuple[list, list]:
  """Makes the ``index``-th seed's figures; returns (the names of those that failed, the claims
  of those made)."""
  seed = None if args.seeds == 1 else index
  workdir = seed_workdir(args.workdir, index)
  if seed is not None:
    print(f"=== seed {seed}: figures in {workdir}")
  if args.all and not args.checkpoint:
    try:
      failures = make_all(args.preset, workdir, models_dir, train_corpus=args.train_corpus,
                          seed=seed, compute_dtype=args.compute_dtype)
    except USER_ERRORS + (RuntimeError,) as e:  # a model could not be trained
      _usage_error(str(e))
    return failures, [c for name in figure_names() for c in _made_claims(workdir, name)]
  failures, claims = [], []
  for name in names:
    try:
      claims.extend(make_figure(name, args.preset, workdir, args.checkpoint, models_dir,
                                loaded=loaded, corpus=args.corpus,
                                train_corpus=args.train_corpus, seed=seed,
                                tl_config=_tl_config(args),
                                compute_dtype=args.compute_dtype)["claims"])
    except Exception as e:  # pylint: disable=broad-except
      if args.verbose:
        raise
      print(_figure_error(name, seed, e), file=sys.stderr)
      failures.append(name)
  return failures, claims


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  quiet_libraries(FLAGS.verbose)
  try:
    split_cpu(FLAGS.cpu_devices)
  except ValueError as e:
    _usage_error(str(e))
  if len(argv) > 1:
    _usage_error(f"unexpected arguments {argv[1:]}")
  if FLAGS.list:
    print(describe())
    return
  names = _figures_to_make(FLAGS)
  _tl_config(FLAGS)  # a bad --tl_config stops here, before any training
  if not FLAGS.checkpoint:
    models = {m for n in names for m in figure_config(n, FLAGS.preset).models}
    print(first_run_plan(models, len(names), FLAGS.preset,
                         FLAGS.models_dir or Path(FLAGS.workdir) / "models", seeds=FLAGS.seeds,
                         train_corpus=FLAGS.train_corpus, compute_dtype=FLAGS.compute_dtype))
  started, failures, all_claims = time.time(), [], []
  models_dir = FLAGS.models_dir or str(Path(FLAGS.workdir) / "models")
  loaded: Dict[str, experiment.Model] = {}
  for index in range(FLAGS.seeds):
    failed, claims = _make_seed(FLAGS, names, index, models_dir, loaded)
    failures += failed
    all_claims += claims
  if FLAGS.seeds > 1:
    table = write_seed_table(FLAGS.workdir, FLAGS.seeds, FLAGS.preset, figure_names())
    print(f"wrote {table}")
  if FLAGS.all:
    print(f"wrote {write_index(FLAGS.workdir, figure_names())}")
  print(tally(all_claims) + (f" (over {FLAGS.seeds} seeds)" if FLAGS.seeds > 1 else ""))
  print(f"done in {time.time() - started:.0f}s")
  if failures:
    sys.exit(1)


def run_cli():
  flags.DEFINE_string("name", None, "figure to make (see --list)")
  flags.DEFINE_bool("all", False, "make every figure and index.html")
  flags.DEFINE_bool("list", False, "list the figures")
  flags.DEFINE_enum("preset", "cpu", ["test", "cpu", "paper"], "model preset to train/use")
  flags.DEFINE_string("workdir", "figures", "output folder")
  flags.DEFINE_string("models_dir", None, "trained-model cache (default <workdir>/models)")
  flags.DEFINE_string("train_corpus", None, "train the models on this corpus (local files, "
                      "directories, globs; comma-separated) instead of their configs' "
                      "data.corpus; the paper preset needs one")
  flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"],
                    "force the training step's product dtype for the models trained here "
                    "(default: the configs' 'auto': bfloat16 on accelerators and CPUs with AMX, "
                    "float32 elsewhere); forced runs train into their own directories")
  flags.DEFINE_integer("seeds", 1, "train every model with this many seeds (0, 1, …) and report "
                       "per claim how many it holds for; seed 0's figures go to --workdir, seed "
                       "s's to <workdir>/seed<s>")
  flags.DEFINE_string("checkpoint", None, "analyse this work dir, checkpoint step, "
                      "TransformerLens .npz/.safetensors/.pth or downloaded model folder "
                      "instead of training")
  flags.DEFINE_string("tl_config", None, "with --checkpoint: its TransformerLens config as "
                      "JSON (or a .json file), for weights without a config.json")
  flags.DEFINE_string("corpus", None, "with --checkpoint: the text to measure it on (a corpus "
                      "spec, as data.corpus); default: the standard library.  Paths stored in a "
                      "checkpoint are shown, never read")
  flags.DEFINE_bool("verbose", False, "library logs on stderr and tracebacks on errors")
  flags.DEFINE_string("cpu_devices", "auto", CPU_DEVICES_HELP)
  app.run(main)


if __name__ == "__main__":
  run_cli()
