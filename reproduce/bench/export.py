"""Lower and serialise the training step and the figures' kernels for an accelerator (``cuda``,
``tpu``) on a host that has none: ``jax.export`` traces each jitted function from abstract inputs
and lowers it with the target platform's rules, so an op with no lowering there, a custom call
(cuDNN's fused attention), a dtype or a sharding mistake fails here instead of in a job's first
minute.  Nothing is compiled by the target's compiler and nothing runs: kernel speed, memory
and numerics on the device are not checked (BUILD.md).

    python -m reproduce.bench export --config=configs/attn2l.py:paper --platform=cuda --devices=8
    python -m reproduce.bench export --figures=paper --platform=tpu
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import metadata
import re
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

from reproduce.config import load_config
from reproduce.core import circuits, paths, scores
from reproduce.core.scores import ablations
from reproduce.core.kernels import items_per_chunk
from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import init_weights
from reproduce.figure.runner import figure_config, figure_names
from reproduce.train.plan import StepPlan, plan_step
from reproduce.train.step import abstract_step_inputs, make_optimizer, train_step

PLATFORMS = ("cuda", "tpu", "cpu")
RULES = {"cuda": "gpu", "tpu": "tpu", "cpu": "cpu"}  # jax.export's names → plan_step's
CUDNN_CALLS = "__cudnn$fmha"  # cuDNN's fused-attention custom calls (target name prefix)
_UNGUARANTEED = "custom calls whose targets have no compatibility guarantees"


class UnsupportedChoice(ValueError):
  """A configured choice that the target platform cannot lower; the message is one line."""


def platform_name(platform: str) -> str:
  """``gpu`` → ``cuda``; anything outside ``PLATFORMS`` is an UnsupportedChoice."""
  platform = {"gpu": "cuda"}.get(platform, platform)
  if platform not in PLATFORMS:
    raise UnsupportedChoice(f"--platform={platform}: export targets are {', '.join(PLATFORMS)}")
  return platform


def cuda_plugin() -> Optional[str]:
  """The installed CUDA plugin's version (jax's cuDNN check needs its libraries), or None."""
  for name in ("jax-cuda13-plugin", "jax-cuda12-plugin"):
    try:
      return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
      pass
  return None


def custom_calls(text: str) -> list:
  """Sorted custom-call targets in a StableHLO module's text (pretty or generic form)."""
  return sorted(set(re.findall(r"custom_call @([^\s(]+)", text))
                | set(re.findall(r'call_target_name = "([^"]+)"', text)))


def _first_line(e: BaseException) -> str:
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _avals(avals) -> list:
  return [(tuple(a.shape), str(a.dtype)) for a in avals]


def _bytes(avals) -> int:
  return sum(a.size * a.dtype.itemsize for a in avals)


def export_kernel(name: str, fn: Callable, args: tuple, platform: str, *,
                  allow: Optional[str] = None, **jit_kwargs):
  """Exports ``fn(*args)`` (``args`` a pytree of ``jax.ShapeDtypeStruct``) for ``platform``;
  returns (report dict, Exported or None).

  ``fn`` is jitted as a function of the flat leaves of ``args`` returning {path: array}, since
  ``jax.export`` serialises only lists, tuples and string-keyed dicts, and the project's pytrees
  (Weights, optax states, path chains keyed by layer tuples) are none of those.  Custom calls
  without JAX's stability guarantee fail the export unless their target starts with ``allow``;
  those allowed are listed in the report.  The round trip through ``jax.export.deserialize``
  must give back the same input and output shapes.
  """
  leaves, tree = jax.tree.flatten(args)

  def flat(*xs):
    out = fn(*jax.tree.unflatten(tree, xs))
    return {jax.tree_util.keystr(p): y for p, y in jax.tree_util.tree_leaves_with_path(out)}

  jitted = jax.jit(flat, **jit_kwargs)
  report = {"kernel": name, "platform": platform, "lowered": False, "error": None}
  start, unguaranteed = time.perf_counter(), []
  try:
    try:
      exported = jax.export.export(jitted, platforms=[platform])(*leaves)
    except ValueError as e:
      unguaranteed = custom_calls(str(e)) if _UNGUARANTEED in str(e) else []
      if not unguaranteed or not allow or not all(t.startswith(allow) for t in unguaranteed):
        raise
      checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in unguaranteed]
      exported = jax.export.export(jitted, platforms=[platform], disabled_checks=checks)(*leaves)
    blob = exported.serialize()
  except Exception as e:  # pylint: disable=broad-except  # the report says what failed
    calls = custom_calls(str(e)) if _UNGUARANTEED in str(e) else []
    why = (f"custom call(s) {', '.join(calls)} have no export stability guarantee" if calls
           else _first_line(e))
    report["error"] = f"{name} for {platform}: {why}"
    return report, None
  back = jax.export.deserialize(blob)
  report.update(
      lowered=True, export_s=round(time.perf_counter() - start, 2),
      custom_calls=custom_calls(exported.mlir_module()),
      unguaranteed_custom_calls_allowed=unguaranteed,
      serialized_bytes=len(blob), argument_bytes=_bytes(exported.in_avals),
      output_bytes=_bytes(exported.out_avals),
      round_trip_same_shapes=(_avals(back.in_avals) == _avals(exported.in_avals)
                              and _avals(back.out_avals) == _avals(exported.out_avals)
                              and back.out_tree == exported.out_tree))
  return report, exported


# ----------------------------------------------------------------------------------------------
# The training step


def cudnn_refusal(shape, dtype) -> Optional[str]:
  """None if cuDNN's fused attention (forward and backward) exports for ``cuda`` with q/k/v of
  ``shape`` [B, T, H, E] and ``dtype``; otherwise why not, in one line.  This replaces
  ``plan._cudnn_accepts``'s compile, which needs a GPU; JAX's own check needs the CUDA plugin's
  cuDNN library (``pip install "jax[cuda12]"``), not a device."""
  spec = jax.ShapeDtypeStruct(shape, dtype)
  attend = lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, is_causal=True, implementation="cudnn").astype(jnp.float32).sum()
  report, _ = export_kernel("cudnn attention", jax.grad(attend, argnums=(0, 1, 2)),
                            (spec, spec, spec), "cuda", allow=CUDNN_CALLS)
  return report["error"]


def export_plan(config, n_devices: int, platform: str) -> StepPlan:
  """``plan_step`` for ``platform``, with the cuDNN probe done by exporting the attention.

  ``train.attention=auto`` falls back to XLA's attention when cuDNN's does not export (and says
  why); an explicit ``cudnn`` that cannot lower is an UnsupportedChoice naming the platform."""
  t, m = config.train, config.model
  if t.attention == "cudnn" and platform != "cuda":
    raise UnsupportedChoice(f"--platform={platform}: train.attention=cudnn needs cuDNN's fused "
                            f"attention (custom call {CUDNN_CALLS}Softmax), which only cuda has")
  plan = plan_step(config, n_devices, RULES[platform], check_cudnn=False)
  if plan.attention != "cudnn":
    return plan
  size = t.micro_batch_size or t.batch_size // n_devices
  refusal = cudnn_refusal((size, m.n_ctx, m.n_heads, m.d_head), jnp.dtype(plan.compute_dtype))
  if refusal is None:
    return dataclasses.replace(plan, reasons=plan.reasons + (
        "cuDNN fused attention exports for cuda at this shape (forward and backward)",))
  if cuda_plugin() is None:
    refusal += ' (no CUDA plugin here: pip install "jax[cuda12]")'
  if t.attention == "cudnn":
    raise UnsupportedChoice(f"--platform=cuda: train.attention=cudnn: {refusal}")
  config = config.copy_and_resolve_references()
  config.train.attention = "xla"
  fallback = plan_step(config, n_devices, RULES[platform], check_cudnn=False)
  return dataclasses.replace(fallback, reasons=plan.reasons + (
      f"cuDNN attention did not export ({refusal}); using XLA's",))


def step_mesh(n_devices: int, attention: str):
  """The ``data`` mesh to lower over: abstract, except for cuDNN attention, whose lowering JAX
  marks as needing real devices (it is partitioned by ``custom_partitioning``); then the first
  ``n_devices`` local devices (CPU ones here; only their number enters the export)."""
  if attention != "cudnn":
    return AbstractMesh((n_devices,), ("data",))
  devices = jax.devices()
  if len(devices) < n_devices:
    raise UnsupportedChoice(
        f"--platform=cuda: cuDNN attention lowers only over real devices and JAX sees "
        f"{len(devices)}: set XLA_FLAGS=--xla_force_host_platform_device_count={n_devices}")
  return Mesh(np.asarray(devices[:n_devices]), ("data",))


def _shardings(exported, names) -> dict:
  """Partition specs recorded in the export, by argument (state arrays grouped)."""
  specs = getattr(exported, "_in_named_shardings", None) or [None] * len(names)
  groups = {}
  for name, s in zip(names, specs):
    group = {"[0]": "state", "[1]": "inputs", "[2]": "targets"}.get(name[:3], name)
    groups.setdefault(group, set()).add("unspecified" if s is None else str(s.spec))
  outs = {("unspecified" if s is None else str(s.spec))
          for s in getattr(exported, "_out_named_shardings", None) or [None]}
  return {**{k: sorted(v) for k, v in groups.items()}, "outputs": sorted(outs)}


def export_train_step(config, platform: str, n_devices: int = 1) -> dict:
  """Exports the real training step (``train.step.train_step``, jitted as ``compile_train_step``
  does: state replicated and donated, batch rows split over ``data``) for ``platform`` over a
  mesh of ``n_devices`` (``step_mesh``); returns the JSON report."""
  platform = platform_name(platform)
  t = config.train
  if n_devices < 1 or t.batch_size % n_devices:
    raise ValueError(f"--devices={n_devices} must divide train.batch_size {t.batch_size}")
  plan = export_plan(config, n_devices, platform)
  mesh = step_mesh(n_devices, plan.attention)
  replicated = NamedSharding(mesh, P())
  tx = make_optimizer(config)
  args = abstract_step_inputs(config, tx, mesh)
  n_state = len(jax.tree.leaves(args[0]))
  report, exported = export_kernel(
      "train_step", functools.partial(train_step, config, tx, plan, mesh), args, platform,
      allow=CUDNN_CALLS if plan.attention == "cudnn" else None, out_shardings=replicated,
      donate_argnums=tuple(range(n_state)))
  report = {"export": "train_step", "config": config.name, "devices": n_devices,
            "jax": jax.__version__, "cuda_plugin": cuda_plugin(), "attention": plan.attention,
            "step_plan": {"compute_dtype": plan.compute_dtype, "attention": plan.attention,
                          "micro_batches": plan.n_micro, "loss_block_elements": plan.loss_block,
                          "choices": list(plan.reasons)}, **report}
  if exported is not None:
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(args)]
    report["mesh"] = {"data": n_devices, "devices": "abstract" if isinstance(mesh, AbstractMesh)
                      else f"{n_devices} local {jax.devices()[0].platform} devices"}
    report["shardings"] = _shardings(exported, names)
  return report


# ----------------------------------------------------------------------------------------------
# The figures' kernels


def _eigen_matrices(w) -> dict:
  """The d_head × d_head matrices whose eigenvalues the figures take (on the host)."""
  mats = {"ov_full": circuits.ov_eigen_matrices(w), "qk_full": circuits.qk_eigen_matrices(w),
          "ov_plain": circuits.ov_eigen_matrices(w, full=False)}
  if w.n_layers >= 2:
    mats["k_composition"] = circuits.k_composition_qk_matrices(w, 0, 0)
  return mats


def _composition(w, key, n_samples: int = 256) -> dict:
  """Every composition score, and ``composition_baseline``'s device part (its random draws and
  pair scores; the function itself ends in a ``float()`` read)."""
  out = {f"{k}{'_permuted' if p else ''}": circuits.composition_scores(w, k, p)
         for k in circuits.COMPOSITION_KINDS for p in (False, True)}
  D, r = w.d_model, w.d_head
  draw = lambda k, s: jax.random.normal(k, (n_samples,) + s, jnp.float32)
  factors = [draw(k, s) for k, s in zip(jax.random.split(key, 4), ((D, r), (r, D)) * 2)]
  one = lambda a, b, c, d: circuits._pair_scores(  # pylint: disable=protected-access
      a[None], b[None], c[None], d[None], False)[0, 0]
  out["baseline_samples"] = jax.vmap(one)(*factors)
  return out


def _kernels(cfg, preset: str):
  """({family: [(kernel name, function, abstract args)]}, {family: host transfer}) at
  ``preset``'s figure shapes.

  The families are the jitted device parts of the analyses; what each figure does around them
  (NumPy statistics, ``float()`` reads, plotting) runs on the host.  The transfers that the
  analysis makes on purpose (eigensolves, scalar losses) are the second dict.
  """
  L, H, T, D, r = cfg.n_layers, cfg.n_heads, cfg.n_ctx, cfg.d_model, cfg.d_head
  w = jax.eval_shape(lambda: init_weights(cfg, jax.random.key(0)))
  tokens = lambda b, t=T: jax.ShapeDtypeStruct((b, t), jnp.int32)
  text = figure_config("induction_heads", preset).text_windows
  icl = figure_config("induction_formation", preset).icl_windows
  windows = figure_config("term_importance", preset).windows
  frozen = lambda b: jax.ShapeDtypeStruct((L, b, H, T, T), jnp.float32)
  pp_T = max(scores.icl_positions(T)) + 1  # the pattern-preserving pass stops at the late position
  # pylint: disable=protected-access
  frozen_run, recursion_step, first_order, term_window_bytes = (
      paths._frozen_run, paths._recursion_step, paths._first_order_losses, paths._window_bytes)
  chunk = items_per_chunk(term_window_bytes(cfg, T), windows)
  scales = jax.ShapeDtypeStruct((L + 1, chunk, T, 1), jnp.float32)
  layer_outputs = jax.ShapeDtypeStruct((L, chunk, T, D), jnp.float32)

  host = {"eigen_matrices": f"each [{L}, {H}, {r}, {r}] float32 output ({L * H * r * r * 4:,} "
                            "bytes) goes to the host for np.linalg.eigvals in float64",
          "term_importance": f"per chunk of {chunk} window(s): {2 * L + 2 + L * H} loss sums "
                             "per window are read to the host"}
  families = {
      "forward_patterns": [("forward_patterns", lambda w, x: forward(
          cfg, w, x, return_patterns=True, return_head_outputs=True), (w, tokens(text)))],
      "eigen_matrices": [("eigen_matrices", _eigen_matrices, (w,))],
      "composition": [("composition", _composition,
                       (w, jax.ShapeDtypeStruct((), jax.random.key(0).dtype)))],
      "path_expansion": [("path_expansion", lambda w, x: paths.path_expansion(cfg, w, x),
                          (w, tokens(1)))],
      "term_importance": [  # one chunk of windows, as paths.term_importance runs them
          ("term_importance.frozen_run", functools.partial(frozen_run, cfg),
           (w, tokens(chunk), tokens(chunk))),
          ("term_importance.recursion_step", functools.partial(recursion_step, cfg),
           (w, tokens(chunk), tokens(chunk), frozen(chunk), scales, layer_outputs)),
          ("term_importance.first_order", functools.partial(first_order, cfg),
           (w, tokens(chunk), tokens(chunk), frozen(chunk), scales,
            jax.ShapeDtypeStruct((L * H, r, cfg.d_vocab), jnp.float32)))],
      "icl_losses": [("icl_losses", lambda w, x, y: scores.position_losses(
          cfg, w, x, y, scores.icl_positions(T)), (w, tokens(icl), tokens(icl)))],
      "pattern_preserving": [("pattern_preserving", _pattern_preserving_kernel(cfg, icl),
                              (w, tokens(icl, pp_T), tokens(icl, pp_T)))],
      "positional": [("positional", lambda w: circuits.positional_attention(w, T), (w,))],
      "skip_trigrams": [("skip_trigrams", lambda w, src: circuits.skip_trigrams(w, src, 3),
                         (w, jax.ShapeDtypeStruct((8,), jnp.int32)))],
  }
  if L == 0:  # a bigram model: no heads, so only the forward
    families = {"forward_patterns": families["forward_patterns"]}
  return families, host


def _pattern_preserving_kernel(cfg, windows: int):
  """The jitted part of ``scores.pattern_preserving_losses`` as the ablation figures call it:
  every head ablated alone (and the model itself), losses at the ICL score's two positions."""
  L, H = cfg.n_layers, cfg.n_heads
  groups = [()] + [((l, h),) for l in range(L) for h in range(H)]
  positions = tuple(scores.icl_positions(cfg.n_ctx))
  T = max(positions) + 1
  starts, keep = ablations.group_masks(groups, L, H)
  chunk = items_per_chunk(ablations.pattern_preserving_window_bytes(cfg, T), windows)
  # pylint: disable-next=protected-access
  return lambda w, x, y: ablations._pattern_preserving_losses(cfg, w, x, y, positions, starts,
                                                              jnp.asarray(keep), chunk)


FIGURE_KERNELS = {  # figure → kernel families it runs on the device (the rest is host NumPy)
    "bigram": (), "skip_trigrams": ("skip_trigrams",), "positional_heads": ("positional",),
    "ov_eigenvalues": ("eigen_matrices",), "eigen_hist": ("eigen_matrices",),
    "composition_scores": ("composition",), "induction_attention": ("forward_patterns",),
    "ov_qk_scatter": ("eigen_matrices", "forward_patterns"),
    "term_importance": ("term_importance",),
    "induction_formation": ("forward_patterns", "icl_losses"),
    "per_token_losses": ("forward_patterns", "icl_losses"),  # induction_formation's pass
    "smeared_keys": ("forward_patterns", "icl_losses"),  # induction_formation's pass
    "head_ablations": ("forward_patterns", "icl_losses", "pattern_preserving"),
    "ablations_over_training": ("pattern_preserving",), "induction_heads": ("forward_patterns",),
    "simplest_induction_head": (),  # a hand-built model, not one of the preset's
}


def export_figures(preset: str, platform: str, figures=None,
                   log: Callable[[str], None] = lambda line: None) -> dict:
  """Exports the device kernels of every figure of ``--all --preset=<preset>`` (or ``figures``)
  for ``platform``, once per (model, kernel family), plus ``path_expansion`` (no figure uses
  it; exported for attn2l); returns the JSON report.  Eigensolves are not device kernels: the
  circuits compute them on the host in NumPy, which is reported with the matrices' size, and
  ``device_eig`` records whether ``jnp.linalg.eigvals`` itself would lower for ``platform``."""
  platform = platform_name(platform)
  host, kernels, done, built, by_figure = [], [], {}, {}, {}

  def model_kernels(model, family):
    if model not in built:
      built[model] = _kernels(ModelConfig.from_any(load_config(f"{model}:{preset}")), preset)
    families, transfers = built[model]
    key = (model, family)
    if key not in done:
      if family in transfers and family in families:
        host.append(f"{model} {family}: {transfers[family]}")
        log(host[-1])
      done[key] = []
      for name, fn, args in families.get(family, []):
        report, _ = export_kernel(name, fn, args, platform)
        report["model"] = model
        log(f"{model} {name}: " + ("exported" if report["lowered"] else report["error"]))
        kernels.append(report)
        done[key].append(report)
    return done[key]

  for figure in figures or figure_names():
    models = figure_config(figure, preset).models
    reports = [r for m in models for f in FIGURE_KERNELS[figure] for r in model_kernels(m, f)]
    by_figure[figure] = {"models": list(models), "all_lowered": all(r["lowered"] for r in reports),
                         "kernels": sorted({f"{r['model']}:{r['kernel']}" for r in reports})
                         or "none: host NumPy only"}
  if figures is None:
    model_kernels("attn2l", "path_expansion")
  cfg = ModelConfig.from_any(load_config(f"attn1l:{preset}"))
  mats = jax.ShapeDtypeStruct((cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_head), jnp.float32)
  device_eig, _ = export_kernel("jnp.linalg.eigvals", jnp.linalg.eigvals, (mats,), platform)
  return {"export": "figure_kernels", "preset": preset, "platform": platform,
          "jax": jax.__version__, "all_lowered": all(r["lowered"] for r in kernels),
          "figures": by_figure, "kernels": kernels, "host_transfers": host,
          "device_eig": {k: device_eig[k] for k in ("lowered", "error", "custom_calls")
                         if k in device_eig}}


def main(config, platform: str, n_devices: int = 1, figures_preset: Optional[str] = None,
         log: Callable[[str], None] = lambda line: None) -> dict:
  """The ``bench export`` command: the figures' kernels at ``figures_preset`` when given,
  otherwise ``config``'s training step."""
  if figures_preset:
    return export_figures(figures_preset, platform, log=log)
  if config is None:
    raise ValueError("export needs --config (a training step) or --figures=PRESET")
  return export_train_step(config, platform, n_devices)
