"""Build a config's token store ahead of training (training builds it on first use otherwise).

    python -m reproduce.prepare --config=configs/attn2l.py:paper \\
        --config.data.corpus='/data/web/*.jsonl.gz,/data/books'

Resolves the corpus (warning about files skipped as not text), trains the tokenizer on a bounded
sample, encodes both splits into memory-mapped shards with a progress bar, and prints the
store's manifest as JSON.  Killed, it resumes after its last finished shard when run again.
"""

from __future__ import annotations

import json
import sys

from reproduce.corpus import CorpusError, corpus_from_config
from reproduce.tokenizer import prepare_tokens, store_path


def prepare(config, log=print):
  """Builds (or finds) the token store of ``config``; returns (its folder, the tokens)."""
  corpus = corpus_from_config(config.data)
  kwargs = dict(sample_bytes=config.data.tokenizer_sample_bytes,
                shard_tokens=config.data.shard_tokens)
  tokens = prepare_tokens(corpus, config.model.d_vocab, config.data.cache_dir or None, log=log,
                          **kwargs)
  return store_path(corpus, config.model.d_vocab, config.data.cache_dir or None, **kwargs), tokens


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from reproduce.config import validate  # pylint: disable=import-outside-toplevel
  del argv
  try:
    entry, _ = prepare(validate(flags.FLAGS.config),
                       log=lambda line: print(line, file=sys.stderr, flush=True))
  except (CorpusError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  manifest = json.loads((entry / "manifest.json").read_text())
  manifest.pop("splits")
  print(json.dumps({"store": str(entry), **manifest}, indent=1))


def run_cli():
  from absl import app  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/attn2l.py:paper",
                                  lock_config=True)
  app.run(main)


if __name__ == "__main__":
  run_cli()
