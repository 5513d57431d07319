"""What every figure module shares: the models it analyses, claims, output files and plotting.

Every module in ``experiments/`` that defines ``DESCRIPTION`` (one line) and
``run(config, models, outdir) -> list of claims`` is a figure (``reproduce.figure`` finds them;
an optional integer ``ORDER`` places it in the batch job and index.html, lowest first), with its
config in ``configs/<name>.py``.  ``models`` maps a label to a ``Model``: the trained models its
config names (trained once into a shared cache and reused), or the one checkpoint given with
``--checkpoint``.  Each claim is made with ``claim``; its id follows ``claim_id``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

import jax
import matplotlib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.transforms import Bbox

from reproduce import data
from reproduce.config import load_config
from reproduce.core import scores
from reproduce.core.loading import TrainingSnapshots, load_with_meta, training_snapshots
from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights, init_weights
from reproduce.corpus import DEFAULT_HELDOUT_EVERY, resolve_corpus
from reproduce.tokenizer import TokenizedCorpus, prepare_tokens
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
    return data.eval_windows(self.tokens.heldout, n, self.cfg.n_ctx, self.tokens.bos_id)


CLAIM_KINDS = ("paper", "control")


def plain(v):
  """``v`` with NumPy scalars and arrays turned into Python numbers and lists (for JSON)."""
  if isinstance(v, (np.floating, np.integer, np.bool_)):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  if isinstance(v, dict):
    return {k: plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [plain(x) for x in v]
  return v


def claim_id(figure: str, what: str, model: Optional[str] = None) -> str:
  """A claim's id: ``<figure>.<what>`` for a claim about a figure's models together,
  ``<figure>.<what>.<model label>`` for a claim about one model (also when the figure has only
  that model).  ``figure`` and ``what`` hold no dot; the label is everything after the second."""
  for part, text in (("figure", figure), ("what", what)):
    if not text or "." in text:
      raise ValueError(f"claim id: {part} must be non-empty and hold no '.', not {text!r}")
  if model is not None and not model:
    raise ValueError("claim id: the model label must be non-empty (or None for every model)")
  return f"{figure}.{what}" + ("" if model is None else f".{model}")


def claim(*, figure: str, what: str, model: Optional[str], statement: str, source: str,
          criterion: str, measured: str, value, holds: bool, kind: str = "paper",
          paper_says: Optional[str] = None) -> dict:
  """One row of claims.json.

  Args:
    figure: the figure making the claim (its module's name).
    what: what is claimed, a short identifier unique within the figure (e.g.
      ``copying_majority``).
    model: the label of the one model the claim is about, or None for a claim about the
      figure's models together; the id is ``claim_id(figure, what, model)``, e.g.
      ``eigen_hist.copying_majority.attn1l``.
    statement: what we test, in our words, about the model(s) and layer(s) measured (the
      paper's own statement is ``paper_says``).
    source: where the paper says it ("FW fig 16", "IH §3"); for a control, what it checks.
    criterion: the test in words and as computed, with its threshold values.
    measured: what we measured, in words with the numbers.
    value: the numbers behind ``measured`` (JSON-able after ``plain``).
    holds: whether the criterion holds.
    kind: "paper" for a statement of the papers, "control" for a sanity baseline or a check of
      the method (no statement of the papers behind it).
    paper_says: for a paper claim, the statement of FW or IH it operationalises, paraphrased in
      our words with its section, the paper's own key words in quotation marks where they decide
      the reading; the criterion follows from it.  Required for a paper claim (a claim no
      statement of the papers is behind is a control).
  """
  id_ = claim_id(figure, what, model)
  if kind not in CLAIM_KINDS:
    raise ValueError(f"claim {id_!r}: kind must be one of {CLAIM_KINDS}, not {kind!r}")
  if not source or not criterion:
    raise ValueError(f"claim {id_!r}: source and criterion are required")
  if kind == "paper" and not paper_says:
    raise ValueError(f"claim {id_!r}: a paper claim needs paper_says (what the paper says)")
  if kind == "control" and paper_says:
    raise ValueError(f"claim {id_!r}: a control has no paper_says (a claim the papers state is "
                     "kind='paper')")
  record = {"paper_says": paper_says} if kind == "paper" else {}
  return {"id": id_, "kind": kind, **record, "statement": statement, "source": source,
          "criterion": criterion, "measured": measured, "value": plain(value),
          "holds": bool(holds)}


def config_hash(config) -> str:
  return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


def model_run(name: str, preset: str, models_dir: Path, cache_dir: Optional[str] = None,
              corpus: Optional[str] = None, seed: Optional[int] = None,
              compute_dtype: Optional[str] = None):
  """(config, work directory) of the model ``configs/<name>.py:<preset>`` in ``models_dir``:
  ``<name>-<preset>-<hash of the config>``; ``corpus``, ``seed`` and ``compute_dtype`` replace
  the config's ``data.corpus``, ``train.seed`` and ``train.compute_dtype`` (a forced dtype
  trains into its own directory: its weights differ)."""
  config = load_config(f"{name}:{preset}")
  config.unlock()
  if cache_dir:
    config.data.cache_dir = cache_dir
  if corpus:
    config.data.corpus = corpus
  if seed is not None:
    config.train.seed = int(seed)
  if compute_dtype:
    config.train.compute_dtype = compute_dtype
  config.lock()
  return config, Path(models_dir) / f"{name}-{preset}-{config_hash(config)}"


def trained_model(name: str, preset: str, models_dir: Path, cache_dir: Optional[str] = None,
                  log: Callable[[str], None] = print, seed: Optional[int] = None,
                  corpus: Optional[str] = None, compute_dtype: Optional[str] = None) -> Model:
  """The model ``configs/<name>.py:<preset>``, trained into ``models_dir`` unless already there.

  The run directory is keyed by the config's hash, so a changed config trains a new model and a
  finished one is reused as is (an interrupted one resumes).  ``seed`` overrides the config's
  ``train.seed`` (init and data order); None keeps the preset's.  ``compute_dtype`` as in
  ``model_run``.
  """
  config, workdir = model_run(name, preset, models_dir, cache_dir, corpus, seed, compute_dtype)
  result = train(config, workdir, log=log)
  return model_from_run(name, workdir, tokens=result.tokens)


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


class OutputDir:
  """A figure's output folder, written in a private temporary folder and swapped in at the end,
  so a failed run leaves the previous outputs untouched."""

  def __init__(self, final: Path):
    self.final = Path(final)
    self.final.parent.mkdir(parents=True, exist_ok=True)
    self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}-", dir=self.final.parent))

  def commit(self) -> Path:
    old = None
    if self.final.exists():
      old = self.final.with_name(f".{self.final.name}-old-{os.getpid()}")
      self.final.rename(old)
    self.path.rename(self.final)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
    return self.final

  def discard(self) -> None:
    shutil.rmtree(self.path, ignore_errors=True)


def write_json(path: Path, obj) -> None:
  Path(path).write_text(json.dumps(obj, indent=1, default=lambda o: np.asarray(o).tolist()))


# ----------------------------------------------------------------------------------------------
# Plotting


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
  matplotlib.use("Agg")
  plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "font.size": 9,
                       "axes.titlesize": 10, "axes.spines.top": False,
                       "axes.spines.right": False})
  return plt


def save_figure(fig, outdir: Path, name: str) -> None:
  """Writes ``name.png`` and ``name.svg``."""
  fig.savefig(Path(outdir) / f"{name}.png", bbox_inches="tight")
  fig.savefig(Path(outdir) / f"{name}.svg", bbox_inches="tight")
  pyplot().close(fig)


def show_token(text: str, width: int = 10) -> str:
  """A token as it reads in every figure: a space as ·, a newline as ↵, a tab as →, a run of
  ≥ 4 spaces as its length (``"\\n" + 20 spaces`` → ``↵+20sp``) so that indents of different depth
  stay apart; control bytes as ¤; cut to ``width`` with … (the counted run is never cut)."""
  parts = []
  for run in re.findall(r" {4,}|[^ ]+| +", text):
    if run.startswith(" ") and len(run) >= 4:
      parts.append(("+" if parts else "") + f"{len(run)}sp")
    else:
      run = run.replace(" ", "·").replace("\n", "↵").replace("\t", "→")
      parts.append(("+" if parts and parts[-1].endswith("sp") else "")
                   + "".join(ch if ch.isprintable() else "¤" for ch in run))
  shown = "".join(parts)
  if len(shown) <= width:
    return shown
  if parts[-1].endswith("sp"):  # keep the indent's count whole, cut the text before it
    tail = parts[-1]
    return shown[: max(width - len(tail) - 1, 0)] + "…" + tail
  return shown[: width - 1] + "…"


def head_labels(L: int, H: int) -> List[str]:
  return [f"L{l}H{h}" for l in range(L) for h in range(H)]


def head_grid(L: int, H: int, max_cols: int = 6):
  """(rows, cols, cell): a grid of every head, each layer's heads on ``ceil(H / cols)`` rows of at
  most ``max_cols`` (12 heads → 2 rows of 6, not one long strip); ``cell(l, h)`` is the (row,
  column) of head ``h`` of layer ``l``."""
  cols = min(H, max_cols)
  per_layer = -(-H // cols)
  return L * per_layer, cols, lambda l, h: (l * per_layer + h // cols, h % cols)


def colorbar(fig, image, ax, label: str, **kw):
  """A colour bar with its quantity named (every figure's colour bars have a label)."""
  bar = fig.colorbar(image, ax=ax, **kw)
  bar.set_label(label, fontsize=8)
  bar.ax.tick_params(labelsize=7)
  return bar


def place_labels(ax, x, y, texts, fontsize: float = 7, radii=(5, 10, 17, 26, 38, 52),
                 point_radius=3.5, avoid=(), **kw):
  """Labels the points (x[i], y[i]) with texts[i] so that no two labels overlap and no label
  covers a point (a disc of ``point_radius`` points, one number or one per point): each label,
  in order, takes the first offset (rings of growing ``radii``, in points, eight directions
  each) where its box meets no label placed before it, no point, none of the display-space
  boxes ``avoid`` (a legend's window extent) and nothing outside the axes; with none free, the
  offset that overlaps least.  A label set away from its point gets a thin leader line.  Call it
  once the axes' limits and the figure's layout are final (offsets are in points; a later change
  of scale moves points, not labels).  Returns the annotations; ``kw`` goes to each (colour,
  weight)."""
  fig = ax.figure
  renderer = fig.canvas.get_renderer()
  at = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
  px = fig.dpi / 72  # pixels per point
  dots = np.broadcast_to(np.asarray(point_radius, float), (len(at),)) * px
  points = [Bbox.from_extents(u - d, v - d, u + d, v + d) for (u, v), d in zip(at, dots)]
  frame = ax.get_window_extent(renderer)
  directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]

  def overlap(box):
    def area(a, b):
      w = min(a.x1, b.x1) - max(a.x0, b.x0)
      h = min(a.y1, b.y1) - max(a.y0, b.y0)
      return w * h if w > 0 and h > 0 else 0.0
    inside = area(box, frame)
    return (box.width * box.height - inside) + sum(area(box, b) for b in placed + points)

  def annotate(i, radius, dx, dy, leader=None):
    norm = np.hypot(dx, dy)
    return ax.annotate(texts[i], (x[i], y[i]), xytext=(radius * dx / norm, radius * dy / norm),
                       textcoords="offset points", fontsize=fontsize, arrowprops=leader,
                       ha={1: "left", -1: "right", 0: "center"}[dx],
                       va={1: "bottom", -1: "top", 0: "center"}[dy], **kw)

  placed, out = list(avoid), []
  for i in range(len(texts)):
    best = None
    for radius in radii:
      for dx, dy in directions:
        trial = annotate(i, radius, dx, dy)
        box = trial.get_window_extent(renderer)
        trial.remove()
        cost = overlap(box)
        if best is None or cost < best[0]:
          best = (cost, radius, dx, dy, box)
        if cost == 0:
          break
      if best[0] == 0:
        break
    _, radius, dx, dy, box = best
    leader = (dict(arrowstyle="-", lw=0.5, color="#999", shrinkA=0, shrinkB=2)
              if radius > radii[0] else None)
    out.append(annotate(i, radius, dx, dy, leader))
    placed.append(box)
  return out


def symlog(x, scale: float = 1.0):
  """sign(x)·log10(1 + |x|/scale): keeps sign, compresses magnitudes that span orders."""
  x = np.asarray(x)
  return np.sign(x) * np.log10(1 + np.abs(x) / scale)


# ----------------------------------------------------------------------------------------------
# Head roles


@dataclasses.dataclass
class HeadRoles:
  """Previous-token scores (held-out text, or the prefix-matching probe without a tokenizer) and
  IH's prefix-matching scores (``scores.prefix_matching_score``, the one induction criterion of
  every figure), [L, H]; ``probe`` says what they were measured on."""

  previous_token: np.ndarray
  induction: np.ndarray  # prefix-matching scores: a head at ≥ threshold is an induction head
  threshold: float
  probe: str = ""

  def previous_token_head(self, before_layer: Optional[int] = None):
    """(layer, head) of the strongest previous-token head in the layers before ``before_layer``
    (default: every layer but the last, the ones a later head can read)."""
    L = self.previous_token.shape[0]
    limit = max(1, L - 1 if before_layer is None else before_layer)
    l, h = np.unravel_index(np.argmax(self.previous_token[:limit]), self.previous_token[:limit].shape)
    return int(l), int(h)

  def previous_token_heads(self):
    """Every (layer, head) with previous-token score ≥ threshold, in any layer."""
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(self.previous_token >= self.threshold))]

  def induction_heads(self):
    """Every (layer, head) with prefix-matching score ≥ threshold, in any layer."""
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(self.induction >= self.threshold))]

  def criterion(self) -> str:
    return f"prefix-matching score ≥ {self.threshold:g} (IH's probe, scores.prefix_matching_score)"

  def label(self, layer: int, head: int) -> str:
    tags = []
    if self.previous_token[layer, head] >= self.threshold:
      tags.append("prev")
    if self.induction[layer, head] >= self.threshold:
      tags.append("induction")
    return f"L{layer}H{head}" + (f" ({', '.join(tags)})" if tags else "")


def head_roles(model: Model, threshold: float = 0.3, text_windows: int = 16) -> HeadRoles:
  """Every head's previous-token score on ``text_windows`` held-out windows and its prefix-matching
  score on IH's probe (``scores.prefix_matching_score`` with its defaults: the same number in every
  figure).  Without a tokenizer the previous-token score comes from that probe too, its tokens
  uniform over the vocabulary but BOS (``Model.sampling_pool``, ``Model.bos_id``)."""
  pool = model.sampling_pool()
  probe, length = scores.prefix_probe(model.cfg.n_ctx, pool, model.bos_id)
  repeats = (f"BOS + {length} random tokens × {scores.PREFIX_REPEATS} "
             f"({scores.PREFIX_SAMPLES} samples)")
  prefix = np.asarray(scores.prefix_matching_score(model.cfg, model.weights, pool, model.bos_id))
  if model.tokens is not None:
    text = model.heldout_windows(text_windows)[0]
    described = (f"previous-token score on {text_windows} held-out text windows; prefix-matching "
                 f"score on {repeats}, tokens from the corpus's middle frequencies")
  else:
    text = probe
    described = (f"no tokenizer: previous-token and prefix-matching scores both on {repeats}, "
                 f"tokens uniform over the vocabulary but BOS; BOS = token {model.bos_id} "
                 f"({model.bos_source})")
  previous = scores.previous_token_on(model.cfg, model.weights, text)
  return HeadRoles(previous, prefix, threshold, described)
