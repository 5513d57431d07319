"""Every figure on every published folder layout, by hand (slow: not part of the test suite).

    PYTHONPATH=$PWD python tests/support/check_public_layouts.py /tmp/layouts [figure ...]

Builds, from NumPy (tests/support/torch_zip_writer.py), tiny random-weight copies of the three
layouts ``figure --checkpoint=DIR`` reads, each with and without a ``tokenizer.json`` (made with
the project's own BPE trainer, ``tokenizer.train_tokenizer``, on a sample of the standard
library):

    attn-only    training config.json (LN, standard positions) + model_final.pth + checkpoints/
    arena        one float16 .pth, no config.json (--tl_config gives shortformer positions)
    redwood      training config.json (LN + shortformer: loads, cannot be folded) +
                 model_final.pth + checkpoints/ labelled in steps

then runs ``python -m reproduce.figure --all --checkpoint=DIR`` on each folder (one process per
folder: the model is loaded once for every figure) and prints the figure × folder matrix: "ok"
or the figure's one-line error.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from reproduce.data.corpus import stdlib_files
from reproduce.data.store import train_tokenizer
from tests.support import torch_zip_writer as tzw
from tests.support.helpers import tl_model
from tests.support.paths import ROOT

SHAPES = dict(n_heads=4, d_head=8, d_model=32, n_ctx=128)
TRAINING_FIELDS = {"lr_hidden": 2e-3, "batch_size_per_device": 32, "seed": 1, "d_mlp": 128,
                   "act_fn": "solu_ln", "attn_only": True, "ln_eps": 1e-5,
                   "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits"}


def text_corpus(out: Path, n_files: int = 120) -> Path:
  """A folder of standard-library sources: the text the figures measure the models on."""
  folder = out / "text"
  if not folder.is_dir():
    folder.mkdir(parents=True)
    files = stdlib_files()
    for i, f in enumerate(files[:: max(1, len(files) // n_files)][:n_files]):
      shutil.copy(f, folder / f"{i:04d}.py")
  return folder


def tokenizer_file(out: Path, corpus: Path, vocab: int = 512) -> Path:
  path = out / "tokenizer.json"
  if not path.is_file():
    texts = (p.read_text(errors="replace") for p in sorted(corpus.iterdir()))
    train_tokenizer(texts, vocab).save(str(path))
  return path


def training_config(config, normalization, shortformer):
  fields = {k: config[k] for k in ("n_layers", "d_model", "d_head", "n_heads", "n_ctx",
                                   "d_vocab")}
  return dict(fields, **TRAINING_FIELDS, normalization=normalization,
              shortformer_pos=shortformer)


def write_layouts(out: Path, vocab: int) -> dict:
  """{name: (folder, extra CLI flags)} of the three layouts, no tokenizer in them yet."""
  layouts = {}
  for name, norm, pos, labels in (("attn-only", "LN", "standard",
                                   [0, 20_000_000, 200_000_000, 2_000_000_000]),
                                  ("redwood", "LN", "shortformer", [0, 100, 1000, 10000])):
    folder = out / name
    config, state = tl_model(2, pos=pos, norm=norm, d_vocab=vocab, seed=1, **SHAPES)
    tzw.save_state_dict(folder / "model_final.pth", state)
    (folder / "config.json").write_text(json.dumps(training_config(
        config, norm, pos == "shortformer")))
    for i, n in enumerate(labels):
      tzw.save_state_dict(folder / "checkpoints" / f"{name}_{n}.pth",
                          tl_model(2, pos=pos, norm=norm, d_vocab=vocab, seed=10 + i,
                                   **SHAPES)[1])
    layouts[name] = (folder, [])
  _, state = tl_model(2, pos="shortformer", norm=None, d_vocab=vocab, seed=2, **SHAPES)
  tzw.save_state_dict(out / "arena" / "attn_only_2L_half.pth", state, dtype="float16")
  layouts["arena"] = (out / "arena",
                      ['--tl_config={"positional_embedding_type": "shortformer"}'])
  return layouts


def run_figures(folder: Path, flags, corpus: Path, names, workdir: Path) -> dict:
  """{figure: "ok" or its error line} of ``figure --checkpoint=folder`` (``--all`` or each)."""
  which = ["--all"] if not names else None
  results = {}
  for selection in ([which] if which else [[f"--name={n}"] for n in names]):
    done = subprocess.run([sys.executable, "-m", "reproduce.figure", *selection,
                           f"--checkpoint={folder}", f"--corpus={corpus}",
                           f"--workdir={workdir}", *flags], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, CIRCUITS_REPRO_CACHE=str(
                              workdir.parent.parent / "cache")))
    for line in done.stderr.splitlines():
      match = re.match(r"error: figure (\w+): (.*)", line)
      if match:
        results[match.group(1)] = match.group(2)
    if done.returncode not in (0, 1):
      results["(run)"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"
  for claims in workdir.glob("*/claims.json"):
    results.setdefault(claims.parent.name, "ok")
  return results


def main(out: str, *names):
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  corpus = text_corpus(out)
  tokenizer = tokenizer_file(out, corpus)
  vocab = json.loads(tokenizer.read_text())["model"]["vocab"]
  layouts = write_layouts(out, len(vocab))
  matrix = {}
  for name, (folder, flags) in layouts.items():
    for with_tokenizer in (False, True):
      (folder / "tokenizer.json").unlink(missing_ok=True)
      if with_tokenizer:
        shutil.copy(tokenizer, folder / "tokenizer.json")
      column = f"{name}{' + tokenizer' if with_tokenizer else ''}"
      workdir = out / "figures" / column.replace(" + ", "+")
      shutil.rmtree(workdir, ignore_errors=True)
      matrix[column] = run_figures(folder, flags, corpus, names, workdir)
      print(f"{column}: {sum(v == 'ok' for v in matrix[column].values())} figures made",
            flush=True)
  figures = sorted({f for col in matrix.values() for f in col})
  for figure in figures:
    print(f"\n{figure}")
    for column, results in matrix.items():
      print(f"  {column:22s} {results.get(figure, 'not run')}")
  (out / "matrix.json").write_text(json.dumps(matrix, indent=1))


if __name__ == "__main__":
  main(*sys.argv[1:])
