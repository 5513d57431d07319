"""Experiment configs: one ``ml_collections.ConfigDict`` layout shared by every model config.

``configs/attn{0,1,2}l.py`` each define ``get_config(variant)`` on top of ``preset`` below;
variants are ``test`` (seconds, for pytest), ``cpu`` (minutes on a 2-core laptop) and ``paper``
(the papers' sizes and token budget, for GPU/TPU; ``preset`` says what was chosen and why).
Configs are locked, so a misspelled field is an error that names it, and ``validate`` checks every
value before any work starts.  Every command that takes a config defines ``--config`` with
``define_config_flag`` and parses its flags with ``parse_flags``: the same spelling
(``--config=configs/attn2l.py:cpu`` or ``attn2l:cpu``, ``--config.train.steps=400``) and the same
one-line errors everywhere.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, List, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from reproduce.core.model import NORM_MODES, POSITION_MODES, ModelConfig
from reproduce.core.weights import POSITION_INITS
from reproduce.data.corpus import DEFAULT_HELDOUT_EVERY
from reproduce.data.store import DEFAULT_SAMPLE_BYTES, DEFAULT_SHARD_TOKENS

VARIANTS = ("test", "cpu", "paper")

flags.disclaim_key_flags()  # --config is a key flag of the command that calls define_config_flag


# Model fields that a config may add to ``base_config``'s (unlocking it), with their default.
OPTIONAL_MODEL_FIELDS = {"smear_keys": False}


def base_config(n_layers: int) -> ml_collections.ConfigDict:
  """Every field a config may set, with its default (the CPU preset's architecture)."""
  c = ml_collections.ConfigDict()
  c.name = f"attn{n_layers}l"  # model name: the cache key of trained models, the figure labels

  c.model = ml_collections.ConfigDict()
  c.model.n_layers = n_layers  # attention layers (0 = embed → unembed: a bigram model)
  c.model.n_heads = 4  # heads per layer
  c.model.d_head = 32  # width of each head's query, key and value
  c.model.d_model = 128  # residual stream width
  c.model.d_vocab = 2048  # BPE vocabulary size (tokenizer trained to this size)
  c.model.n_ctx = 256  # context length, BOS included
  c.model.pos = "shortformer"  # positions added to Q/K inputs only; "standard": to the residual
  c.model.pos_init = "learned"  # "learned" or "sinusoidal" (fixed, never trained)
  c.model.pos_scale = 1.0  # multiplies the initial (or fixed sinusoidal) position vectors
  c.model.norm = "none"  # "none" keeps every circuit exact; "ln" adds gain-only layer norm
  c.model.init_std = 0.02  # std of the initial weights
  c.model.qk_init_std = -1.0  # std of the initial W_Q, W_K; negative: same as init_std
  # Not here: model.smear_keys (IH's smeared keys, ``ModelConfig.smear_keys``), which only the
  # smeared-key configs set (``OPTIONAL_MODEL_FIELDS``), so that every other config's hash, the
  # key of its run directory, stays as it was.

  c.data = ml_collections.ConfigDict()
  c.data.corpus = "stdlib"  # "stdlib" or comma-separated local files, directories, globs
  c.data.jsonl_field = "text"  # field (column) holding the text in .jsonl(.gz) / .parquet files
  c.data.max_files = 0  # > 0: use that many files, evenly spaced (quick runs)
  c.data.heldout_every = DEFAULT_HELDOUT_EVERY  # every n-th file (or document) is held out
  c.data.cache_dir = ""  # tokenizer/token cache; empty: $CIRCUITS_REPRO_CACHE or ~/.cache
  c.data.tokenizer_sample_bytes = DEFAULT_SAMPLE_BYTES  # tokenizer trains on at most this
  c.data.shard_tokens = DEFAULT_SHARD_TOKENS  # tokens per store shard (bounds prepare's memory)
  c.data.max_epochs = 20.0  # training refuses to pass over its corpus more often than this

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0  # init and data order; batch i depends only on (seed, i)
  c.train.steps = 2000  # optimiser steps
  c.train.batch_size = 16  # sequences per step (split over all devices)
  c.train.micro_batch_size = 0  # sequences per gradient-accumulation slice per device; 0: auto
  c.train.compute_dtype = "auto"  # "float32", "bfloat16"; auto: per backend and CPU (logged)
  c.train.loss_block_elements = 0  # logits per cross-entropy chunk; 0: auto (per platform)
  c.train.attention = "auto"  # "explicit", "blocked", "xla", "cudnn"; auto: logged
  c.train.lr = 1e-3  # peak learning rate
  c.train.warmup_steps = 100  # linear warmup from 0
  c.train.decay_fraction = 1.0  # cosine decay over this last fraction of steps; constant before
  c.train.final_lr_fraction = 0.0  # learning rate at the end, as a fraction of the peak
  c.train.weight_decay = 0.01  # AdamW decoupled weight decay
  c.train.adam_b1 = 0.9
  c.train.adam_b2 = 0.99
  c.train.grad_clip = 1.0  # global gradient-norm clip
  c.train.log_every = 50  # steps between progress lines / metrics records
  c.train.eval_every = 250  # steps between held-out loss and head-score records
  c.train.eval_windows = 16  # held-out windows per evaluation
  c.train.checkpoint_every = 500  # steps between resumable checkpoints
  c.train.keep_checkpoints = 2  # resumable checkpoints kept (the snapshots are kept apart)
  c.train.n_snapshots = 24  # log-spaced weight snapshots for training-dynamics figures
  return c


def preset(n_layers: int, variant: str, **overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The shared presets; ``overrides`` maps section name → {field: value} for the chosen variant."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown config variant {variant!r}; choose one of {VARIANTS}")
  c = base_config(n_layers)
  if variant == "test":
    c.model.update(n_heads=2, d_head=8, d_model=32, d_vocab=300, n_ctx=32)
    c.data.max_files = 12
    c.data.heldout_every = 4
    c.train.update(steps=30, batch_size=8, lr=1e-2, warmup_steps=5, log_every=10, eval_every=15,
                   eval_windows=4, checkpoint_every=10, n_snapshots=6)
  elif variant == "paper":
    # FW's sizes: 12 heads × 64 (d_model 768), context 2048, a ~50k BPE vocabulary.  IH's small
    # models read 8192 tokens; we keep FW's 2048, which the figures' explicit [T, T] patterns
    # can afford.  IH trains them on ~10B tokens and sees induction heads form after ~1-3B, so:
    # 20,000 steps × 256 sequences × 2048 = 2¹⁹ tokens a step, 10.5B tokens in all.  The papers
    # give no optimiser; we take GPT-3 Small's (the same width and batch): peak 6e-4 after 375M
    # tokens of warmup (700 steps), cosine to 10%, weight decay 0.1.  64 log-spaced snapshots
    # (17% apart) put about seven inside the 1-3B-token window that `induction_formation` reads.
    # The default stdlib corpus (~10M tokens) is far too small: training refuses to repeat it
    # more than data.max_epochs times, so point data.corpus at ~1B+ tokens of local text.
    c.model.update(n_heads=12, d_head=64, d_model=768, d_vocab=50000, n_ctx=2048,
                   pos_init="sinusoidal")
    c.train.update(steps=20000, batch_size=256, lr=6e-4, warmup_steps=700, decay_fraction=1.0,
                   final_lr_fraction=0.1, weight_decay=0.1, adam_b2=0.95, log_every=50,
                   eval_every=500, checkpoint_every=500, n_snapshots=64)
  for section, fields in overrides.items():
    c[section].update(fields)
  c.lock()
  return c


def with_model_fields(c: ml_collections.ConfigDict, name: str, **fields
                      ) -> ml_collections.ConfigDict:
  """``c`` renamed ``name`` (its own run directories and labels) with optional model fields
  (``OPTIONAL_MODEL_FIELDS``) added, locked again."""
  unknown = set(fields) - set(OPTIONAL_MODEL_FIELDS)
  if unknown:
    raise ValueError(f"unknown optional model fields {sorted(unknown)}; expected some of "
                     f"{sorted(OPTIONAL_MODEL_FIELDS)}")
  c.unlock()
  c.name = name
  for field, value in fields.items():
    c.model[field] = value
  c.lock()
  return c


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every value; raises ValueError naming the first bad field."""
  ModelConfig.from_any(c)  # architecture checks
  m, d, t = c.model, c.data, c.train

  def need(ok, field, value, what):
    if not ok:
      raise ValueError(f"config field {field} = {value!r}: {what}")

  need(m.pos in POSITION_MODES, "model.pos", m.pos, f"must be one of {POSITION_MODES}")
  need(m.norm in NORM_MODES, "model.norm", m.norm, f"must be one of {NORM_MODES}")
  need(m.pos_init in POSITION_INITS, "model.pos_init", m.pos_init,
       f"must be one of {POSITION_INITS}")
  need(m.init_std > 0, "model.init_std", m.init_std, "must be > 0")
  if "smear_keys" in m:
    need(isinstance(m.smear_keys, bool), "model.smear_keys", m.smear_keys, "must be True or False")
  need(m.d_vocab >= 258, "model.d_vocab", m.d_vocab, "byte-level BPE needs at least 258")
  need(isinstance(d.corpus, str) and d.corpus.strip(), "data.corpus", d.corpus,
       "must name 'stdlib' or local files")
  need(d.max_files >= 0, "data.max_files", d.max_files, "must be >= 0")
  need(d.heldout_every >= 2, "data.heldout_every", d.heldout_every, "must be >= 2")
  need(d.tokenizer_sample_bytes >= 1 << 20, "data.tokenizer_sample_bytes",
       d.tokenizer_sample_bytes, "must be >= 1 MiB (1048576)")
  need(d.shard_tokens >= 1 << 16, "data.shard_tokens", d.shard_tokens, "must be >= 65536")
  need(d.max_epochs > 0, "data.max_epochs", d.max_epochs, "must be > 0")
  for field in ("steps", "batch_size", "log_every", "eval_every", "eval_windows",
                "checkpoint_every", "keep_checkpoints"):
    need(t[field] >= 1, f"train.{field}", t[field], "must be >= 1")
  need(t.micro_batch_size >= 0, "train.micro_batch_size", t.micro_batch_size, "must be >= 0")
  need(t.compute_dtype in ("auto", "float32", "bfloat16"), "train.compute_dtype",
       t.compute_dtype, "must be 'auto', 'float32' or 'bfloat16'")
  need(t.attention in ("auto", "explicit", "blocked", "xla", "cudnn"), "train.attention",
       t.attention, "must be 'auto', 'explicit', 'blocked', 'xla' or 'cudnn'")
  need(t.loss_block_elements >= 0, "train.loss_block_elements", t.loss_block_elements,
       "must be >= 0")
  need(t.lr > 0, "train.lr", t.lr, "must be > 0")
  need(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")
  need(0 < t.decay_fraction <= 1, "train.decay_fraction", t.decay_fraction, "must be in (0, 1]")
  need(0 <= t.final_lr_fraction <= 1, "train.final_lr_fraction", t.final_lr_fraction,
       "must be in [0, 1]")
  need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
  need(t.grad_clip > 0, "train.grad_clip", t.grad_clip, "must be > 0")
  need(t.n_snapshots >= 0, "train.n_snapshots", t.n_snapshots, "must be >= 0")
  return c


def check_corpus_size(c: ml_collections.ConfigDict, train_tokens: int, bound: bool = False) -> None:
  """Raises ValueError when the planned training would pass over its corpus (``train_tokens``
  long; with ``bound``, at most that long) more than ``data.max_epochs`` times: a paper-scale
  run on a small corpus memorises it."""
  planned = c.train.steps * c.train.batch_size * c.model.n_ctx
  epochs = planned / max(train_tokens, 1)
  if epochs > c.data.max_epochs:
    size = (f"at most {train_tokens:,} training tokens (one per byte of its text)" if bound
            else f"{train_tokens:,} training tokens")
    raise ValueError(
        f"config field data.corpus = {c.data.corpus!r}: {size}, but "
        f"{c.train.steps:,} steps × {c.train.batch_size} × {c.model.n_ctx} plan {planned:,} "
        f"({'at least ' if bound else ''}{epochs:,.0f} passes over it; data.max_epochs = "
        f"{c.data.max_epochs:g}). Point --config.data.corpus at a larger local corpus (files, "
        "directories, globs, .jsonl), train fewer steps, or raise --config.data.max_epochs to "
        "accept the repetition")


COMPRESSED_SUFFIXES = (".gz", ".parquet")


def check_corpus_bound(c: ml_collections.ConfigDict, corpus) -> None:
  """``check_corpus_size`` before any tokenizing: a byte-level tokenizer makes at most one token
  per byte, so uncompressed training files bound the tokens from above.  Compressed files give
  no bound; their corpus waits for the exact check after tokenizing."""
  files = corpus.files("train")
  if not any(str(f).endswith(COMPRESSED_SUFFIXES) for f in files):
    check_corpus_size(c, corpus.total_bytes("train"), bound=True)


def from_dict(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Rebuilds a config saved with a checkpoint; unknown fields are an error naming them."""
  c = base_config(int(d.get("model", {}).get("n_layers", 0)))
  unknown = []
  for section, value in d.items():
    if section not in c:
      unknown.append(section)
    elif isinstance(value, Mapping):
      for field, v in value.items():
        if section == "model" and field in OPTIONAL_MODEL_FIELDS and field not in c.model:
          c.model[field] = v
        elif field not in c[section]:
          unknown.append(f"{section}.{field}")
        else:
          c[section][field] = v
    else:
      c[section] = value
  if unknown:
    raise ValueError(f"unknown config fields {unknown}")
  c.lock()
  return validate(c)


def project_module(package: str, name: str):
  """``reproduce.<package>.<name>`` for ``package`` "configs" or "experiments".

  An installed package holds them under the ``reproduce`` namespace (setup.cfg maps the folders
  there, so nothing generic lands at the top level of site-packages); in a clone the folder beside
  ``reproduce/`` is registered under that name.  Raises ModuleNotFoundError for an unknown name.
  """
  full = f"reproduce.{package}"
  if full not in sys.modules:
    try:
      importlib.import_module(full)
    except ModuleNotFoundError as e:
      folder = Path(__file__).resolve().parent.parent / package
      if e.name != full or not (folder / "__init__.py").is_file():
        raise
      spec = importlib.util.spec_from_file_location(full, folder / "__init__.py",
                                                    submodule_search_locations=[str(folder)])
      module = importlib.util.module_from_spec(spec)
      sys.modules[full] = module
      spec.loader.exec_module(module)
  if not name.isidentifier():
    raise ModuleNotFoundError(f"no module {full}.{name}", name=f"{full}.{name}")
  return importlib.import_module(f"{full}.{name}")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``"attn2l"``, ``"attn2l:cpu"``, ``"configs/attn2l.py:test"`` → the validated config.

  A path to an existing ``.py`` file loads that file (a user's own config); otherwise the name
  picks one of the project's configs, from a clone or an installed package alike.
  """
  path, _, variant = spec.partition(":")
  module = Path(path).name.removesuffix(".py")
  if path.endswith(".py") and Path(path).is_file():
    file_spec = importlib.util.spec_from_file_location(f"_config_file_{module}", path)
    mod = importlib.util.module_from_spec(file_spec)
    try:
      file_spec.loader.exec_module(mod)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"config file {path} failed to load: {type(e).__name__}: {e}") from None
  else:
    try:
      mod = project_module("configs", module)
    except ModuleNotFoundError as e:
      if e.name not in (f"reproduce.configs.{module}", "reproduce.configs"):
        raise
      raise ValueError(f"no config named {module!r} (the project's configs/ folder has "
                       f"{', '.join(config_names())}; or give a path to a .py file)") from None
  if not hasattr(mod, "get_config"):
    raise ValueError(f"config {path} defines no get_config(variant)")
  return validate(mod.get_config(variant or "cpu"))


def config_names():
  folder = Path(project_module("configs", "attn0l").__file__).parent
  return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def check_override(c: ml_collections.ConfigDict, name: str) -> None:
  """Raises ValueError when ``--config.<name>`` names no field of ``c``, naming the closest one."""
  node, parts = c, name.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f' Did you mean "{close[0]}"?' if close else ""
      raise ValueError(f"--config.{name}: the config has no field "
                       f"{'.'.join(parts[:depth + 1])!r}.{hint}")
    node = node[part]


class ConfigFlagError(Exception):
  """A ``--config`` value or override that cannot be used.  Not a ValueError, which absl would
  reword into ``flag --config=…: …``; ``parse_flags`` prints it as it is."""


def _override_names(argv: Sequence[str]) -> List[str]:
  """The fields of ``argv``'s ``--config.a.b=v`` overrides, found as ml_collections finds them."""
  return [arg.split("=", 1)[0].split(".", 1)[1] for arg in argv
          if re.match(r"-{1,2}(no)?config\.", arg)]


class _ConfigSpecParser(flags.ArgumentParser):
  """``--config``'s value through ``load_config`` (a config file or a project config's name, with
  an optional ``:variant``), locked, after checking that every override on the command line
  names a field; ml_collections then applies the overrides, each parsed as its field's type."""

  def flag_type(self):
    return "config object"

  def parse(self, argument):
    try:
      config = load_config(argument)
      config.lock()
      argv = flags.FLAGS.read_flags_from_files(sys.argv, force_gnu=False)  # as ml_collections
      for name in _override_names(argv):
        check_override(config, name)
    except ValueError as e:
      raise ConfigFlagError(str(e)) from None
    return config


def define_config_flag(help_string: str = "config file and variant, e.g. configs/attn2l.py:cpu "
                       "or attn2l:cpu; --config.section.field=value overrides one field"):
  """Defines ``--config`` (ml_collections ``config_flags``, parsed by ``load_config``) and its
  ``--config.section.field=value`` overrides, for a CLI run with
  ``app.run(main, flags_parser=parse_flags)``.  Returns the flag's holder."""
  holder = config_flags.DEFINE_config_file("config", None, help_string, lock_config=True)
  flags.FLAGS["config"].parser = _ConfigSpecParser()
  return holder


def parse_flags(argv: Sequence[str]) -> List[str]:
  """``absl.app.run``'s ``flags_parser`` for every CLI: parses ``argv`` into ``flags.FLAGS`` and
  validates the config (with its overrides) if ``--config`` was defined and given.  A bad flag, an
  unknown config field or a bad value is one ``error: …`` line on stderr and exit code 2."""
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS.config is not None:
      validate(flags.FLAGS.config)
  except (flags.Error, ConfigFlagError, ValueError) as e:
    message = " ".join(str(e).removeprefix("flag ").split("\n"))
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
  return rest
