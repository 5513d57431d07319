"""``python -m reproduce.atlas``: the atlas of every head of a model (``reproduce.atlas``).

    python -m reproduce.atlas                                # the main job's cpu 1L and 2L models
    python -m reproduce.atlas --models_dir=/tmp/base/figures/models
    python -m reproduce.atlas --checkpoint=runs/attn2l --out=atlas-attn2l
    python -m reproduce.atlas --checkpoint=attn-only-2l --corpus=~/text   # a public model folder

Without ``--checkpoint`` it analyses the main job's 1L and 2L models of ``--preset``, trained
into ``--models_dir`` or reused from there exactly as ``reproduce.figure`` does.  It prints its
plan (models, heads, what it measures, a rough time) and a progress line per step, then writes
``--out``: index.html, atlas.json and one folder of head pages per model.
"""

from __future__ import annotations

import time

from absl import app, flags

from reproduce.atlas import Atlas, default_config
from reproduce.atlas.plan import plan_text
from reproduce.cli import USER_ERRORS, quiet_libraries, usage_error
from reproduce.figure.estimate import first_run_plan, matmul_peak_flops
from reproduce.figure.sources import FigureError, command_source
from reproduce.host import CPU_DEVICES_HELP, split_cpu


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  quiet_libraries(FLAGS.verbose)
  if len(argv) > 1:
    usage_error(f"unexpected arguments {argv[1:]}")
  if FLAGS.tl_config and not FLAGS.checkpoint:
    usage_error("--tl_config describes a --checkpoint's weights; give --checkpoint too")
  try:
    split_cpu(FLAGS.cpu_devices)
  except ValueError as e:
    usage_error(str(e))
  started = time.time()
  source = command_source(FLAGS, FLAGS.models_dir)
  config = default_config(FLAGS.preset)
  try:
    if not source.checkpoint and any(
        not (run / "checkpoints" / str(c.train.steps)).is_dir()
        for c, run in map(source.run, config.models)):
      estimate = first_run_plan(config.models, 0, source).split("\n")
      print(f"training first, into {source.models_dir} (as reproduce.figure would):\n"
            + "\n".join(estimate[1:]))
    models = source.models(config.models, {}, print)
    print(plan_text(list(models.values()), config, matmul_peak_flops(2048, 3)))
    atlas = Atlas(models, config, log=print)
    out = atlas.write(FLAGS.out)
  except USER_ERRORS + (FigureError, RuntimeError) as e:
    if FLAGS.verbose:
      raise
    usage_error(str(e))
  heads = sum(len(r["heads"]) for r in atlas.records)
  print(f"wrote {out / 'index.html'}, {out / 'atlas.json'} and {heads} head pages in "
        f"{time.time() - started:.0f}s")


def define_flags():
  flags.DEFINE_enum("preset", "cpu", ["test", "cpu", "paper"],
                    "the main job's preset: its models (without --checkpoint) and the figures' "
                    "parameters the atlas measures with")
  flags.DEFINE_string("models_dir", "figures/models", "where the main job's trained models are "
                      "(trained there if missing)")
  flags.DEFINE_string("checkpoint", None, "analyse this work dir, checkpoint step, "
                      "TransformerLens .npz/.safetensors/.pth or downloaded model folder instead")
  flags.DEFINE_string("tl_config", None, "with --checkpoint: its TransformerLens config as "
                      "JSON (or a .json file), for weights without a config.json")
  flags.DEFINE_string("corpus", None, "the text the models are measured on (and trained on, "
                      "when they are trained here); default: the standard library")
  flags.DEFINE_string("out", "atlas", "output folder (replaced whole when done)")
  flags.DEFINE_bool("verbose", False, "library logs on stderr and tracebacks on errors")
  flags.DEFINE_string("cpu_devices", "auto", CPU_DEVICES_HELP)


if __name__ == "__main__":
  define_flags()
  app.run(main)
