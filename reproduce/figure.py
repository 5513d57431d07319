"""Make the papers' figures, end to end: train (once, cached) → analyse → plot → check claims.

    python -m reproduce.figure --name eigen_hist           # cpu preset, outputs in figures/
    python -m reproduce.figure --all                       # every figure, plus figures/index.html
    python -m reproduce.figure --all --preset=paper --train_corpus=/data/text --workdir=DIR
    python -m reproduce.figure --list
    python -m reproduce.figure --name composition_scores --checkpoint=runs/attn2l
    python -m reproduce.figure --name ov_eigenvalues --checkpoint=model.safetensors
    python -m reproduce.figure --all --seeds=3             # 3 training seeds; seeds.md tallies

Each figure writes ``<workdir>/<name>/``: the picture (PNG and SVG), the numbers behind it, and
``claims.json`` (per claim: id, kind "paper" or "control", the statement and its source, the
criterion, the measured value, whether it holds; see ``experiment.claim``).  Models go to
``<workdir>/models/`` (or ``--models_dir``) and are reused by every figure that needs them.
``--all`` is one resumable batch job: it trains the models first, skips every figure whose
``claims.json`` already matches the current models and figure config, and, re-run after an
interruption, continues where it stopped.
"""

from __future__ import annotations

import base64
import html
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from reproduce import experiment
from reproduce.config import project_module
from reproduce.core.tl_config import parse_cli as parse_tl_config
from reproduce.estimate import first_run_plan
from reproduce.host import CPU_DEVICES_HELP, split_cpu
from reproduce.train.loop import USER_ERRORS, quiet_libraries

FIGURES = ("bigram", "skip_trigrams", "positional_heads", "ov_eigenvalues", "eigen_hist",
           "composition_scores", "induction_attention", "ov_qk_scatter", "term_importance",
           "induction_formation", "head_ablations", "induction_heads")


class UnknownFigure(ValueError):
  def __init__(self, name):
    super().__init__(f"unknown figure {name!r}; choose one of: {', '.join(FIGURES)}")


def figure_module(name: str):
  """``experiments/<name>.py`` (installed as ``reproduce.experiments.<name>``)."""
  if name not in FIGURES:
    raise UnknownFigure(name)
  return project_module("experiments", name)


def figure_config(name: str, preset: str):
  """``configs/<name>.py``'s config for ``preset`` (installed as ``reproduce.configs.<name>``)."""
  if name not in FIGURES:
    raise UnknownFigure(name)
  return project_module("configs", name).get_config(preset)


def describe() -> str:
  return "\n".join(f"{name:22s} {figure_module(name).DESCRIPTION}" for name in FIGURES)


def make_figure(name: str, preset: str = "cpu", workdir="figures", checkpoint: Optional[str] = None,
                models_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                log: Callable[[str], None] = print,
                loaded: Optional[Dict[str, experiment.Model]] = None,
                corpus: Optional[str] = None, train_corpus: Optional[str] = None,
                seed: Optional[int] = None, tl_config: Optional[dict] = None) -> dict:
  """Makes one figure; returns its claims summary.  ``loaded`` caches models across figures;
  ``train_corpus`` replaces the model configs' ``data.corpus`` (not with ``checkpoint``);
  ``seed`` trains the models with that training seed instead of the preset's."""
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
    models = {}
    for model_name in config.models:
      key = f"{model_name}:{preset}" + ("" if seed is None else f":seed{seed}")
      if key not in loaded:
        loaded[key] = experiment.trained_model(model_name, preset,
                                               Path(models_dir or workdir / "models"),
                                               cache_dir=cache_dir, log=log,
                                               corpus=train_corpus, seed=seed)
      models[model_name] = loaded[key]
  log(f"figure {name}: analysing {', '.join(models)}")
  out = experiment.OutputDir(workdir / name)
  try:
    claims = module.run(config, models, out.path)
    summary = {
        "figure": name, "description": module.DESCRIPTION, "preset": preset, "seed": seed,
        "figure_config": config.to_dict(),
        "models": {label: {"source": str(m.workdir or m.meta.get("path", "")),
                           "step": m.meta.get("step"), "tokens_seen": m.meta.get("tokens_seen"),
                           "architecture": m.cfg.to_dict()} for label, m in models.items()},
        "claims": claims, "analysis_seconds": round(time.time() - started, 1)}
    experiment.write_json(out.path / "claims.json", summary)
    out.commit()
  except BaseException:
    out.discard()
    raise
  for line in claim_lines(claims):
    log(line)
  return summary


# ----------------------------------------------------------------------------------------------
# The batch job (--all): train every model first, then make each figure not already made.


def figure_is_current(name: str, preset: str, workdir, models_dir=None, cache_dir=None,
                      train_corpus: Optional[str] = None, seed: Optional[int] = None) -> bool:
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
                                             train_corpus, seed)
    expected[model_name] = [str(run), model_config.train.steps]
  recorded = {label: [m.get("source"), m.get("step")]
              for label, m in summary.get("models", {}).items()}
  same_config = summary.get("figure_config") == json.loads(json.dumps(config.to_dict()))
  return (summary.get("preset") == preset and summary.get("seed") == seed and same_config
          and recorded == expected)


def make_all(preset: str, workdir, models_dir: Optional[str] = None,
             cache_dir: Optional[str] = None, log: Callable[[str], None] = print,
             train_corpus: Optional[str] = None, seed: Optional[int] = None):
  """Every figure as one resumable batch job; returns the names of the figures that failed.

  Figures already made from the current models and configs are skipped.  The models the others
  need are trained first, in order (0L, 1L, 2L): a finished run is found by its directory and
  reused, an interrupted one resumes from its newest checkpoint, and a training error stops the
  job before any figure is attempted.  Re-running the same command after a pre-emption therefore
  continues where it stopped.
  """
  todo = []
  for name in FIGURES:
    if figure_is_current(name, preset, workdir, models_dir, cache_dir, train_corpus, seed):
      log(f"figure {name}: up to date, skipped")
    else:
      todo.append(name)
  needed = list(dict.fromkeys(m for name in todo for m in figure_config(name, preset).models))
  loaded: Dict[str, experiment.Model] = {}
  for model_name in needed:
    loaded[f"{model_name}:{preset}"] = experiment.trained_model(
        model_name, preset, Path(models_dir or Path(workdir) / "models"), cache_dir=cache_dir,
        log=log, corpus=train_corpus, seed=seed)
  failures = []
  for name in todo:
    try:
      make_figure(name, preset, workdir, None, models_dir, cache_dir, log=log, loaded=loaded,
                  train_corpus=train_corpus, seed=seed)
    except (experiment.FigureError, ValueError, FileNotFoundError, RuntimeError) as e:
      print(f"error: figure {name}: {e}", file=sys.stderr)
      failures.append(name)
  return failures


def claim_lines(claims) -> list:
  """The CLI's view of a figure's claims: one line each, then the paper/control tally."""
  lines = [f"  [{'holds' if c['holds'] else 'FAILS'}] {c['kind']} {c['id']} ({c['source']}): "
           f"{c['statement']} — {c['measured']}" for c in claims]
  return lines + [f"  {tally(claims)}"]


def tally(claims) -> str:
  """'paper claims: 7 of 9 hold; controls: 2 of 2 hold', counting the two kinds apart."""
  parts = []
  for kind, name in (("paper", "paper claims"), ("control", "controls")):
    of_kind = [c for c in claims if c["kind"] == kind]
    parts.append(f"{name}: {sum(c['holds'] for c in of_kind)} of {len(of_kind)} hold")
  return "; ".join(parts)


def seed_workdir(workdir, seed_index: int) -> Path:
  """Where the figures of the ``seed_index``-th seed go: ``workdir`` itself for the first."""
  return Path(workdir) if seed_index == 0 else Path(workdir) / f"seed{seed_index}"


def seed_table(workdir, n_seeds: int) -> list:
  """Per claim (in figure order): how many of the ``n_seeds`` runs it holds for.

  Reads ``claims.json`` of every figure under each seed's folder; a claim missing from a seed
  (its figure failed, or the claim was not made) counts as not holding there.
  """
  rows: Dict[str, dict] = {}
  for index in range(n_seeds):
    for name in FIGURES:
      path = seed_workdir(workdir, index) / name / "claims.json"
      if not path.is_file():
        continue
      for c in json.loads(path.read_text())["claims"]:
        row = rows.setdefault(c["id"], {"id": c["id"], "kind": c["kind"], "source": c["source"],
                                         "statement": c["statement"], "figure": name,
                                         "holds": [None] * n_seeds, "measured": [None] * n_seeds})
        row["holds"][index], row["measured"][index] = c["holds"], c["measured"]
  for row in rows.values():
    row["seeds_holding"] = sum(bool(h) for h in row["holds"])
  return list(rows.values())


def seed_table_markdown(rows, n_seeds: int) -> str:
  """The seed table as Markdown: one row per claim, paper claims first."""
  lines = ["| claim | kind | source | holds on | " + " | ".join(
      f"seed {i}" for i in range(n_seeds)) + " |", "|---|---|---|---|" + "---|" * n_seeds]
  for row in sorted(rows, key=lambda r: r["kind"] != "paper"):
    cells = ["—" if m is None else ("✓ " if h else "✗ ") + m.replace("|", "/")
             for h, m in zip(row["holds"], row["measured"])]
    lines.append(f"| `{row['id']}` | {row['kind']} | {row['source']} | "
                 f"{row['seeds_holding']} of {n_seeds} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _seed_section(workdir: Path) -> str:
  """index.html's table of claims across seeds, when ``seeds.json`` is present."""
  path = workdir / "seeds.json"
  if not path.is_file():
    return ""
  seeds = json.loads(path.read_text())
  n = seeds["n_seeds"]
  rows = "".join(
      f"<tr class=\"{'ok' if r['seeds_holding'] == n else 'no'}\"><td><code>"
      f"{html.escape(r['id'])}</code></td><td>{r['kind']}</td><td>{html.escape(r['source'])}"
      f"</td><td>{html.escape(r['statement'])}</td><td>{r['seeds_holding']} of {n}</td></tr>"
      for r in sorted(seeds["claims"], key=lambda r: r["kind"] != "paper"))
  return (f"<section id='seeds'><h2>Claims across {n} training seeds</h2><p>The figures below "
          "are seed 0's; seeds 1 and later are under <code>seed1/</code>, … </p><table><tr>"
          f"<th>id</th><th>kind</th><th>source</th><th>statement</th><th>holds on</th></tr>"
          f"{rows}</table></section>")


def _claims_table(title: str, claims) -> str:
  """An HTML table of claims of one kind (empty string when there are none)."""
  if not claims:
    return ""
  rows = "".join(
      f"<tr class=\"{'ok' if c['holds'] else 'no'}\"><td><code>{html.escape(c['id'])}</code>"
      f"<br><span class='kind'>{html.escape(c['source'])}</span></td>"
      f"<td>{html.escape(c['statement'])}</td><td>{html.escape(c['criterion'])}</td>"
      f"<td>{html.escape(c['measured'])}</td>"
      f"<td>{'holds' if c['holds'] else 'does not hold'}</td></tr>" for c in claims)
  return (f"<h3>{html.escape(title)}</h3><table><tr><th>id, source</th><th>statement</th>"
          f"<th>criterion</th><th>measured</th><th></th></tr>{rows}</table>")


def write_index(workdir) -> Path:
  """``index.html``: every figure present in ``workdir`` with its picture and claims table,
  self-contained (pictures embedded), so it opens offline anywhere."""
  workdir = Path(workdir)
  parts, all_claims = [], []
  for name in FIGURES:
    claims_file = workdir / name / "claims.json"
    if not claims_file.is_file():
      continue
    summary = json.loads(claims_file.read_text())
    pictures = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(p.stem)}">' for p in sorted((workdir / name).glob("*.png")))
    all_claims.extend(summary["claims"])
    tables = "".join(_claims_table(title, [c for c in summary["claims"] if c["kind"] == kind])
                     for kind, title in (("paper", "paper claims"), ("control", "controls")))
    extra = ""
    if (workdir / name / f"{name}.html").is_file():
      extra = f'<p><a href="{name}/{name}.html">interactive view</a></p>'
    models = ", ".join(f"{k} (step {v.get('step')})" for k, v in summary["models"].items())
    parts.append(f'<section id="{name}"><h2>{name}</h2><p>{html.escape(summary["description"])}'
                 f'</p><p class="models">models: {html.escape(models)}; preset '
                 f'{html.escape(summary["preset"])}; {html.escape(tally(summary["claims"]))}</p>'
                 f'{pictures}{extra}{tables}</section>')
  page = ("<!doctype html><html><head><meta charset='utf-8'><title>circuits-repro figures</title>"
          "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse;"
          "width:100%;font-size:90%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
          "vertical-align:top}tr.ok td:last-child{color:#176b2c;font-weight:bold}tr.no "
          "td:last-child{color:#a11;font-weight:bold}.models{color:#666;font-size:90%}"
          "section{margin-bottom:3em}.kind{font-size:80%;color:#666}</style></head><body>"
          "<h1>A Mathematical Framework for Transformer Circuits — reproduced</h1>"
          f"<p class='tally'>All figures: {html.escape(tally(all_claims))}. Paper claims are "
          "statements of the papers (FW: A Mathematical Framework for Transformer Circuits; IH: "
          "In-context Learning and Induction Heads); controls are sanity baselines.</p>"
          + "".join(f'<a href="#{n}">{n}</a> · ' for n in FIGURES
                    if (workdir / n / "claims.json").is_file())
          + _seed_section(workdir) + "".join(parts) + "</body></html>")
  path = workdir / "index.html"
  path.write_text(page)
  return path


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  FLAGS = flags.FLAGS
  quiet_libraries(FLAGS.verbose)
  try:
    split_cpu(FLAGS.cpu_devices)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.list:
    print(describe())
    return
  if not FLAGS.all and not FLAGS.name:
    print("error: give --name=NAME, --all or --list\n\n" + describe(), file=sys.stderr)
    sys.exit(2)
  names = FIGURES if FLAGS.all else [FLAGS.name]
  if FLAGS.name and FLAGS.name not in FIGURES:
    print(f"error: {UnknownFigure(FLAGS.name)}\n\n{describe()}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.corpus and not FLAGS.checkpoint:
    print("error: --corpus chooses the text a --checkpoint is measured on; give --checkpoint too",
          file=sys.stderr)
    sys.exit(2)
  if FLAGS.seeds < 1 or (FLAGS.seeds > 1 and FLAGS.checkpoint):
    print("error: --seeds must be ≥ 1, and a --checkpoint has one seed only", file=sys.stderr)
    sys.exit(2)
  tl_config = None
  try:
    if FLAGS.tl_config:
      tl_config = parse_tl_config(FLAGS.tl_config, bool(FLAGS.checkpoint))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  loaded: Dict[str, experiment.Model] = {}
  if not FLAGS.checkpoint:
    models = {m for n in names for m in figure_config(n, FLAGS.preset).models}
    print(first_run_plan(models, len(names), FLAGS.preset, FLAGS.models_dir or Path(FLAGS.workdir) / "models",
                         seeds=FLAGS.seeds, train_corpus=FLAGS.train_corpus))
  started, failures, all_claims = time.time(), [], []
  models_dir = FLAGS.models_dir or str(Path(FLAGS.workdir) / "models")
  for index in range(FLAGS.seeds):
    seed = None if FLAGS.seeds == 1 else index
    workdir = seed_workdir(FLAGS.workdir, index)
    if seed is not None:
      print(f"=== seed {seed}: figures in {workdir}")
    if FLAGS.all and not FLAGS.checkpoint:
      try:
        failures += make_all(FLAGS.preset, workdir, models_dir, train_corpus=FLAGS.train_corpus,
                             seed=seed)
      except USER_ERRORS + (RuntimeError,) as e:  # a model could not be trained
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
      for name in FIGURES:
        claims_file = Path(workdir) / name / "claims.json"
        if claims_file.is_file():
          all_claims.extend(json.loads(claims_file.read_text())["claims"])
      continue
    for name in names:
      try:
        summary = make_figure(name, FLAGS.preset, workdir, FLAGS.checkpoint, models_dir,
                              loaded=loaded, corpus=FLAGS.corpus,
                              train_corpus=FLAGS.train_corpus, seed=seed, tl_config=tl_config)
        all_claims.extend(summary["claims"])
      except Exception as e:  # pylint: disable=broad-except
        if FLAGS.verbose:
          raise
        known = isinstance(e, USER_ERRORS + (experiment.FigureError, RuntimeError))
        print(f"error: figure {name}{'' if seed is None else f' (seed {seed})'}: "
              f"{e if known else f'{type(e).__name__}: {e}'}"
              + ("" if known else " (run with --verbose for the traceback)"), file=sys.stderr)
        failures.append(name)
  if FLAGS.seeds > 1:
    rows = seed_table(FLAGS.workdir, FLAGS.seeds)
    experiment.write_json(Path(FLAGS.workdir) / "seeds.json",
                          {"n_seeds": FLAGS.seeds, "preset": FLAGS.preset, "claims": rows})
    table = Path(FLAGS.workdir) / "seeds.md"
    table.write_text(seed_table_markdown(rows, FLAGS.seeds))
    print(f"wrote {table}")
  if FLAGS.all:
    print(f"wrote {write_index(FLAGS.workdir)}")
  print(tally(all_claims) + (f" (over {FLAGS.seeds} seeds)" if FLAGS.seeds > 1 else ""))
  print(f"done in {time.time() - started:.0f}s")
  if failures:
    sys.exit(1)


def run_cli():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("name", None, "figure to make (see --list)")
  flags.DEFINE_bool("all", False, "make every figure and index.html")
  flags.DEFINE_bool("list", False, "list the figures")
  flags.DEFINE_enum("preset", "cpu", ["test", "cpu", "paper"], "model preset to train/use")
  flags.DEFINE_string("workdir", "figures", "output folder")
  flags.DEFINE_string("models_dir", None, "trained-model cache (default <workdir>/models)")
  flags.DEFINE_string("train_corpus", None, "train the models on this corpus (local files, "
                      "directories, globs; comma-separated) instead of their configs' "
                      "data.corpus; the paper preset needs one")
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
