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

from absl import app, flags

from reproduce.config import define_config_flag, parse_flags
from reproduce.data.corpus import CorpusError, corpus_from_config
from reproduce.data.store import prepare_tokens, store_path


def prepare(config, log=print):
  """Builds (or finds) the token store of ``config``; returns (its folder, the tokens)."""
  corpus = corpus_from_config(config.data)
  kwargs = dict(sample_bytes=config.data.tokenizer_sample_bytes,
                shard_tokens=config.data.shard_tokens)
  tokens = prepare_tokens(corpus, config.model.d_vocab, config.data.cache_dir or None, log=log,
                          **kwargs)
  return store_path(corpus, config.model.d_vocab, config.data.cache_dir or None, **kwargs), tokens


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  try:
    entry, _ = prepare(flags.FLAGS.config,  # validated by parse_flags
                       log=lambda line: print(line, file=sys.stderr, flush=True))
  except (CorpusError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  manifest = json.loads((entry / "manifest.json").read_text())
  manifest.pop("splits")
  print(json.dumps({"store": str(entry), **manifest}, indent=1))


def run_cli():
  define_config_flag()
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run_cli()
