"""``python -m reproduce.figure``: make the papers' figures (``reproduce.figure.runner``).

    python -m reproduce.figure --name eigen_hist           # cpu preset, outputs in figures/
    python -m reproduce.figure --all                       # every figure, plus figures/index.html
    python -m reproduce.figure --all --preset=paper --corpus=/data/text --workdir=DIR
    python -m reproduce.figure --list
    python -m reproduce.figure --name composition_scores --checkpoint=runs/attn2l
    python -m reproduce.figure --name ov_eigenvalues --checkpoint=model.safetensors
    python -m reproduce.figure --all --seeds=3             # 3 training seeds; seeds.md tallies

It prints its plan and a time estimate first.  ``--corpus`` is the text: the models it trains
are trained on it, and a ``--checkpoint`` is measured on it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

from absl import app, flags

from reproduce.cli import USER_ERRORS, quiet_libraries, usage_error
from reproduce.config import check_corpus_bound
from reproduce.data.corpus import corpus_from_config
from reproduce.figure.estimate import first_run_plan
from reproduce.figure.report import seed_workdir, tally, write_index, write_seed_table
from reproduce.figure.runner import (UnknownFigure, describe, figure_config, figure_module,
                                     figure_names, make_all, make_figure)
from reproduce.figure.sources import FigureError, Model, ModelSource, command_source
from reproduce.host import CPU_DEVICES_HELP, split_cpu


def _figures_to_make(args) -> list:
  """The figures the flags ``args`` ask for, once checked (exit status 2 if they clash)."""
  if not args.all and not args.name:
    usage_error("give --name=NAME, --all or --list\n\n" + describe())
  if args.name:
    try:
      figure_module(args.name)
    except UnknownFigure as e:
      usage_error(f"{e}\n\n{describe()}")
  if args.compute_dtype and args.checkpoint:
    usage_error("--compute_dtype chooses how models are trained; a --checkpoint is not trained")
  if args.seeds < 1 or (args.seeds > 1 and args.checkpoint):
    usage_error("--seeds must be ≥ 1, and a --checkpoint has one seed only")
  return list(figure_names()) if args.all else [args.name]


def _source(args) -> ModelSource:
  """The figure command's model source (``sources.command_source`` with its dtype and models
  folder)."""
  return command_source(args, args.models_dir or Path(args.workdir) / "models",
                        compute_dtype=args.compute_dtype)


def _check_corpora(source: ModelSource, models) -> None:
  """Refuses, before any work, a corpus too small for the models' token budgets (each corpus the
  models name resolved once: listing the default corpus's files takes a second or more)."""
  corpora = {}
  for name in sorted(models):
    config, _ = source.run(name)
    spec = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    try:
      if spec not in corpora:
        corpora[spec] = corpus_from_config(config.data)
      check_corpus_bound(config, corpora[spec])
    except USER_ERRORS as e:
      where = (" The paper preset is made for GPUs and TPUs and a corpus of ~1B+ tokens "
               "(--corpus=FILES; BUILD.md)." if source.preset == "paper" else "")
      usage_error(f"model {name} ({source.preset} preset): {e}.{where}")


def _figure_error(name: str, seed: Optional[int], e: Exception) -> str:
  """The command's line for a figure that failed: the message alone for the errors it expects."""
  known = isinstance(e, USER_ERRORS + (FigureError, RuntimeError))
  return (f"error: figure {name}{'' if seed is None else f' (seed {seed})'}: "
          f"{e if known else f'{type(e).__name__}: {e}'}"
          + ("" if known else " (run with --verbose for the traceback)"))


def _made_claims(workdir, name: str) -> list:
  """The claims in ``<workdir>/<name>/claims.json``, none if it is missing."""
  claims_file = Path(workdir) / name / "claims.json"
  return json.loads(claims_file.read_text())["claims"] if claims_file.is_file() else []


def _make_seed(args, names, index: int, source: ModelSource,
               loaded: Dict[str, Model]) -> Tuple[list, list]:
  """Makes the ``index``-th seed's figures; returns (the names of those that failed, the claims
  of those made)."""
  seed = None if args.seeds == 1 else index
  source = dataclasses.replace(source, seed=seed)
  workdir = seed_workdir(args.workdir, index)
  if seed is not None:
    print(f"=== seed {seed}: figures in {workdir}")
  if args.all and not args.checkpoint:
    try:
      failures = make_all(source, workdir)
    except USER_ERRORS + (RuntimeError,) as e:  # a model could not be trained
      usage_error(str(e))
    return failures, [c for name in figure_names() for c in _made_claims(workdir, name)]
  failures, claims = [], []
  for name in names:
    try:
      claims.extend(make_figure(name, source, workdir, loaded=loaded)["claims"])
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
    usage_error(str(e))
  if len(argv) > 1:
    usage_error(f"unexpected arguments {argv[1:]}")
  if FLAGS.list:
    print(describe())
    return
  names = _figures_to_make(FLAGS)
  source = _source(FLAGS)
  if not source.checkpoint:
    models = {m for n in names for m in figure_config(n, FLAGS.preset).models}
    _check_corpora(source, models)
    print(first_run_plan(models, len(names), source, seeds=FLAGS.seeds))
  started, failures, all_claims = time.time(), [], []
  loaded: Dict[str, Model] = {}
  for index in range(FLAGS.seeds):
    failed, claims = _make_seed(FLAGS, names, index, source, loaded)
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


def define_flags():
  """The command line of ``python -m reproduce.figure``."""
  flags.DEFINE_string("name", None, "figure to make (see --list)")
  flags.DEFINE_bool("all", False, "make every figure and index.html")
  flags.DEFINE_bool("list", False, "list the figures")
  flags.DEFINE_enum("preset", "cpu", ["test", "cpu", "paper"], "model preset to train/use")
  flags.DEFINE_string("workdir", "figures", "output folder")
  flags.DEFINE_string("models_dir", None, "trained-model cache (default <workdir>/models)")
  flags.DEFINE_string("corpus", None, "the text (local files, directories, globs; "
                      "comma-separated): the models are trained on it instead of their configs' "
                      "data.corpus (the paper preset needs one), and a --checkpoint is measured "
                      "on it (default: the standard library).  Paths stored in a checkpoint are "
                      "shown, never read")
  flags.DEFINE_alias("train_corpus", "corpus")
  flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"],
                    "force the training step's product dtype for the models trained here "
                    "(default: the configs' 'auto': bfloat16 on accelerators and on CPUs with AMX "
                    "or AVX512-BF16, float32 elsewhere); forced runs train into their own "
                    "directories")
  flags.DEFINE_integer("seeds", 1, "train every model with this many seeds (0, 1, …) and report "
                       "per claim how many it holds for; seed 0's figures go to --workdir, seed "
                       "s's to <workdir>/seed<s>")
  flags.DEFINE_string("checkpoint", None, "analyse this work dir, checkpoint step, "
                      "TransformerLens .npz/.safetensors/.pth or downloaded model folder "
                      "instead of training")
  flags.DEFINE_string("tl_config", None, "with --checkpoint: its TransformerLens config as "
                      "JSON (or a .json file), for weights without a config.json")
  flags.DEFINE_bool("verbose", False, "library logs on stderr and tracebacks on errors")
  flags.DEFINE_string("cpu_devices", "auto", CPU_DEVICES_HELP)


if __name__ == "__main__":
  define_flags()
  app.run(main)
