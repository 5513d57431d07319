"""Splitting the host CPU into JAX devices: the automatic count, overrides, and what is left alone.

Each case runs in a fresh interpreter: the count can only be set before JAX starts its backend,
and this test process's backend must keep its own devices."""

import os
import subprocess
import sys

import pytest

from reproduce.host import auto_cpu_devices, cpu_description, split_cpu
from tests.support.paths import ROOT


def test_auto_count_is_one_per_core_as_a_power_of_two_up_to_8():
  assert [auto_cpu_devices(c) for c in (1, 2, 3, 4, 6, 8, 16, 64)] == [1, 2, 2, 4, 4, 8, 8, 8]


def test_bad_request_is_refused():
  for bad in ("0", "-2", "two"):
    with pytest.raises(ValueError, match="--cpu_devices"):
      split_cpu(bad, log=None)


def test_description_names_cores():
  assert "usable cores" in cpu_description()


def _run(code, **env):
  environment = {k: v for k, v in os.environ.items()
                 if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")} | env
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  return out.stdout.strip().splitlines()


SPLIT = ("import jax\nfrom reproduce.host import split_cpu\nprint(split_cpu({!r}, log=print))\n"
         "print(len(jax.devices()))")


def test_a_count_is_set_before_jax_starts():
  lines = _run(SPLIT.format("3"))
  assert lines[-2:] == ["3", "3"] and "3 JAX CPU devices" in lines[0]


@pytest.mark.slow  # two interpreters
def test_a_count_the_user_set_is_left_alone():
  lines = _run(SPLIT.format("auto"), JAX_NUM_CPU_DEVICES="3")
  assert lines[-2:] == ["None", "3"] and "$JAX_NUM_CPU_DEVICES" in lines[0]
  lines = _run(SPLIT.format("auto"), XLA_FLAGS="--xla_force_host_platform_device_count=5")
  assert lines[-2:] == ["None", "5"]


@pytest.mark.slow
def test_a_running_backend_keeps_its_devices():
  lines = _run("import jax\njax.devices()\n" + SPLIT.format("4").split("\n", 1)[1])
  assert lines[-2:] == ["None", "1"] and "already started" in lines[0]


@pytest.mark.slow  # a command start; the parse in process: test_bad_request_is_refused
def test_cli_refuses_a_bad_count_in_one_line():
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--list", "--cpu_devices=0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
  assert "--cpu_devices" in out.stderr
