"""``bench figures``: every figure on random weights of a public model's shape, each in its own
process, with its wall time and peak resident memory (JSON).

    python -m reproduce.bench figures --shape=attn-only-2l      # or attn-only-4l, redwood, paper
    python -m reproduce.bench figures --shape=paper --only=term_importance,induction_heads

The shape's model folder (``model.safetensors`` with TransformerLens names and its config, and a
``tokenizer.json`` of the shape's vocabulary trained on the default corpus) is built once into
the cache (``$CIRCUITS_REPRO_CACHE/bench-shapes/<shape>``) and reused.  Then one process prepares
the token store (the corpus under that tokenizer, also cached), and every figure runs as
``python -m reproduce.figure --name NAME --checkpoint=FOLDER`` in a child process of its own,
so that its peak RSS (``os.wait4``'s ``ru_maxrss``) is its own.  A benchmark, not a test: the
weights are random, so the claims are not the point, only time and memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from reproduce.core import tl_format
from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights, init_weights
from reproduce.data.corpus import resolve_corpus
from reproduce.data.store import (DEFAULT_SAMPLE_BYTES, default_cache_dir, tokenizer_sample,
                                 train_tokenizer)
from reproduce.figure.runner import figure_names
from reproduce.host import cpu_description

# Public attention-only models, by the shapes of their weights (random here).
SHAPES = {
    # TransformerLens attn-only-2l / -4l: LN, standard positions, GPT-NeoX-sized vocabulary
    "attn-only-2l": dict(n_layers=2, n_heads=8, d_head=64, d_model=512, d_vocab=48262,
                         n_ctx=1024, pos="standard", norm="ln"),
    "attn-only-4l": dict(n_layers=4, n_heads=8, d_head=64, d_model=512, d_vocab=48262,
                         n_ctx=1024, pos="standard", norm="ln"),
    # Redwood's 2-layer model: LN, shortformer positions added after the norm
    "redwood": dict(n_layers=2, n_heads=8, d_head=32, d_model=256, d_vocab=50259, n_ctx=2048,
                    pos="shortformer", norm="ln", pos_after_norm=True),
    # The papers' 2-layer model (configs/attn2l.py:paper): no norm, shortformer positions
    "paper": dict(n_layers=2, n_heads=12, d_head=64, d_model=768, d_vocab=50000, n_ctx=2048,
                  pos="shortformer", norm="none"),
}


def shape_folder(shape: str, cache_dir: Optional[str] = None) -> Path:
  return Path(cache_dir or default_cache_dir()) / "bench-shapes" / shape


def build_shape(shape: str, folder: Path, log: Callable[[str], None] = print) -> Path:
  """Writes random weights of ``shape`` (N(0, 0.02²) matrices; with LN, gains 1 + N(0, 0.1²) and
  N(0, 0.02²) biases as a trained model has) and a tokenizer of its vocabulary trained on the
  default corpus into ``folder``, unless it is there already; returns the folder."""
  folder = Path(folder)
  if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
    return folder
  folder.mkdir(parents=True, exist_ok=True)
  cfg = ModelConfig(**SHAPES[shape])
  arrays = {k: np.asarray(v, np.float32)
            for k, v in init_weights(cfg, jax.random.key(0)).to_dict().items()}
  if cfg.norm == "ln":
    rng = np.random.default_rng(0)
    L, H, dh, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
    noise = lambda scale, shape: (scale * rng.standard_normal(shape)).astype(np.float32)
    arrays.update(ln_gain=1 + noise(0.1, (L, D)), ln_final=1 + noise(0.1, (D,)))
    for name, dims in (("ln_bias", (L, D)), ("ln_final_bias", (D,)), ("b_Q", (L, H, dh)),
                       ("b_K", (L, H, dh)), ("b_V", (L, H, dh)), ("b_O", (L, D))):
      arrays[name] = noise(0.02, dims)
  started = time.time()
  tokenizer = train_tokenizer(tokenizer_sample(resolve_corpus("stdlib"), DEFAULT_SAMPLE_BYTES),
                              cfg.d_vocab)
  log(f"bench figures: trained a {tokenizer.get_vocab_size()}-token tokenizer in "
      f"{time.time() - started:.0f}s")
  tokenizer.save(str(folder / "tokenizer.json"))
  partial = folder / ".model.safetensors"
  tl_format.save(partial, cfg, Weights.from_dict(arrays))
  partial.rename(folder / "model.safetensors")  # last: a folder with weights is complete
  return folder


def run_measured(command: Sequence[str], log_file: Path) -> dict:
  """Runs ``command`` as a child process (output to ``log_file``); its wall time, peak RSS and
  exit status, and the last line it printed when it failed."""
  started = time.perf_counter()
  with open(log_file, "w") as out:
    child = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(child.pid, 0)
  result = {"wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2 ** 20, 2),  # ru_maxrss is in KiB
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "exit_status": os.waitstatus_to_exitcode(status)}
  if result["exit_status"] != 0:
    lines = [line for line in Path(log_file).read_text(errors="replace").splitlines() if line]
    result["last_line"] = lines[-1] if lines else ""
  return result


def _figure_command(name: str, folder: Path, workdir: Path) -> list:
  return [sys.executable, "-m", "reproduce.figure", f"--name={name}", f"--checkpoint={folder}",
          f"--workdir={workdir}"]


def prepare_store(folder: Path, tmp: Path) -> dict:
  """The token store of the corpus under the model folder's tokenizer, built once in a child
  process before any timing; returns that process's measurements."""
  return run_measured([sys.executable, "-c", (
      "from reproduce.figure.sources import model_from_run; model_from_run('bench', "
      f"{str(folder)!r}, log=lambda line: None)")], tmp / "prepare.log")


def bench_figures(shape: str, only: Optional[Sequence[str]] = None,
                  cache_dir: Optional[str] = None,
                  log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict:
  """Every figure (or ``only`` these) on random weights of ``shape``, one child process each;
  returns per figure its wall time, CPU time, peak RSS and exit status."""
  if shape not in SHAPES:
    raise ValueError(f"figures needs --shape=one of {', '.join(SHAPES)}, not {shape!r}")
  names = list(only) if only else list(figure_names())
  unknown = sorted(set(names) - set(figure_names()))
  if unknown:
    raise ValueError(f"unknown figure(s) {', '.join(unknown)}")
  folder = build_shape(shape, shape_folder(shape, cache_dir), log)
  figures = {}
  with tempfile.TemporaryDirectory(prefix=f"bench-figures-{shape}-") as tmp:
    tmp = Path(tmp)
    prepare = prepare_store(folder, tmp)
    log(f"bench figures: corpus ready ({prepare['wall_s']}s)")
    for name in names:
      figures[name] = run_measured(_figure_command(name, folder, tmp / "figures"),
                                   tmp / f"{name}.log")
      log(f"bench figures: {name}: {figures[name]}")
  made = [f for f in figures.values() if f["exit_status"] == 0]
  return {
      "benchmark": "figures", "shape": shape, "model": SHAPES[shape], "host": cpu_description(),
      "model_folder": str(folder), "prepare": prepare, "figures": figures,
      "total_wall_s": round(sum(f["wall_s"] for f in figures.values()), 1),
      "max_peak_rss_gib": max((f["peak_rss_gib"] for f in made), default=None),
      "failed": [n for n, f in figures.items() if f["exit_status"] != 0],
      "note": "each figure in its own process (python -m reproduce.figure --checkpoint), "
              "start-up and corpus loading included; random weights, so claims are not "
              "meaningful; peak RSS from the child's rusage",
  }
