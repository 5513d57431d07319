"""The host CPU: what it is, and how many JAX devices training splits it into.

XLA's CPU backend runs one program on a shared thread pool, and at the cpu presets' widths
(d_model 128, d_head 32) its small matmuls and fusions scale badly across threads: a second core
leaves one step's ops mostly waiting on each other.  Split into one JAX device per core, the
training step runs data-parallel (one ``psum`` of the gradients per step) and each core works on
its own rows, so every core stays busy (docs/SPEED.md).  Analysis code still runs on
device 0 with every core available to its matmuls.

The split must happen before JAX starts its CPU backend, so the command-line entry points call
``split_cpu`` first thing; library users can call it right after ``import jax``.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import jax

CPU_DEVICES_HELP = ("JAX CPU devices to split this machine into, training data-parallel over "
                    "them: auto (one per core, at most 8) or N")
MAX_AUTO_DEVICES = 8  # measured on 2 cores only; more devices than this are left to --cpu_devices


def usable_cores() -> int:
  """Cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def cpu_name_and_flags():
  """(model name, frozenset of /proc/cpuinfo flags) of the first CPU, read once per process;
  ("unknown CPU", ∅) elsewhere."""
  name, flags = "unknown CPU", frozenset()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown CPU":
          name = " ".join(value.split())
        elif key.strip() == "flags" and not flags:
          flags = frozenset(value.split())
        if flags and name != "unknown CPU":  # the first CPU's entry is enough
          break
  except OSError:
    pass
  return name, flags


def cpu_has_amx() -> bool:
  """Whether the CPU has AMX bfloat16 tiles (Intel Sapphire Rapids and later), where XLA's
  bfloat16 products run several times faster than float32 ones at the cpu presets' widths
  (docs/SPEED.md)."""
  return "amx_bf16" in cpu_name_and_flags()[1]


def cpu_has_avx512_bf16() -> bool:
  """Whether the CPU has AVX512-BF16 dot products (e.g. AMD Zen 4 and Zen 5 without AMX): XLA's
  bfloat16 products there make the cpu presets' training step about 1.4× faster than float32
  ones (docs/PERFORMANCE.md, "Training against TransformerLens")."""
  return "avx512_bf16" in cpu_name_and_flags()[1]


def cpu_description() -> str:
  """One line: model name, usable cores, and the vector/matrix units that matter here."""
  name, flags = cpu_name_and_flags()
  units = [label for flag, label in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                      ("amx_bf16", "AMX"), ("avx2", "AVX2")) if flag in flags]
  if "AVX-512" in units:
    units.remove("AVX2")
  return f"{name}, {usable_cores()} usable cores" + (f" ({', '.join(units)})" if units else "")


def auto_cpu_devices(cores: int) -> int:
  """One device per core, at most ``MAX_AUTO_DEVICES``, rounded down to a power of two (so it
  divides the usual batch sizes)."""
  n = 1
  while n * 2 <= min(cores, MAX_AUTO_DEVICES):
    n *= 2
  return n


def split_cpu(requested: str = "auto", distributed: bool = False,
              log: Optional[Callable[[str], None]] = print) -> Optional[int]:
  """Sets JAX's number of CPU devices before its backend starts; returns the number set, or
  None where it was left alone (a count already fixed by ``$JAX_NUM_CPU_DEVICES`` or
  ``XLA_FLAGS``, or a backend already running).

  ``requested``: "auto" (``auto_cpu_devices`` of the usable cores; 1 in a multi-process job,
  whose processes may share a machine) or a positive integer.  Only CPU devices change: on a
  GPU/TPU host training uses the accelerators as before.
  """
  say = log or (lambda _: None)
  if requested != "auto" and (not str(requested).isdigit() or int(requested) < 1):
    raise ValueError(f"--cpu_devices must be 'auto' or a positive integer, got {requested!r}")
  if requested == "auto":
    fixed = None
    if os.environ.get("JAX_NUM_CPU_DEVICES"):
      fixed = "$JAX_NUM_CPU_DEVICES"
    elif "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
      fixed = "XLA_FLAGS"
    if fixed:
      say(f"host: {cpu_description()}; CPU device count set by {fixed}")
      return None
    n = 1 if distributed else auto_cpu_devices(usable_cores())
    why = "one process of several" if distributed else "one per core"
  else:
    n, why = int(requested), "--cpu_devices"
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # JAX already runs: its device count stays
    say(f"host: {cpu_description()}; JAX already started, CPU devices left as they are")
    return None
  say(f"host: {cpu_description()}; {n} JAX CPU device{'s' if n > 1 else ''} ({why})"
      + ("; training runs data-parallel over them" if n > 1 else "")
      + ("" if requested != "auto" else "; --cpu_devices=N to change"))
  return n
