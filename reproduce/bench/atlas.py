"""``bench atlas``: the atlas of random weights of a public model's shape, in a child process,
with its wall time and peak resident memory beside the work the atlas counted (JSON).

    python -m reproduce.bench atlas --shape=attn-only-2l      # or attn-only-4l, redwood, paper

The shape's model folder (random weights and a tokenizer of its vocabulary, as ``bench
figures`` builds it, cached) is prepared first, and so is the token store of the corpus under
its tokenizer; then ``python -m reproduce.atlas --checkpoint=FOLDER`` runs in a child process of
its own, so that its peak RSS (``os.wait4``'s ``ru_maxrss``) is its own.  The count (FLOPs per
part, ``atlas.plan.work``) and the atlas's own estimate are reported beside the measurement.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from reproduce.atlas import default_config
from reproduce.atlas.plan import ablation_windows, work
from reproduce.bench.figures import (SHAPES, build_shape, prepare_store, run_measured,
                                      shape_folder)
from reproduce.core.model import ModelConfig
from reproduce.host import cpu_description


def bench_atlas(shape: str, cache_dir: Optional[str] = None,
                log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict:
  """The atlas of random weights of ``shape`` in a child process: wall time, CPU time, peak RSS,
  exit status, the atlas's estimate and its per-step times, and the counted work."""
  if shape not in SHAPES:
    raise ValueError(f"atlas needs --shape=one of {', '.join(SHAPES)}, not {shape!r}")
  folder = build_shape(shape, shape_folder(shape, cache_dir), log)
  cfg, config = ModelConfig(**SHAPES[shape]), default_config("cpu")
  parts = work(cfg, config, has_text=True)
  with tempfile.TemporaryDirectory(prefix=f"bench-atlas-{shape}-") as tmp:
    tmp = Path(tmp)
    prepare = prepare_store(folder, tmp)
    log(f"bench atlas: corpus ready ({prepare['wall_s']}s)")
    result = run_measured([sys.executable, "-m", "reproduce.atlas", f"--checkpoint={folder}",
                           f"--out={tmp / 'atlas'}"], tmp / "atlas.log")
    printed = (tmp / "atlas.log").read_text(errors="replace")
  estimate = re.search(r"estimated ([\d.]+) min", printed)
  steps = re.findall(r"^ +(.+) \(([\d.]+)s\)$", printed, flags=re.M)
  log(f"bench atlas: {shape}: {result}")
  return {
      "benchmark": "atlas", "shape": shape, "model": SHAPES[shape], "host": cpu_description(),
      "model_folder": str(folder), "prepare": prepare, "atlas": result,
      "estimated_min": float(estimate.group(1)) if estimate else None,
      "steps_s": [[what, float(seconds)] for what, seconds in steps],
      "counted_tflop": {k: round(v / 1e12, 3) for k, v in parts.items()},
      "counted_tflop_total": round(sum(parts.values()) / 1e12, 2),
      "ablation_windows": ablation_windows(cfg, config),
      "note": "python -m reproduce.atlas --checkpoint in its own process, start-up and corpus "
              "loading included; random weights; peak RSS from the child's rusage",
  }
