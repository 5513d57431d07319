"""TransformerLens state-dict naming for attention-only models, in ``.npz``, ``.safetensors`` or
PyTorch's zip format (``.pth``/``.pt``/``.bin``/``.ckpt``, read without torch: ``torch_zip``).

    embed.W_E [vocab, d_model]            pos_embed.W_pos [n_ctx, d_model]
    blocks.{l}.attn.W_Q|W_K|W_V [H, d_model, d_head]
    blocks.{l}.attn.W_O [H, d_head, d_model]
    blocks.{l}.attn.b_Q|b_K|b_V [H, d_head], blocks.{l}.attn.b_O [d_model]
    unembed.W_U [d_model, vocab]          unembed.b_U [vocab] (missing: zero)
    blocks.{l}.attn.mask / .IGNORE        (buffers: the mask must be causal, IGNORE a scalar
                                           ≤ -1e4 or -inf; neither is kept)
    blocks.{l}.ln1.w|b, ln_final.w|b      (only with normalization_type "LN")

These are exactly our head-major shapes, so loading is renaming plus checks: every shape must
match the config and any other key is an error.  Biases are kept (all-zero ones are dropped).
16-bit weights are upcast to float32 (exactly).

The architecture comes from, in this order: the ``tl_config`` the caller gives; a
``config.json`` beside the file (or in ``config_dir``) in either form ``tl_config`` reads
(TransformerLens's ``cfg.to_dict()`` or a repository's training config; the fields that change
the computation are checked, see ``tl_config.check_supported``); the config ``save`` embeds in
the file (safetensors metadata or an npz ``__config__`` entry).  What none of them gives is
inferred from the shapes, with TransformerLens's defaults (``positional_embedding_type=
"standard"``, ``eps=1e-5``, no normalisation unless ``ln1`` / ``ln_final`` keys are present);
a ``.pth`` file with no config at all must be given its ``positional_embedding_type`` (the
weights do not show it).  TransformerLens adds shortformer positions after the layer norm, so
such models load with ``pos_after_norm=True``.  Bare pickles (``.pkl``) are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from reproduce.core import tl_config as tlc
from reproduce.core import torch_zip
from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights, check_weights

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
PICKLE_SUFFIXES = TORCH_SUFFIXES + (".pkl", ".pickle")
WEIGHT_SUFFIXES = (".npz", ".safetensors") + TORCH_SUFFIXES
CONFIG_KEY = "__config__"
SIDECAR = "config.json"
_POS, _NORM = tlc.POS, tlc.NORM
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(attn|ln1)\.(\w+)$")
_SHAPE_FIELDS = ("n_layers", "n_heads", "d_head", "d_model", "d_vocab", "n_ctx")
_ARCH_FIELDS = _SHAPE_FIELDS + ("normalization_type", "positional_embedding_type")


class WeightFormatError(ValueError):
  """A weight file that cannot be loaded exactly."""


def _read_arrays(path: Path) -> Tuple[Dict[str, np.ndarray], Optional[dict], dict]:
  """(name → array, embedded config or None, info such as the stored dtypes) of a weight file."""
  if path.suffix in TORCH_SUFFIXES:
    try:
      arrays, info = torch_zip.read_state_dict(path)
    except torch_zip.TorchFileError as e:
      raise WeightFormatError(str(e)) from None
    return arrays, None, info
  if path.suffix == ".npz":
    with open(path, "rb") as f:
      head = f.read(4)
    if head[:2] != b"PK":  # every .npz is a zip archive
      raise WeightFormatError(f"{path}: not a .npz file (no zip archive header)")
    try:
      with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    except ValueError as e:
      if "pickle" not in str(e).lower() and "object" not in str(e).lower():
        raise WeightFormatError(f"{path}: not a readable .npz file ({e})") from e
      raise WeightFormatError(f"{path}: holds pickled objects, which are never loaded ({e})") from e
    except Exception as e:  # pylint: disable=broad-except
      raise WeightFormatError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    config = None
    if CONFIG_KEY in arrays:
      config = _parse_config(str(arrays.pop(CONFIG_KEY)), f"{path} ({CONFIG_KEY})")
    return arrays, config, {}
  if path.suffix == ".safetensors":
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    try:
      with safe_open(str(path), framework="numpy") as f:
        arrays = {k: np.asarray(f.get_tensor(k)) for k in f.keys()}
        metadata = f.metadata() or {}
    except Exception as e:  # pylint: disable=broad-except
      raise WeightFormatError(f"{path}: not a readable .safetensors file "
                              f"({type(e).__name__}: {e})") from e
    config = None
    if "config" in metadata:
      config = _parse_config(metadata["config"], f"{path} (metadata)")
    return arrays, config, {}
  if path.suffix in PICKLE_SUFFIXES:
    raise WeightFormatError(
        f"{path}: {path.suffix} files are bare pickles and are never loaded (they can run code); "
        "save the state dict with torch.save (.pth), as .safetensors or as .npz")
  raise WeightFormatError(f"{path}: unknown weight file type {path.suffix!r}; expected "
                          f"{', '.join(WEIGHT_SUFFIXES)}")


def _parse_config(text: str, where: str) -> dict:
  try:
    return tlc.parse_config(text, where)
  except tlc.ConfigError as e:
    raise WeightFormatError(str(e)) from None


def _model_config(tl: dict, arrays: Dict[str, np.ndarray]) -> ModelConfig:
  """Our architecture from a TransformerLens config (given fields win over inferred ones)."""
  for key in arrays:
    if ".mlp." in key or ".ln2." in key:
      raise WeightFormatError(f"the weights hold MLP layers ({key}); only attention-only models "
                              "are supported")
    if "rotary" in key:
      raise WeightFormatError(f"the weights hold rotary embeddings ({key}); rotary positions "
                              "are not supported")
  try:
    tlc.check_supported(tl)
  except tlc.ConfigError as e:
    raise WeightFormatError(str(e)) from None
  layers = {int(m.group(1)) for k in arrays if (m := _BLOCK_KEY.match(k))}
  inferred = {"n_layers": max(layers) + 1 if layers else 0}
  if "embed.W_E" in arrays and arrays["embed.W_E"].ndim == 2:
    inferred["d_vocab"], inferred["d_model"] = arrays["embed.W_E"].shape
  if "pos_embed.W_pos" in arrays and arrays["pos_embed.W_pos"].ndim == 2:
    inferred["n_ctx"] = arrays["pos_embed.W_pos"].shape[0]
  if "blocks.0.attn.W_Q" in arrays and arrays["blocks.0.attn.W_Q"].ndim == 3:
    inferred["n_heads"], _, inferred["d_head"] = arrays["blocks.0.attn.W_Q"].shape
  fields = {}
  for name in _SHAPE_FIELDS:
    value = tl.get(name, inferred.get(name))
    if value is None:
      raise WeightFormatError(f"cannot infer {name}: give it in the config")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
      raise WeightFormatError(f"config field {name} must be an integer, got {value!r}")
    fields[name] = int(value)
  if "normalization_type" in tl:
    norm = _NORM[tl["normalization_type"]]
  else:
    norm = "ln" if "ln_final.w" in arrays or "blocks.0.ln1.w" in arrays else "none"
  pos = _POS[tl.get("positional_embedding_type", "standard")]
  eps = tl.get("eps", 1e-5)
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
    raise WeightFormatError(f"config field eps must be a positive number, got {eps!r}")
  try:
    return ModelConfig(**fields, pos=pos, norm=norm, eps=float(eps),
                       pos_after_norm=pos == "shortformer" and norm != "none")
  except ValueError as e:
    raise WeightFormatError(str(e)) from e


def _take(arrays: Dict[str, np.ndarray], key: str, shape: tuple) -> np.ndarray:
  if key not in arrays:
    raise WeightFormatError(f"missing weight {key} (expected shape {shape})")
  a = arrays.pop(key)
  if tuple(a.shape) != tuple(shape):
    raise WeightFormatError(f"{key} has shape {tuple(a.shape)}, expected {tuple(shape)}")
  if not np.issubdtype(a.dtype, np.floating):
    raise WeightFormatError(f"{key} has dtype {a.dtype}, expected floating point")
  a = np.asarray(a, np.float32)
  if not np.all(np.isfinite(a)):
    raise WeightFormatError(f"{key} holds non-finite values")
  return a


def _optional(arrays: Dict[str, np.ndarray], keys, shape: tuple) -> Optional[np.ndarray]:
  """Stacks the arrays under ``keys`` (each ``shape``; missing ones count as zero), or None when
  every one is absent or zero."""
  parts = [_take(arrays, k, shape) if k in arrays else np.zeros(shape, np.float32) for k in keys]
  if not parts or not any(np.any(p != 0) for p in parts):
    return None
  return np.stack(parts)


def _check_ignore(value, layer: int) -> None:
  """TransformerLens's masked score: any scalar ≤ -1e4 gives a zero weight in float32 softmax."""
  if value is None:
    return
  v = np.asarray(value)
  if v.size != 1 or not np.issubdtype(v.dtype, np.floating) or not float(v.reshape(())) <= -1e4:
    raise WeightFormatError(f"blocks.{layer}.attn.IGNORE is {v.tolist()!r}; the masked score "
                            "must be one number ≤ -1e4 (TransformerLens uses -1e5 or -inf)")


def from_state_dict(arrays: Dict[str, np.ndarray], tl_config: Optional[dict] = None
                    ) -> Tuple[ModelConfig, Weights]:
  """(config, weights) from a TransformerLens state dict; raises WeightFormatError on anything
  that would not load exactly.  The weights are raw (see ``weights.fold_for_analysis``)."""
  arrays = dict(arrays)
  tl_config = dict(tl_config or {})
  cfg = _model_config(tl_config, arrays)
  L, H, D, dh, V, T = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab, cfg.n_ctx
  W = {"W_E": _take(arrays, "embed.W_E", (V, D)), "W_pos": _take(arrays, "pos_embed.W_pos", (T, D)),
       "W_U": _take(arrays, "unembed.W_U", (D, V))}
  for name, shape in (("W_Q", (H, D, dh)), ("W_K", (H, D, dh)), ("W_V", (H, D, dh)),
                      ("W_O", (H, dh, D))):
    W[name] = np.stack([_take(arrays, f"blocks.{l}.attn.{name}", shape) for l in range(L)]) \
        if L else np.zeros((0,) + shape, np.float32)
  for l in range(L):
    mask = arrays.pop(f"blocks.{l}.attn.mask", None)
    if mask is not None and (mask.ndim != 2 or not np.array_equal(
        np.asarray(mask, bool), np.tril(np.ones(mask.shape, bool)))):
      raise WeightFormatError(f"blocks.{l}.attn.mask is not a causal mask")
    _check_ignore(arrays.pop(f"blocks.{l}.attn.IGNORE", None), l)
  b_U = _optional(arrays, ["unembed.b_U"], (V,))
  optional = {"b_U": None if b_U is None else b_U[0]}
  for b in ("b_Q", "b_K", "b_V"):
    optional[b] = _optional(arrays, [f"blocks.{l}.attn.{b}" for l in range(L)], (H, dh))
  optional["b_O"] = _optional(arrays, [f"blocks.{l}.attn.b_O" for l in range(L)], (D,))
  norm_keys = [k for k in arrays if k.startswith("ln_final.") or ".ln1." in k]
  if cfg.norm != "ln" and norm_keys:
    raise WeightFormatError(f"layer-norm weights {sorted(norm_keys)[:4]} in a model whose "
                            f"normalization_type is {tl_config.get('normalization_type')!r}")
  if cfg.norm == "ln":
    W["ln_gain"] = np.stack([_take(arrays, f"blocks.{l}.ln1.w", (D,)) for l in range(L)]) \
        if L else np.zeros((0, D), np.float32)
    W["ln_final"] = _take(arrays, "ln_final.w", (D,))
    optional["ln_bias"] = _optional(arrays, [f"blocks.{l}.ln1.b" for l in range(L)], (D,))
    ln_final_bias = _optional(arrays, ["ln_final.b"], (D,))
    optional["ln_final_bias"] = None if ln_final_bias is None else ln_final_bias[0]
  if arrays:
    raise WeightFormatError(f"unknown keys {sorted(arrays)[:10]}"
                            f"{' …' if len(arrays) > 10 else ''}; only attention-only "
                            "TransformerLens weights are supported")
  W.update({k: v for k, v in optional.items() if v is not None})
  weights = Weights.from_dict(W)
  check_weights(cfg, weights)
  return cfg, weights


def to_state_dict(cfg: ModelConfig, weights: Weights) -> Dict[str, np.ndarray]:
  """Our weights under TransformerLens names, with explicit zero biases where we have none
  (naming only: ``tl_config_of`` says whether TransformerLens computes the same function).
  Refuses positional readers (W_Q_pos, W_K_pos of a folded LN(x) + W_pos model) and smeared
  keys (``Weights.smear``): TransformerLens has no place for them."""
  if weights.smear is not None or getattr(cfg, "smear_keys", False):
    raise WeightFormatError(
        "this is a smeared-key model (model.smear_keys), which TransformerLens cannot express")
  if weights.W_Q_pos is not None or weights.W_K_pos is not None:
    raise WeightFormatError(
        "these weights have separate positional readers (W_Q_pos, W_K_pos: a folded layer-norm "
        "model with shortformer positions), which TransformerLens cannot express; save the raw "
        "weights (reproduce.load(path, fold=False)) instead")
  w = {k: np.asarray(v, np.float32) for k, v in weights.to_dict().items()}
  L, H, D, dh, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
  get = lambda name, shape: w.get(name, np.zeros(shape, np.float32))
  out = {"embed.W_E": w["W_E"], "pos_embed.W_pos": w["W_pos"], "unembed.W_U": w["W_U"],
         "unembed.b_U": get("b_U", (V,))}
  for l in range(L):
    for name in ("W_Q", "W_K", "W_V", "W_O"):
      out[f"blocks.{l}.attn.{name}"] = w[name][l]
    for b in ("b_Q", "b_K", "b_V"):
      out[f"blocks.{l}.attn.{b}"] = get(b, (L, H, dh))[l]
    out[f"blocks.{l}.attn.b_O"] = get("b_O", (L, D))[l]
    if cfg.norm == "ln":
      out[f"blocks.{l}.ln1.w"] = w["ln_gain"][l]
      out[f"blocks.{l}.ln1.b"] = get("ln_bias", (L, D))[l]
  if cfg.norm == "ln":
    out["ln_final.w"] = w["ln_final"]
    out["ln_final.b"] = get("ln_final_bias", (D,))
  return out


def tl_config_of(cfg: ModelConfig) -> dict:
  """The TransformerLens config fields of our architecture; refuses one it cannot express."""
  if cfg.pos == "shortformer" and cfg.norm != "none" and not cfg.pos_after_norm:
    raise WeightFormatError(
        "this model adds shortformer positions before its layer norm (LN(x + W_pos), our "
        "trained models' order); TransformerLens adds them after (LN(x) + W_pos), so it has no "
        "TransformerLens equivalent")
  return {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
          "d_head": cfg.d_head, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "attn_only": True,
          "positional_embedding_type": cfg.pos, "eps": cfg.eps,
          "normalization_type": {"none": None, "ln": "LN", "lnpre": "LNPre"}[cfg.norm]}


def save(path, cfg: ModelConfig, weights: Weights) -> Path:
  """Writes TransformerLens-named weights (config embedded) to ``.npz`` or ``.safetensors``."""
  path = Path(path)
  if path.suffix not in (".npz", ".safetensors"):
    raise WeightFormatError(f"{path}: save as .npz or .safetensors")
  state = to_state_dict(cfg, weights)
  config_json = json.dumps(tl_config_of(cfg))
  tmp = path.with_name(path.name + ".tmp" + path.suffix)
  if path.suffix == ".npz":
    np.savez(tmp, **state, **{CONFIG_KEY: np.asarray(config_json)})
  else:
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp),
              metadata={"config": config_json})
  tmp.replace(path)
  return path


def _config_for(path: Path, tl_config: Optional[dict], embedded: Optional[dict],
                config_dir: Optional[Path] = None) -> Tuple[dict, dict]:
  """(TransformerLens fields, info) from the caller's config, else ``config.json`` in
  ``config_dir`` (default: beside the file), else the embedded one; a sidecar and an embedded
  config that disagree on the architecture are an error.  ``info`` says where it came from
  (``config_source``), its form, the tokenizer it names and notes (``tl_config.normalise``)."""
  folder = Path(config_dir) if config_dir is not None else path.parent
  sidecar_path, source = folder / SIDECAR, None
  try:
    if tl_config is not None:
      config, source = dict(tl_config), "tl_config"
    elif (sidecar := tlc.read_sidecar(folder)) is not None:
      config, source = sidecar, str(sidecar_path)
    else:
      config = embedded or {}
      source = f"{path.name} (embedded)" if embedded is not None else None
    tl, info = tlc.normalise(config, source or str(path))
  except tlc.ConfigError as e:
    raise WeightFormatError(str(e)) from None
  if source == str(sidecar_path) and embedded is not None:
    for name in _ARCH_FIELDS:
      if name in tl and name in embedded and tl[name] != embedded[name]:
        raise WeightFormatError(f"{sidecar_path} says {name}={tl[name]!r} but the config "
                                f"inside {path.name} says {embedded[name]!r}")
  if path.suffix in TORCH_SUFFIXES and (source is None or (
      source == "tl_config" and "positional_embedding_type" not in tl)):
    raise WeightFormatError(
        f"no {SIDECAR} in {folder}, and the weights do not show the positional embedding type: "
        "give it (and any other field) as tl_config={\"positional_embedding_type\": "
        "\"shortformer\"} (or \"standard\"); on the command line --tl_config='{...}'")
  info["config_source"] = source or "inferred from the weights"
  return tl, info


def load_with_info(path, tl_config: Optional[dict] = None, config_dir=None
                   ) -> Tuple[ModelConfig, Weights, dict]:
  """Raw (config, weights, info) from a TransformerLens-format weight file; ``config_dir`` is
  where to look for ``config.json`` (default: beside the file).  ``info``: ``config_source``,
  ``config_form``, ``tokenizer_name``, ``notes`` and, for torch files, ``dtypes`` (tensors per
  stored dtype)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no weight file at {path}")
  arrays, embedded, read_info = _read_arrays(path)
  try:
    config, info = _config_for(path, tl_config, embedded, config_dir)
    cfg, weights = from_state_dict(arrays, config)
  except WeightFormatError as e:
    raise WeightFormatError(f"{path}: {e}") from None
  return cfg, weights, dict(info, **read_info)


def load(path, tl_config: Optional[dict] = None) -> Tuple[ModelConfig, Weights]:
  """Raw (config, weights) from a TransformerLens-format weight file (see ``load_with_info``)."""
  cfg, weights, _ = load_with_info(path, tl_config)
  return cfg, weights
