"""reproduce.bench.export: exports for accelerators from this CPU-only host: the training step and
every figure's kernels lower for cuda and tpu, serialise, and deserialise with the same shapes."""

import jax
import jax.numpy as jnp
import pytest

from reproduce.bench import export
from reproduce.config import load_config
from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import init_weights
from reproduce.figure.runner import figure_names


HAS_CUDA_PLUGIN = export.cuda_plugin() is not None  # jax[cuda12]: the cuDNN branch exports


def _config(variant="test", **train):
  c = load_config(f"attn2l:{variant}")
  c.unlock()
  c.train.update(train)
  c.lock()
  return c


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_test_step_exports_over_two_devices(platform):
  # cuDNN attention lowers only over real (here CPU) devices: as many as this process has
  n = len(jax.devices()) if platform == "cuda" and HAS_CUDA_PLUGIN else 2
  r = export.export_train_step(_config(), platform, n_devices=n)
  assert r["lowered"] and r["error"] is None, r["error"]
  assert r["round_trip_same_shapes"]
  assert r["serialized_bytes"] > 0 and r["platform"] == platform
  assert r["shardings"]["state"] == ["P()"] and r["shardings"]["inputs"] == ["P('data',)"]
  assert r["step_plan"]["compute_dtype"] == "bfloat16"
  if platform == "tpu":
    assert r["attention"] == "explicit" and r["custom_calls"] == []
  elif HAS_CUDA_PLUGIN:  # jax[cuda12] installed: cuDNN's kernel is in the exported step
    assert r["attention"] == "cudnn"
    assert "__cudnn$fmhaSoftmaxBackward" in r["custom_calls"]
  else:  # the cuDNN probe could not export: XLA's attention, and the reason is logged
    assert r["attention"] == "xla"
    assert any("cuDNN attention did not export" in c for c in r["step_plan"]["choices"])


def test_round_trip_gives_the_shapes_of_the_traced_kernel():
  cfg = ModelConfig(2, 2, 8, 16, 300, 32)
  w = jax.eval_shape(lambda: init_weights(cfg, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((3, 32), jnp.int32)
  fn = lambda w, x: forward(cfg, w, x, return_patterns=True)
  traced = jax.eval_shape(fn, w, tokens)
  expected = sorted((tuple(a.shape), a.dtype) for a in jax.tree.leaves(traced))
  for platform in ("cuda", "tpu"):
    report, exported = export.export_kernel("forward", fn, (w, tokens), platform)
    assert report["lowered"], report["error"]
    back = jax.export.deserialize(exported.serialize())
    assert back.platforms == (platform,)
    assert sorted((tuple(a.shape), a.dtype) for a in back.out_avals) == expected


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_every_figure_kernel_exports(platform):
  r = export.export_figures("test", platform)
  assert r["all_lowered"], [k["error"] for k in r["kernels"] if not k["lowered"]]
  assert set(r["figures"]) == set(figure_names())
  names = {k["kernel"] for k in r["kernels"]}
  assert {"forward_patterns", "eigen_matrices", "composition", "path_expansion",
          "term_importance.recursion_step"} <= names
  assert all(k["round_trip_same_shapes"] for k in r["kernels"])
  assert any("np.linalg.eigvals" in line for line in r["host_transfers"])
  # Why the eigensolves stay on the host: JAX's eig has no TPU lowering, and on cuda it is a
  # custom call without an export guarantee.
  assert not r["device_eig"]["lowered"] and platform in r["device_eig"]["error"]


def test_unsupported_choices_name_the_platform_and_the_op_in_one_line():
  with pytest.raises(export.UnsupportedChoice) as e:
    export.export_train_step(_config(attention="cudnn"), "tpu")
  message = str(e.value)
  assert "\n" not in message and "tpu" in message and "cudnn" in message
  mats = jax.ShapeDtypeStruct((2, 4, 4), jnp.float32)
  report, exported = export.export_kernel("eigvals", jnp.linalg.eigvals, (mats,), "tpu")
  assert exported is None and "\n" not in report["error"]
  assert "tpu" in report["error"] and "'eig'" in report["error"]
  with pytest.raises(export.UnsupportedChoice, match="--platform=rocm"):
    export.platform_name("rocm")


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_paper_step_and_figures_export(platform):
  n = len(jax.devices()) if platform == "cuda" and HAS_CUDA_PLUGIN else 8
  r = export.export_train_step(_config("paper"), platform, n_devices=n)
  assert r["lowered"] and r["round_trip_same_shapes"], r["error"]
  assert r["step_plan"]["micro_batches"] == (1 if r["attention"] == "cudnn" else 4)
  figures = export.export_figures("paper", platform)
  assert figures["all_lowered"], [k["error"] for k in figures["kernels"] if not k["lowered"]]
