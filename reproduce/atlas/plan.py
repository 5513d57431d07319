"""The atlas's work, counted before it starts: FLOPs per part from the model's shape and the
config's probes and windows, and a rough time for this machine (docs/PERFORMANCE.md, "Atlas"
has the count for each public shape beside the measured time).

Counted: the matmuls of every forward pass (Q, K, V, O projections, the causal scores and
mixing, the unembedded rows) and the vocabulary-wide contractions of the circuits; not counted:
softmaxes, host-side NumPy, compiling, plotting (the time estimate adds a fixed share for
those).  Every part but the token tables and the trajectory runs twice, on the trained weights
and on the random init.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np

from reproduce.core import scores


def layer_flops(cfg, tokens: int, queries: int = 0) -> float:
  """One attention layer on one window: K and V at ``tokens`` positions, Q, the scores, the
  mixing and O at ``queries`` of them (all when 0; every query sees half the window on
  average)."""
  width = cfg.n_heads * cfg.d_head
  q = queries or tokens
  seen = tokens / 2 if not queries else tokens
  return 2 * cfg.d_model * width * (2 * tokens + 2 * q) + 2 * 2 * width * q * seen


def unembed_flops(cfg, rows: float) -> float:
  return 2 * cfg.d_model * cfg.d_vocab * rows


def forward_flops(cfg, windows: int, tokens: int, unembedded: int = 0) -> float:
  """``windows`` forward passes of ``tokens`` tokens, ``unembedded`` rows of each unembedded."""
  return windows * (cfg.n_layers * layer_flops(cfg, tokens) + unembed_flops(cfg, unembedded))


def ablation_flops(cfg, windows: int, positions: Sequence[int]) -> float:
  """The shared ablation pass (``scores.ablated_position_losses``) with the model and each
  single head as groups: the unablated layers once (the last at the scored positions only);
  for a group in layer l, the layers above l again (the last again at the scored positions);
  every group's scored rows unembedded."""
  T, P = int(max(positions)) + 1, len(positions)
  L, H = cfg.n_layers, cfg.n_heads
  full, last = layer_flops(cfg, T), layer_flops(cfg, T, P)
  unablated = (L - 1) * full + last
  groups = sum(H * (max(L - 2 - l, 0) * full + (last if l < L - 1 else 0)) for l in range(L))
  return windows * (unablated + groups + (1 + L * H) * unembed_flops(cfg, P))


def probe_length(cfg, length: int, repeats: int, pool: int) -> int:
  """Tokens of a random-token probe: BOS + length × repeats, the length cut to fit n_ctx."""
  return 1 + repeats * min(length, (cfg.n_ctx - 1) // repeats, pool)


def work(cfg, config, has_text: bool, snapshots: int = 0, pool: int = 0) -> Dict[str, float]:
  """FLOPs of each part of the atlas of one model (module docstring); ``pool`` the size of the
  random-token pool (default: the vocabulary)."""
  pool = pool or cfg.d_vocab
  prefix = probe_length(cfg, scores.PREFIX_LENGTH, scores.PREFIX_REPEATS, pool)
  a = config.attention
  stripe = probe_length(cfg, a.length, a.repeats, pool)
  text = cfg.n_ctx if has_text else prefix
  roles = (forward_flops(cfg, scores.PREFIX_SAMPLES, prefix)
           + forward_flops(cfg, config.text_windows if has_text else scores.PREFIX_SAMPLES, text))
  parts = {
      "circuits": 2 * 2 * cfg.d_model ** 2 * cfg.d_vocab,
      "roles": roles,
      "copying and BOS": (forward_flops(cfg, scores.PREFIX_SAMPLES, prefix, prefix) * 2
                          + forward_flops(cfg, config.bos_text_windows if has_text else 0,
                                          cfg.n_ctx)),
      "stripe": 2 * forward_flops(cfg, a.samples, stripe, stripe)
                + (2 * forward_flops(cfg, 1, min(a.text_tokens, cfg.n_ctx)) if has_text else 0),
  }
  if cfg.pos == "shortformer":
    T = min(config.positional_tokens, cfg.n_ctx) if has_text else prefix
    n = config.positional_windows if has_text else scores.PREFIX_SAMPLES
    parts["positional"] = (4 * forward_flops(cfg, n, T)
                           + cfg.n_layers * cfg.n_heads * 2 * T * T * cfg.d_head)
  if has_text:
    parts["ablations"] = ablation_flops(cfg, ablation_windows(cfg, config),
                                        scored_positions(cfg, config)[-1])
  parts = {k: 2 * v for k, v in parts.items()}  # trained and random init
  n = min(config.table_tokens, cfg.d_vocab)
  parts["token tables"] = (cfg.n_layers * cfg.n_heads * (8 * n * cfg.d_model * cfg.d_head
                                                          + 2 * 2 * n * n * cfg.d_head))
  if snapshots:
    parts["trajectory"] = min(snapshots, config.trajectory_snapshots) * roles
  return parts


def scored_positions(cfg, config):
  """(early, late, spread, all): the ICL score's two positions (``scores.icl_positions``), the
  held-out loss's ``config.loss_positions`` evenly spaced ones from 0 to ``late``
  (``scores.spread_positions``; the whole window up to n_ctx 512, the first 500 tokens of a
  longer one, so that the shared pass never runs past ``late``), and their union."""
  early, late = scores.icl_positions(cfg.n_ctx)
  spread = tuple(int(p) for p in scores.spread_positions(late + 1, config.loss_positions))
  return early, late, spread, tuple(int(p) for p in np.union1d([early, late], spread))


def ablation_windows(cfg, config) -> int:
  """How many of the ICL windows the shared ablation pass (which also measures the model's own
  ICL score and held-out loss) runs on: all ``config.icl_windows`` when its counted work fits
  ``config.ablation_budget_tflop``, else the largest half, quarter, … that fits, at least
  ``config.ablation_min_windows``."""
  positions = scored_positions(cfg, config)[-1]
  windows = config.icl_windows
  while (windows > config.ablation_min_windows
         and ablation_flops(cfg, windows, positions) > config.ablation_budget_tflop * 1e12):
    windows = max(config.ablation_min_windows, windows // 2)
  return windows


# The rough time: the counted FLOPs at this fraction of the machine's float32 matmul peak (the
# atlas's products are small and many: about 0.45 on the 2-core AMD EPYC kind, attn-only-2l,
# docs/PERFORMANCE.md, "Atlas"), plus fixed seconds per model (compiling every jitted
# function, loading the corpus) and per head (its two eigenvalue pictures and its page).
RATE_VS_PEAK = 0.45
SECONDS_PER_MODEL = 20.0
SECONDS_PER_HEAD = 0.4


def estimated_seconds(parts: Dict[str, float], n_heads: int, peak_flops: float) -> float:
  return (SECONDS_PER_MODEL + SECONDS_PER_HEAD * n_heads
          + sum(parts.values()) / (RATE_VS_PEAK * peak_flops))


def plan_text(models, config, peak_flops: float) -> str:
  """What the atlas is about to measure, model by model, with its work and a rough time."""
  lines, total = [], 0.0
  heads = sum(m.cfg.n_layers * m.cfg.n_heads for m in models)
  for m in models:
    cfg = m.cfg
    n_snap = len(m.snapshots) if m.snapshots is not None else 0
    parts = work(cfg, config, m.tokens is not None, n_snap,
                 len(m.sampling_pool()) if m.tokens is not None else cfg.d_vocab - 1)
    seconds = estimated_seconds(parts, cfg.n_layers * cfg.n_heads, peak_flops)
    total += seconds
    shape = (f"{cfg.n_layers} × {cfg.n_heads} heads of {cfg.d_head}, d_model {cfg.d_model}, "
             f"vocab {cfg.d_vocab:,}, n_ctx {cfg.n_ctx}, {cfg.pos} positions, norm {cfg.norm}")
    measured = ("held-out text and random-token probes" if m.tokens is not None else
                "random-token probes only (no tokenizer: text measures undefined)")
    trajectory = (f"; trajectory over {min(n_snap, config.trajectory_snapshots)} of {n_snap} "
                  "snapshots" if n_snap else "; no training snapshots (random init: a fresh one)")
    ablate = (f"; ablations on {ablation_windows(cfg, config)} of {config.icl_windows} ICL "
              "windows" if m.tokens is not None else "")
    lines.append(f"  {m.label}: {shape}; {measured}{ablate}{trajectory}")
    lines.append("    work: " + ", ".join(f"{k} {v / 1e12:.2g}" for k, v in parts.items())
                 + f" TFLOP; ~{seconds / 60:.1f} min")
  return (f"atlas plan: {len(models)} model(s), {heads} heads; per head: roles (previous_token, "
          "induction, copying, positional, inactive) with their criteria, OV/QK eigenvalue "
          "positivity, previous-token, prefix-matching, copying and stripe scores, attention on "
          "BOS, composition partners, zero-ablation effects, skip-trigrams and OV mappings, each "
          f"beside its random-init value; estimated {total / 60:.1f} min on this machine "
          f"({os.cpu_count()} cores, {peak_flops / 1e9:.0f} GFLOP/s float32 matmuls)\n"
          + "\n".join(lines))
