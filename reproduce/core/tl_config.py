"""A TransformerLens-format model's ``config.json``, in either form its repository may ship.

1. TransformerLens's ``cfg.to_dict()`` (``normalization_type``, ``positional_embedding_type``,
   ``eps``, ...): used as is.
2. The training config of the models Neel Nanda trained (``attn-only-1l`` … ``attn-only-4l``,
   ``attn-only-2l-demo``) and of Redwood's ``redwood_attn_2l``: recognised by a
   ``normalization`` or ``shortformer_pos`` key and mapped as TransformerLens's
   ``convert_neel_model_config`` maps it when it loads these repositories:

   =========================  ============================================================
   training config            TransformerLens field (ours)
   =========================  ============================================================
   n_layers, d_model, d_head, same names
   n_heads, n_ctx, d_vocab
   normalization              normalization_type: "LN" (ln), "LNPre" (lnpre), null (none)
   shortformer_pos            positional_embedding_type: true → "shortformer", false or
                              absent → "standard"
   attn_only                  must be true (then d_mlp and act_fn describe no layer)
   d_mlp, act_fn              unused for attention-only models
   final_rms                  refused when true (an RMS final norm)
   architecture               absent or "neel"; others need weight conversions: refused
   ln_eps                     not read: TransformerLens computes with eps = 1e-5 for these
                              repositories (a different value is noted in meta["notes"])
   tokenizer_name             recorded as meta["tokenizer_name"]
   bos_token_id               recorded as meta["bos_token_id"] (either form; the BOS of
                              random-token probes when no tokenizer.json is given)
   anything else              training fields, ignored
   =========================  ============================================================

``parse_config`` reads the JSON; ``normalise`` gives (TransformerLens fields, info) for either
form; ``check_supported`` refuses every option our forward pass does not compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Tuple

NORM = {None: "none", "LN": "ln", "LNPre": "lnpre"}
POS = {"standard": "standard", "shortformer": "shortformer"}
TL_EPS = 1e-5  # HookedTransformerConfig's default, used for the training-config form
_COPIED = ("n_layers", "d_model", "d_head", "n_heads", "n_ctx", "d_vocab", "attn_only", "d_mlp",
           "act_fn", "final_rms")
_WEIGHT_CONVERSIONS = ("neel-solu-old", "mingpt")


class ConfigError(ValueError):
  """A config that cannot describe a model we compute exactly."""


def parse_config(text: str, where: str) -> dict:
  """A JSON object from ``text``; ``where`` names its origin in the error."""
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ConfigError(f"{where}: not valid JSON ({e})") from None
  if not isinstance(config, dict):
    raise ConfigError(f"{where}: a TransformerLens config must be a JSON object")
  return config


def parse_cli(value: str, has_checkpoint: bool = True) -> dict:
  """``--tl_config``: a JSON object, or the path of a file holding one (it describes the weights
  of a ``--checkpoint``, so without one it is an error)."""
  if not has_checkpoint:
    raise ConfigError("--tl_config describes the weights of a --checkpoint; give --checkpoint")
  text = value.strip()
  if not text.startswith(("{", "[")):
    path = Path(text).expanduser()
    if not path.is_file():
      raise ConfigError(f"--tl_config: {value!r} is neither a JSON object nor a file")
    return parse_config(path.read_text(), str(path))
  return parse_config(text, "--tl_config")


def is_training_config(config: dict) -> bool:
  """Whether ``config`` is the training-config form (see the module doc)."""
  return "normalization" in config or "shortformer_pos" in config


def normalise(config: dict, where: str = "config") -> Tuple[dict, dict]:
  """(TransformerLens fields, info) from either form; info holds ``config_form``
  ("transformer_lens" or "training"), ``tokenizer_name`` and ``bos_token_id`` when given, and
  ``notes``."""
  info = {"config_form": "transformer_lens", "notes": []}
  if config.get("tokenizer_name"):
    info["tokenizer_name"] = str(config["tokenizer_name"])
  bos = config.get("bos_token_id")
  if isinstance(bos, int) and not isinstance(bos, bool) and bos >= 0:
    info["bos_token_id"] = bos  # the BOS of random-token probes when there is no tokenizer
  if not is_training_config(config):
    return dict(config), info
  info["config_form"] = "training"
  tl = {k: config[k] for k in _COPIED if k in config}
  norm = config.get("normalization", config.get("normalization_type"))
  if "normalization_type" in config and config["normalization_type"] != norm:
    raise ConfigError(f"{where}: normalization={norm!r} but normalization_type="
                      f"{config['normalization_type']!r}")
  tl["normalization_type"] = norm
  pos = "standard"
  if "shortformer_pos" in config:
    if not isinstance(config["shortformer_pos"], bool):
      raise ConfigError(f"{where}: shortformer_pos must be true or false, got "
                        f"{config['shortformer_pos']!r}")
    pos = "shortformer" if config["shortformer_pos"] else "standard"
  if config.get("positional_embedding_type", pos) != pos:
    raise ConfigError(f"{where}: shortformer_pos={config.get('shortformer_pos')!r} but "
                      f"positional_embedding_type={config['positional_embedding_type']!r}")
  tl["positional_embedding_type"] = pos
  tl["original_architecture"] = config.get("architecture", "neel")
  if tl["original_architecture"] != "neel":
    raise ConfigError(f"{where}: architecture {tl['original_architecture']!r} needs a weight "
                      "conversion that is not supported (only 'neel')")
  tl["eps"] = TL_EPS
  ln_eps = config.get("ln_eps")
  if norm is not None and isinstance(ln_eps, (int, float)) and ln_eps != TL_EPS:
    info["notes"].append(f"the training config says ln_eps={ln_eps!r}; TransformerLens (and "
                         f"this loader) compute the layer norm with eps={TL_EPS}")
  return tl, info


def check_supported(tl: dict) -> None:
  """Refuses, with the field's name, every TransformerLens option that changes the computation
  beyond what our forward does (MLPs, rotary, grouped-query attention, ...)."""
  get = tl.get
  problems = [
      (get("attn_only") is False or (get("attn_only") is None and get("d_mlp") not in
                                     (None, 0, -1)) or bool(get("num_experts")),
       f"the model has MLP layers (attn_only={get('attn_only')!r}, d_mlp={get('d_mlp')!r}); "
       "only attention-only models are supported"),
      (get("normalization_type") not in NORM,
       f"normalization_type {get('normalization_type')!r} is not supported (None, LN or LNPre)"),
      (get("positional_embedding_type", "standard") not in POS,
       f"positional_embedding_type {get('positional_embedding_type')!r} is not supported "
       "(standard or shortformer; rotary and alibi are not)"),
      (get("n_key_value_heads") not in (None, get("n_heads")),
       f"grouped-query attention (n_key_value_heads={get('n_key_value_heads')!r}, "
       f"n_heads={get('n_heads')!r}) is not supported"),
      (get("attention_dir", "causal") != "causal",
       f"attention_dir {get('attention_dir')!r} is not supported (causal only)"),
      (bool(get("use_local_attn")), "local attention (use_local_attn) is not supported"),
      (get("use_attn_scale") is False, "use_attn_scale=False is not supported"),
      (bool(get("use_normalization_before_and_after")),
       "use_normalization_before_and_after is not supported"),
      (bool(get("post_embedding_ln")), "post_embedding_ln is not supported"),
      (bool(get("use_qk_norm")), "use_qk_norm is not supported"),
      (bool(get("final_rms")), "final_rms (an RMS final norm) is not supported"),
      (get("original_architecture") in _WEIGHT_CONVERSIONS,
       f"architecture {get('original_architecture')!r} needs a weight conversion that is not "
       "supported"),
      ((get("attn_scores_soft_cap") or -1) > 0, "attn_scores_soft_cap is not supported"),
      ((get("output_logits_soft_cap") or -1) > 0, "output_logits_soft_cap is not supported"),
      (get("d_vocab_out") not in (None, -1, get("d_vocab")),
       f"d_vocab_out={get('d_vocab_out')!r} differs from d_vocab={get('d_vocab')!r}"),
  ]
  for bad, message in problems:
    if bad:
      raise ConfigError(message)
  scale, d_head = get("attn_scale"), get("d_head")
  if scale not in (None, -1.0) and d_head and not math.isclose(float(scale),
                                                               math.sqrt(d_head), rel_tol=1e-6):
    raise ConfigError(f"attn_scale={scale!r} is not sqrt(d_head)={math.sqrt(d_head):.6g}")


def read_sidecar(folder: Path) -> Optional[dict]:
  """``folder/config.json`` when it is a TransformerLens config of either form (it names
  ``d_model``; other configs, e.g. Hugging Face's, are not ours to read), else None."""
  path = Path(folder) / "config.json"
  if not path.is_file():
    return None
  config = parse_config(path.read_text(), str(path))
  return config if "d_model" in config else None
