"""Side-by-side check against TransformerLens itself (never imported by the package or the tests).

Run with a Python that has torch and transformer-lens, naming the project's Python (one with
jax and flax) and a folder for the models and numbers:

    /path/to/tl-venv/bin/python tools/check_transformer_lens.py --out DIR \
        --ours-python /path/to/project-venv/bin/python

Phase 1 (TransformerLens's Python) builds attention-only HookedTransformers from configs,
randomises every parameter (biases and layer-norm gains/biases included), saves each state dict
as ``model.safetensors`` with ``config.json`` (``cfg.to_dict()``) beside it, and records
TransformerLens's logits and patterns, then its weights and circuit numbers after the
``from_pretrained`` default processing (fold_ln, center_writing_weights, center_unembed,
fold_value_biases, with from_pretrained's rule that shortformer models skip the first three).
Phase 2 (``--compare DIR``, run with the project's Python, which phase 1 starts) loads each
model with ``reproduce.load`` and prints the largest differences.  Exit status 1 if any
difference exceeds its tolerance.

Layer norm with shortformer positions (TransformerLens adds them after ln1 and will not fold
that norm): we fold it anyway, with W_pos read by the raw W_Q, W_K (``Weights.W_Q_pos``,
``W_K_pos``).  The reference for its token path is TransformerLens's default processing of the
same weights loaded as a standard-position model with W_pos = 0 (phase 1 records it with the
prefix ``twin_``); its log-probabilities and patterns are compared with TransformerLens's raw
model, and its positional QK circuit with (W_pos W_Q)(W_pos W_K)ᵀ / sqrt(d_head) from
TransformerLens's raw weights.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MODELS = {
    "attn4l_ln_standard": dict(n_layers=4, normalization_type="LN",
                               positional_embedding_type="standard"),
    "attn3l_shortformer": dict(n_layers=3, normalization_type=None,
                               positional_embedding_type="shortformer"),
    "attn2l_lnpre_standard": dict(n_layers=2, normalization_type="LNPre",
                                  positional_embedding_type="standard"),
    "attn2l_ln_shortformer": dict(n_layers=2, normalization_type="LN",
                                  positional_embedding_type="shortformer"),
}
SIZES = dict(d_model=32, n_heads=4, d_head=8, d_vocab=61, n_ctx=24, attn_only=True, act_fn="relu",
             eps=1e-5, seed=0)
TOLERANCE = 2e-4  # relative to the largest magnitude of the compared quantity


def _tl_phase(out: Path) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  from transformer_lens import (  # pylint: disable=import-outside-toplevel
      HookedTransformer, HookedTransformerConfig)

  torch.manual_seed(0)
  for name, arch in MODELS.items():
    directory = out / name
    directory.mkdir(parents=True, exist_ok=True)
    cfg = HookedTransformerConfig(**SIZES, **arch)
    model = HookedTransformer(cfg)
    with torch.no_grad():
      for key, p in model.named_parameters():
        if key.endswith(".w") and ("ln" in key):
          p.copy_(1 + 0.3 * torch.randn_like(p))
        else:
          p.copy_((0.6 if "W_" in key else 0.3) * torch.randn_like(p))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(cfg.to_dict(), default=str, indent=1))
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx), generator=generator)
    ref = {"tokens": tokens.numpy()}
    with torch.no_grad():
      logits, cache = model.run_with_cache(tokens)
      ref["logits_raw"] = logits.numpy()
      ref["patterns"] = np.stack([cache["pattern", l].numpy() for l in range(cfg.n_layers)])
      shortformer = cfg.positional_embedding_type == "shortformer"
      processed = HookedTransformer(HookedTransformerConfig(**SIZES, **arch))
      processed.load_and_process_state_dict(
          {k: v.clone() for k, v in state.items()}, fold_ln=not shortformer,
          center_writing_weights=not shortformer, center_unembed=not shortformer,
          fold_value_biases=True)
      ref["logits_processed"] = processed(tokens).numpy()
      ref.update(_tl_processed_numbers(processed, ""))
      if shortformer and cfg.normalization_type == "LN":
        ref.update(_tl_standard_twin_numbers(state, arch))
        pos_q, pos_k = model.W_pos @ model.W_Q, model.W_pos @ model.W_K  # [L, H, n_ctx, d_head]
        ref["positional_qk"] = (pos_q @ pos_k.transpose(-1, -2) / cfg.d_head ** 0.5).numpy()
    np.savez(directory / "transformer_lens.npz", **ref)
    print(f"{name}: TransformerLens outputs written to {directory}")


def _tl_processed_numbers(processed, prefix: str) -> dict:
  """A processed HookedTransformer's weights and circuit numbers, keys starting ``prefix``."""
  ref = {prefix + "normalization_processed": str(processed.cfg.normalization_type)}
  for key, value in processed.state_dict().items():
    if not key.endswith(("mask", "IGNORE")):
      ref[prefix + "w/" + key] = value.numpy()
  full_ov = processed.W_E @ processed.OV @ processed.W_U
  full_qk = processed.W_E @ processed.QK @ processed.W_E.T
  ref[prefix + "ov_eigenvalues"] = full_ov.eigenvalues.numpy()
  ref[prefix + "qk_eigenvalues"] = full_qk.eigenvalues.numpy()
  ref[prefix + "ov_eigenvalues_plain"] = processed.OV.eigenvalues.numpy()
  for mode in "QKV":
    ref[f"{prefix}composition_{mode}"] = processed.all_composition_scores(mode).numpy()
  return ref


def _tl_standard_twin_numbers(state, arch) -> dict:
  """TransformerLens's default processing (fold_ln, center_writing_weights, center_unembed,
  fold_value_biases) of ``state`` as a standard-position model with W_pos = 0, prefix twin_."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformer_lens import (  # pylint: disable=import-outside-toplevel
      HookedTransformer, HookedTransformerConfig)
  twin_state = {k: v.clone() for k, v in state.items()}
  twin_state["pos_embed.W_pos"] = torch.zeros_like(twin_state["pos_embed.W_pos"])
  twin = HookedTransformer(HookedTransformerConfig(
      **SIZES, **dict(arch, positional_embedding_type="standard")))
  twin.load_and_process_state_dict(twin_state)  # TransformerLens's defaults: all four steps
  return _tl_processed_numbers(twin, "twin_")


def _sorted_eigs(lam):
  import numpy as np  # pylint: disable=import-outside-toplevel
  lam = np.asarray(lam, np.complex128)
  order = np.lexsort((np.round(lam.imag, 4), np.round(lam.real, 4)), axis=-1)
  return np.take_along_axis(lam, order, -1)


def _rel(a, b) -> float:
  """Largest difference relative to the largest magnitude of ``b``."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() /
               max(np.abs(np.asarray(b)).max(), 1e-30))


def _report(what: str, value: float, limit: float = TOLERANCE) -> int:
  """Prints one comparison; returns 1 if it fails."""
  ok = value <= limit
  print(f"  {what:<38} max relative difference {value:.2e} {'ok' if ok else 'FAIL'}")
  return 0 if ok else 1


def _weights_difference(cfg, w, ref, prefix: str = "", positions: bool = True) -> float:
  """The largest relative difference of any processed weight tensor from TransformerLens's
  (``prefix`` chooses its record; ``positions=False`` leaves W_pos out)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  L, H, dh, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
  zero = {"b_Q": (L, H, dh), "b_K": (L, H, dh), "b_O": (L, D), "b_U": (cfg.d_vocab,)}
  ours = lambda name: np.asarray(getattr(w, name) if getattr(w, name) is not None
                                 else np.zeros(zero[name]))
  pairs = [(ours("W_E"), "embed.W_E"), (ours("W_U"), "unembed.W_U"), (ours("b_U"), "unembed.b_U")]
  if positions:
    pairs.append((ours("W_pos"), "pos_embed.W_pos"))
  pairs += [(ours(name)[l], f"blocks.{l}.attn.{name}") for l in range(L)
            for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_O")]
  return max(_rel(a, ref[prefix + "w/" + key]) for a, key in pairs)


def _compare_circuits(w, ref, prefix: str = "", against: str = "TL") -> int:
  """Eigenvalues, positivity and composition scores against TransformerLens's; failures."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from reproduce.core import circuits  # pylint: disable=import-outside-toplevel
  failures = _report(f"OV eigenvalues (full) vs {against}",
                     _rel(_sorted_eigs(circuits.ov_eigenvalues(w)),
                          _sorted_eigs(ref[prefix + "ov_eigenvalues"])))
  failures += _report(f"QK eigenvalues (full) vs {against}",
                      _rel(_sorted_eigs(circuits.qk_eigenvalues(w)),
                           _sorted_eigs(ref[prefix + "qk_eigenvalues"])))
  failures += _report(f"OV eigenvalues (d_model) vs {against}",
                      _rel(_sorted_eigs(circuits.ov_eigenvalues(w, full=False)),
                           _sorted_eigs(ref[prefix + "ov_eigenvalues_plain"])))
  ours_pos = circuits.positivity(circuits.ov_eigenvalues(w))
  theirs_pos = circuits.positivity(ref[prefix + "ov_eigenvalues"])
  failures += _report(f"OV positivity vs {against} (absolute)",
                      float(np.abs(ours_pos - theirs_pos).max()), limit=1e-4)
  for mode in "QKV":
    failures += _report(f"{mode}-composition scores vs {against}",
                        _rel(circuits.composition_scores(w, mode.lower()),
                             ref[f"{prefix}composition_{mode}"]))
  return failures


def _log_softmax(logits):
  import numpy as np  # pylint: disable=import-outside-toplevel
  a = np.asarray(logits, np.float64)
  top = a.max(-1, keepdims=True)
  return a - top - np.log(np.exp(a - top).sum(-1, keepdims=True))


def _compare_folded_positions_after_norm(cfg, w, tokens, ref) -> int:
  """Our fold of LN + shortformer (positions after ln1) against TransformerLens: the raw model's
  log-probabilities and patterns, the standard-model twin's token path, the raw positional QK."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from reproduce.core import circuits  # pylint: disable=import-outside-toplevel
  import reproduce  # pylint: disable=import-outside-toplevel
  logits, extras = reproduce.forward(cfg, w, tokens, return_patterns=True)
  failures = _report("folded log-probabilities vs TL raw",
                     _rel(_log_softmax(logits), _log_softmax(ref["logits_raw"])))
  failures += _report("folded patterns vs TL raw", _rel(extras["patterns"], ref["patterns"]))
  failures += _report("token-path weights vs twin (each tensor)",
                      _weights_difference(cfg, w, ref, "twin_", positions=False))
  failures += _report("W_Q_pos, W_K_pos vs TL raw W_Q, W_K", max(
      _rel(np.asarray(getattr(w, f"W_{x}_pos"))[l], ref[f"w/blocks.{l}.attn.W_{x}"])
      for l in range(cfg.n_layers) for x in "QK"))
  failures += _report("positional QK vs TL raw weights",
                      _rel(circuits.positional_qk(w), ref["positional_qk"]))
  return failures + _compare_circuits(w, ref, "twin_", "twin")


def _compare_model(name: str, directory: Path) -> int:
  """One model loaded with ``reproduce.load`` against TransformerLens's numbers; failures."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import reproduce  # pylint: disable=import-outside-toplevel
  ref = dict(np.load(directory / "transformer_lens.npz"))
  path = directory / "model.safetensors"
  print(f"{name}:")
  cfg_raw, raw = reproduce.load(path, fold=False)
  tokens = ref["tokens"]
  logits, extras = reproduce.forward(cfg_raw, raw, tokens, return_patterns=True)
  failures = _report("raw logits vs TL", _rel(logits, ref["logits_raw"]))
  failures += _report("patterns vs TL", _rel(extras["patterns"], ref["patterns"]))
  cfg, w, meta = reproduce.load_with_meta(path)
  if cfg_raw.norm == "ln" and cfg_raw.positions_after_norm:
    print(f"  folded (meta['folded']={meta['folded']}): norm {cfg.norm!r}, W_pos read by the raw "
          f"W_Q, W_K; TL leaves it unfolded (norm {ref['normalization_processed']}), the "
          f"standard twin has norm {ref['twin_normalization_processed']}")
    return failures + _compare_folded_positions_after_norm(cfg, w, tokens, ref)
  print(f"  folded: norm {cfg.norm!r} (TL: {ref['normalization_processed']})")
  logits = reproduce.forward(cfg, w, tokens)[0]
  failures += _report("processed logits vs TL", _rel(logits, ref["logits_processed"]))
  failures += _report("processed weights vs TL (every tensor)", _weights_difference(cfg, w, ref))
  return failures + _compare_circuits(w, ref)


def _compare_phase(out: Path) -> int:
  failures = sum(_compare_model(name, out / name) for name in MODELS)
  print("all within tolerance" if not failures else f"{failures} comparisons FAILED")
  return 1 if failures else 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      epilog="Phase 1 needs --out and --ours-python; phase 2 alone needs --compare.")
  parser.add_argument("--out", metavar="DIR",
                      help="phase 1: where the models and TransformerLens's numbers go")
  parser.add_argument("--ours-python", metavar="PYTHON",
                      help="phase 1: the Python that has this project's dependencies (jax, flax), "
                           "run for phase 2")
  parser.add_argument("--repo", metavar="DIR", default=str(Path(__file__).resolve().parent.parent),
                      help="the project's clone, put on phase 2's PYTHONPATH (default: the one "
                           "holding this script)")
  parser.add_argument("--compare", metavar="DIR", help="phase 2 only, on DIR (project's Python)")
  args = parser.parse_args(argv)
  if args.compare:
    sys.path.insert(0, args.repo)  # this script's folder, not the clone, is on sys.path
    return _compare_phase(Path(args.compare))
  if not args.out or not args.ours_python:
    parser.error("phase 1 needs --out DIR and --ours-python PYTHON (or --compare DIR alone)")
  out = Path(args.out)
  _tl_phase(out)
  env = {"PYTHONPATH": args.repo, "PATH": os.environ.get("PATH", os.defpath)}
  return subprocess.run([args.ours_python, str(Path(__file__).resolve()), "--compare", str(out)],
                        cwd=args.repo, env=env, check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
