"""Side-by-side check against TransformerLens itself (never imported by the package or the tests).

Run from the repository root with a Python that has torch and transformer-lens:

    /path/to/tl-venv/bin/python experiments/check_transformer_lens.py [--out DIR]
        [--ours-python /path/to/project-venv/bin/python]

Phase 1 (TransformerLens's Python) builds attention-only HookedTransformers from configs,
randomises every parameter (biases and layer-norm gains/biases included), saves each state dict
as ``model.safetensors`` with ``config.json`` (``cfg.to_dict()``) beside it, and records
TransformerLens's logits and patterns, then its weights and circuit numbers after the
``from_pretrained`` default processing (fold_ln, center_writing_weights, center_unembed,
fold_value_biases, with from_pretrained's rule that shortformer models skip the first three).
Phase 2 (``--compare DIR``, run with the project's Python, which phase 1 starts) loads each
model with ``reproduce.load`` and prints the largest differences.  Exit status 1 if any
difference exceeds its tolerance.
"""

import argparse
import json
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
      ref["normalization_processed"] = np.array(str(processed.cfg.normalization_type))
      for key, value in processed.state_dict().items():
        if not key.endswith(("mask", "IGNORE")):
          ref["w/" + key] = value.numpy()
      full_ov = processed.W_E @ processed.OV @ processed.W_U
      full_qk = processed.W_E @ processed.QK @ processed.W_E.T
      ref["ov_eigenvalues"] = full_ov.eigenvalues.numpy()
      ref["qk_eigenvalues"] = full_qk.eigenvalues.numpy()
      ref["ov_eigenvalues_plain"] = processed.OV.eigenvalues.numpy()
      for mode in "QKV":
        ref[f"composition_{mode}"] = processed.all_composition_scores(mode).numpy()
    np.savez(directory / "transformer_lens.npz", **ref)
    print(f"{name}: TransformerLens outputs written to {directory}")


def _sorted_eigs(lam):
  import numpy as np  # pylint: disable=import-outside-toplevel
  lam = np.asarray(lam, np.complex128)
  order = np.lexsort((np.round(lam.imag, 4), np.round(lam.real, 4)), axis=-1)
  return np.take_along_axis(lam, order, -1)


def _compare_phase(out: Path) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import reproduce  # pylint: disable=import-outside-toplevel
  from reproduce.core import circuits, tl_format  # pylint: disable=import-outside-toplevel

  names = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U",
           "b_U": "unembed.b_U"}
  per_layer = {"W_Q": "W_Q", "W_K": "W_K", "W_V": "W_V", "W_O": "W_O", "b_Q": "b_Q",
               "b_K": "b_K", "b_O": "b_O"}
  failures = 0
  rel = lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max() /
                           max(np.abs(np.asarray(b)).max(), 1e-30))

  def report(model, what, value, limit=TOLERANCE):
    nonlocal failures
    ok = value <= limit
    failures += not ok
    print(f"  {what:<38} max relative difference {value:.2e} {'ok' if ok else 'FAIL'}")

  for name in MODELS:
    directory = out / name
    ref = dict(np.load(directory / "transformer_lens.npz"))
    path = directory / "model.safetensors"
    print(f"{name}:")
    cfg_raw, raw = reproduce.load(path, fold=False)
    tokens = ref["tokens"]
    logits, extras = reproduce.forward(cfg_raw, raw, tokens, return_patterns=True)
    report(name, "raw logits vs TL", rel(logits, ref["logits_raw"]))
    report(name, "patterns vs TL", rel(extras["patterns"], ref["patterns"]))
    cfg, w, meta = reproduce.load_with_meta(path)
    if not cfg.foldable:
      print(f"  not foldable (meta['folded']={meta['folded']}): {meta['fold_problem']}")
      try:
        circuits.ov_eigenvalues(w)
        print("  circuits computed on unfolded weights: FAIL")
        failures += 1
      except ValueError as e:
        print(f"  circuits refuse it: ok ({type(e).__name__})")
      continue
    print(f"  folded: norm {cfg.norm!r} (TL: {ref['normalization_processed']})")
    logits = reproduce.forward(cfg, w, tokens)[0]
    report(name, "processed logits vs TL", rel(logits, ref["logits_processed"]))
    state = tl_format.to_state_dict(cfg, w)
    worst = 0.0
    for ours, theirs in names.items():
      worst = max(worst, rel(state[theirs], ref["w/" + theirs]))
    for l in range(cfg.n_layers):
      for ours in per_layer:
        key = f"blocks.{l}.attn.{ours}"
        worst = max(worst, rel(state[key], ref["w/" + key]))
    report(name, "processed weights vs TL (every tensor)", worst)
    report(name, "OV eigenvalues (full) vs TL",
           rel(_sorted_eigs(circuits.ov_eigenvalues(w)), _sorted_eigs(ref["ov_eigenvalues"])))
    report(name, "QK eigenvalues (full) vs TL",
           rel(_sorted_eigs(circuits.qk_eigenvalues(w)), _sorted_eigs(ref["qk_eigenvalues"])))
    report(name, "OV eigenvalues (d_model) vs TL",
           rel(_sorted_eigs(circuits.ov_eigenvalues(w, full=False)),
               _sorted_eigs(ref["ov_eigenvalues_plain"])))
    ours_pos = circuits.positivity(circuits.ov_eigenvalues(w))
    theirs_pos = circuits.positivity(ref["ov_eigenvalues"])
    report(name, "OV positivity vs TL (absolute)",
           float(np.abs(ours_pos - theirs_pos).max()), limit=1e-4)
    for mode in "QKV":
      report(name, f"{mode}-composition scores vs TL",
             rel(circuits.composition_scores(w, mode.lower()), ref[f"composition_{mode}"]))
  print("all within tolerance" if not failures else f"{failures} comparisons FAILED")
  return 1 if failures else 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="/tmp/check_transformer_lens")
  parser.add_argument("--compare", metavar="DIR", help="phase 2 only, on DIR (project's Python)")
  parser.add_argument("--ours-python", default="/work/venv/bin/python",
                      help="the Python that has this project's dependencies (jax, flax)")
  args = parser.parse_args()
  if args.compare:
    return _compare_phase(Path(args.compare))
  out = Path(args.out)
  _tl_phase(out)
  root = Path(__file__).resolve().parent.parent
  return subprocess.run([args.ours_python, str(Path(__file__).resolve()), "--compare", str(out)],
                        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                        check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
