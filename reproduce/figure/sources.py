"""Where a figure's models come from, and the ``Model`` a figure analyses.

A ``ModelSource`` says it once: trained from the model configs (preset, training seed, product
dtype, corpus) into a shared models folder, or one checkpoint given by the user.  Figures get
``{label: Model}``: the weights, the model's tokens under its own tokenizer, and its training
snapshots when they are known.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import jax
import numpy as np

from reproduce.cli import usage_error
from reproduce.config import load_config
from reproduce.core import scores
from reproduce.core.loading import TrainingSnapshots, load_with_meta, training_snapshots
from reproduce.core.model import ModelConfig
from reproduce.core.tl_config import parse_cli as parse_tl_config
from reproduce.core.weights import Weights, init_weights
from reproduce.data import batches
from reproduce.data.corpus import DEFAULT_HELDOUT_EVERY, resolve_corpus
from reproduce.data.store import TokenizedCorpus, prepare_tokens
from reproduce.train import TRAINING_CODE_VERSION
from reproduce.train.loop import train


class FigureError(ValueError):
  """A figure that cannot be made from the models it was given."""


NO_TOKENIZER_BOS = 0  # BOS of random-token probes without a tokenizer or a config naming one


@dataclasses.dataclass
class Model:
  """A model to analyse: weights plus what is known about how it was trained."""

  label: str
  cfg: ModelConfig
  weights: Weights
  meta: dict
  workdir: Optional[Path] = None  # the training run (snapshots, metrics) when known
  tokens: Optional[TokenizedCorpus] = None  # the corpus under this model's tokenizer
  snapshots: Optional[TrainingSnapshots] = None  # its training run's snapshots, when known
  # Passes that several figures share (``shared``), kept for as long as the model is loaded.
  memo: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  def shared(self, key, compute: Callable[[], object]):
    """``compute()``, run once per model and ``key`` (a hashable naming the pass and every
    setting it depends on): figures made in one batch job share their passes over the snapshots.
    """
    if key not in self.memo:
      self.memo[key] = compute()
    return self.memo[key]

  @property
  def bos_id(self) -> int:
    """BOS: the tokenizer's; without one, the config's ``bos_token_id``, else
    ``NO_TOKENIZER_BOS`` (``bos_source`` says which)."""
    if self.tokens is not None:
      return self.tokens.bos_id
    bos = int(self.meta.get("bos_token_id", NO_TOKENIZER_BOS))
    if not 0 <= bos < self.cfg.d_vocab:
      raise FigureError(f"{self.label}: its config's bos_token_id {bos} is outside the "
                        f"vocabulary (d_vocab {self.cfg.d_vocab})")
    return bos

  @property
  def bos_source(self) -> str:
    if self.tokens is not None:
      return "the tokenizer's BOS"
    if "bos_token_id" in self.meta:
      return "bos_token_id of its config"
    return (f"id {NO_TOKENIZER_BOS} assumed: no tokenizer, and its config names no "
            "bos_token_id")

  def need_layers(self, n: int, figure: str) -> None:
    if self.cfg.n_layers < n:
      raise FigureError(f"figure {figure} needs a model with at least {n} layer(s); "
                        f"{self.label} has {self.cfg.n_layers}")

  def token_strings(self, ids) -> List[str]:
    """Readable labels for token ids (ids in brackets when there is no tokenizer)."""
    if self.tokens is None:
      return [f"[{int(i)}]" for i in ids]
    tok = self.tokens.tokenizer()
    return [tok.decode([int(i)]) for i in ids]

  def token_id(self, text: str) -> Optional[int]:
    if self.tokens is None:
      return None
    ids = self.tokens.tokenizer().encode(text).ids
    return ids[0] if len(ids) == 1 else None

  def sampling_pool(self) -> np.ndarray:
    """Token ids for random-token probes: the corpus's middle frequencies (IH); without a
    tokenizer, every id of the vocabulary but BOS (uniform)."""
    if self.tokens is None:
      ids = np.arange(self.cfg.d_vocab)
      return ids[ids != self.bos_id]
    return scores.frequency_band(self.tokens.train, self.cfg.d_vocab,
                                 exclude=(self.tokens.bos_id, self.tokens.eot_id),
                                 counts=self.tokens.counts)

  def heldout_windows(self, n: int):
    """``n`` fixed held-out windows (inputs, targets) of the model's context length."""
    return batches.eval_windows(self.tokens.heldout, n, self.cfg.n_ctx, self.tokens.bos_id)


def config_hash(config) -> str:
  """The key of a trained model's run directory: a hash of its full config and, once a change to
  the training code has altered trained weights, of ``TRAINING_CODE_VERSION`` (version 1, the
  first, leaves the hash as it was: runs trained before the version existed are reused)."""
  keyed = config.to_dict()
  if TRAINING_CODE_VERSION != 1:
    keyed = {"config": keyed, "training_code_version": TRAINING_CODE_VERSION}
  return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """Where the figures' models come from.

  Without ``checkpoint``: the model configs a figure names (``configs/<name>.py:<preset>``),
  trained once into ``models_dir`` and reused; ``corpus``, ``seed`` and ``compute_dtype`` replace
  the configs' ``data.corpus``, ``train.seed`` and ``train.compute_dtype``.  With ``checkpoint``
  (a work directory, step, weight file or model folder; ``tl_config`` for weights without a
  config): that one model, measured on ``corpus`` (default: the standard library).  ``cache_dir``
  is the token store's cache.
  """

  preset: str = "cpu"
  models_dir: Optional[Path] = None  # default: <the figures' folder>/models
  cache_dir: Optional[str] = None
  corpus: Optional[str] = None
  seed: Optional[int] = None
  compute_dtype: Optional[str] = None
  checkpoint: Optional[str] = None
  tl_config: Optional[dict] = None

  def in_folder(self, workdir) -> "ModelSource":
    """This source with ``models_dir`` defaulting to ``<workdir>/models``."""
    if self.models_dir is not None:
      return self
    return dataclasses.replace(self, models_dir=Path(workdir) / "models")

  def run(self, name: str):
    """(config, work directory) of the model ``configs/<name>.py:<preset>`` in ``models_dir``:
    ``<name>-<preset>-<config_hash>`` of the config with this source's replacements (a forced
    dtype, seed or corpus trains into its own directory: its weights differ).  The folder must be
    set (``in_folder``): no model is trained into wherever the process happens to run."""
    if self.models_dir is None:
      raise ValueError("ModelSource.run needs models_dir: call in_folder(workdir) first")
    config = load_config(f"{name}:{self.preset}")
    config.unlock()
    if self.cache_dir:
      config.data.cache_dir = self.cache_dir
    if self.corpus:
      config.data.corpus = self.corpus
    if self.seed is not None:
      config.train.seed = int(self.seed)
    if self.compute_dtype:
      config.train.compute_dtype = self.compute_dtype
    config.lock()
    return config, Path(self.models_dir) / f"{name}-{self.preset}-{config_hash(config)}"

  def key(self, name: str) -> str:
    """The key under which a job keeps the model ``name`` loaded, shared by its figures."""
    if self.checkpoint:
      return f"checkpoint:{self.checkpoint}"
    return ":".join([name, self.preset] + ([] if self.seed is None else [f"seed{self.seed}"])
                    + ([self.compute_dtype] if self.compute_dtype else []))

  def models(self, names: Sequence[str], loaded: Dict[str, "Model"],
             log: Callable[[str], None] = print) -> Dict[str, "Model"]:
    """{label: Model}: the checkpoint, or each config of ``names`` trained unless already
    finished (the run directory is keyed by the config's hash, so a changed config trains a new
    model, a finished one is reused as is and an interrupted one resumes).  Kept in ``loaded``
    under ``key``, so the figures of one job share them.  A figure that names no model (one
    that builds its own) gets none, with or without a checkpoint."""
    if not names:
      return {}
    if self.checkpoint:
      key = self.key("")
      if key not in loaded:
        loaded[key] = model_from_run(Path(self.checkpoint).name or str(self.checkpoint),
                                     self.checkpoint, cache_dir=self.cache_dir, log=log,
                                     corpus=self.corpus, tl_config=self.tl_config)
      return {loaded[key].label: loaded[key]}
    models = {}
    for name in names:
      key = self.key(name)
      if key not in loaded:
        config, workdir = self.run(name)
        result = train(config, workdir, log=log)
        loaded[key] = model_from_run(name, workdir, tokens=result.tokens)
      models[name] = loaded[key]
    return models


def command_source(args, models_dir, **more) -> ModelSource:
  """Where a command's models come from, as its flags say (--preset, --corpus, --checkpoint,
  --tl_config); a bad --tl_config stops here in one line, before any training."""
  try:
    tl_config = (parse_tl_config(args.tl_config, bool(args.checkpoint)) if args.tl_config
                 else None)
  except ValueError as e:
    usage_error(str(e))
  return ModelSource(preset=args.preset, models_dir=Path(models_dir), corpus=args.corpus,
                     checkpoint=args.checkpoint, tl_config=tl_config, **more)


def model_from_run(label: str, path, tokens: Optional[TokenizedCorpus] = None,
                   cache_dir: Optional[str] = None, log=print,
                   corpus: Optional[str] = None, tl_config: Optional[dict] = None) -> Model:
  """A ``Model`` from a work directory, checkpoint step, TransformerLens-format file or model
  folder (``tl_config``: its TransformerLens config, see ``loading.load_with_meta``).

  The corpus measurements use the checkpoint's own tokenizer (the ``tokenizer.json`` of its work
  directory, or beside a weight file; without one, figures that need text say so) on the text
  the user names: ``corpus`` (a corpus spec), else the default corpus, sampled with the
  checkpoint's ``data.max_files`` and ``data.heldout_every``.  Paths stored inside the checkpoint
  (its training corpus, its cache, its tokenizer's cache entry) are shown, never followed, and
  caches go where ``cache_dir`` or the environment says.
  """
  path = Path(path)
  cfg, weights, meta = load_with_meta(path, tl_config)
  workdir = None
  if meta.get("source") == "transformer_lens":
    own_tokenizers = [Path(meta["tokenizer"]["path"])] if "tokenizer" in meta else []
    if not own_tokenizers and meta.get("tokenizer_name"):
      log(f"{label}: its config names the tokenizer {meta['tokenizer_name']!r}; put that "
          "repository's tokenizer.json beside the weights for the figures that read text")
  elif path.is_dir():
    workdir = path if (path / "snapshots").is_dir() else path.parent.parent
    own_tokenizers = [path / "tokenizer.json", path.parent.parent / "tokenizer.json"]
  else:
    own_tokenizers = [path.parent / "tokenizer.json"]
  tokenizer_file = next((f for f in own_tokenizers if f.is_file()), None)
  stored = meta.get("config", {}).get("data", {}) if isinstance(meta.get("config"), dict) else {}
  spec = corpus or "stdlib"
  shown = {k: stored.get(k) for k in ("corpus", "cache_dir") if stored.get(k)}
  if shown and (shown.get("corpus") != spec or "cache_dir" in shown):
    log(f"{label}: the checkpoint was trained with "
        + ", ".join(f"data.{k}={v!r}" for k, v in shown.items())
        + f" (recorded in it, not read); measuring on corpus {spec!r}")
  if tokens is None and tokenizer_file is not None:
    # The checkpoint's sampling settings (numbers, not paths) pick the files and the split.
    text = resolve_corpus(spec, jsonl_field=str(stored.get("jsonl_field", "text")),
                          max_files=int(stored.get("max_files", 0)),
                          heldout_every=int(stored.get("heldout_every", DEFAULT_HELDOUT_EVERY)))
    tokens = prepare_tokens(text, cfg.d_vocab, cache_dir or None, log=log,
                            tokenizer_file=str(tokenizer_file))
  if tokens is None:
    log(f"{label}: no tokenizer.json, so figures that read text will say so; random-token "
        f"probes use token {int(meta.get('bos_token_id', NO_TOKENIZER_BOS))} as BOS")
  run = workdir if workdir is not None else meta.get("folder")
  snapshots = training_snapshots(run, tl_config) if run is not None else None
  if snapshots is not None:
    log(f"{label}: {len(snapshots)} {snapshots.source} in {snapshots.root} "
        f"(training counted in {snapshots.axis})")
  return Model(label=label, cfg=cfg, weights=weights, meta=meta, workdir=workdir, tokens=tokens,
               snapshots=snapshots)


def initial_weights(model: Model):
  """(weights, where from) of ``model`` nearest random init: its earliest training snapshot (a
  run's step 0; a folder's first checkpoint) when it has any, else a fresh init of the same
  shapes (the run's own init is then missing: say so)."""
  if model.snapshots is not None:
    _, weights, _ = model.snapshots.load(0)
    return weights, model.snapshots.describe(0)
  return (init_weights(model.cfg, jax.random.key(0)),
          "a fresh N(0, 0.02²) init: this checkpoint has no training snapshots")


def has_snapshots(model: Model) -> bool:
  """Whether the model's training run is known: a run's snapshots/ or a folder's checkpoints/."""
  return model.snapshots is not None


def require_tokens(model: Model, figure: str) -> None:
  if model.tokens is None:
    raise FigureError(f"figure {figure} measures the model on text, but {model.label} has no "
                      "tokenizer: put the tokenizer.json it was trained with beside the weights")
