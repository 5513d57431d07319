"""The pure training step: AdamW on the mean next-token loss, data-parallel over a 1-D device
mesh, with gradient accumulation over micro-batches; and the pieces it is built from (the
schedule, the optimiser, the initial weights, the mesh and the batch placement)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reproduce.core.kernels import largest_divisor_at_most
from reproduce.core.model import ModelConfig, mean_loss
from reproduce.core.module import AttentionOnlyTransformer
from reproduce.core.weights import Weights
from reproduce.data import batches
from reproduce.train.plan import StepPlan, plan_step

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  step: jax.Array
  weights: Weights
  opt_state: Any


def learning_rate_schedule(t) -> optax.Schedule:
  """Linear warmup to ``lr``, constant, then cosine to ``lr·final_lr_fraction`` over the last
  ``decay_fraction`` of the steps after warmup (``decay_fraction=1``: plain warmup + cosine)."""
  warmup = min(t.warmup_steps, t.steps)
  decay = max(1, int(round(t.decay_fraction * (t.steps - warmup))))
  constant = t.steps - warmup - decay
  parts = [optax.linear_schedule(0.0, t.lr, warmup)] if warmup else []
  if constant > 0:
    parts.append(optax.constant_schedule(t.lr))
  parts.append(optax.cosine_decay_schedule(t.lr, decay, alpha=t.final_lr_fraction))
  boundaries = list(np.cumsum([warmup] * bool(warmup) + [constant] * (constant > 0)))
  return optax.join_schedules(parts, boundaries) if len(parts) > 1 else parts[0]


def constant_lr_span(t) -> tuple:
  """(first, last): the optimiser updates (0-based counts, the schedule's argument) that run at
  the peak ``t.lr``, after the warm-up and before the cosine moves it, as
  ``learning_rate_schedule`` builds them: the warm-up reaches ``lr`` at count ``warmup`` and the
  cosine's first count is still ``lr``.  ``t`` is the run's train config (any object or dict
  with its fields)."""
  get = (lambda k: t[k]) if isinstance(t, dict) else (lambda k: getattr(t, k))
  steps = int(get("steps"))
  warmup = min(int(get("warmup_steps")), steps)
  decay = max(1, int(round(float(get("decay_fraction")) * (steps - warmup))))
  constant = max(steps - warmup - decay, 0)
  return warmup, warmup + constant


def make_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW; a frozen (sinusoidal) W_pos gets no decay and no update."""
  t = config.train
  frozen_pos = config.model.pos_init == "sinusoidal"
  decay_mask = lambda w: dataclasses.replace(
      jax.tree.map(lambda _: True, w), W_pos=not frozen_pos)
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(learning_rate_schedule(t), b1=t.adam_b1, b2=t.adam_b2,
                  weight_decay=t.weight_decay, mask=decay_mask))


def initial_weights(config) -> Weights:
  """The state of the initial model (``AttentionOnlyTransformer.from_config``) as the weight
  pytree the step trains."""
  return AttentionOnlyTransformer.from_config(config).weights()


def train_step(config, tx: optax.GradientTransformation, plan: StepPlan, mesh: Mesh,
               state: TrainState, inputs, targets):
  """One AdamW step → (new state, {"loss", "grad_norm"}).  Pure; jitted by ``compile_train_step``.

  Each device takes its own rows of the batch (``shard_map`` over the mesh's ``data`` axis) and
  sums the gradients of ``plan.n_micro`` equal slices of them (slice j holds its rows j,
  j + n_micro, …); one ``psum`` after that loop adds the devices' sums, and the mean over all
  slices is the full-batch gradient.  Nothing inside the loop talks to another device (left to
  the SPMD partitioner, the loop gathered activations and reduced gradients at every slice).
  Weights, gradients and optimiser state are float32 whatever ``plan.compute_dtype``.
  """
  cfg = ModelConfig.from_any(config)
  frozen_pos = config.model.pos_init == "sinusoidal"
  n_micro = plan.n_micro
  dtype = None if plan.compute_dtype == "float32" else jnp.dtype(plan.compute_dtype)

  def loss_fn(weights, x, y):
    if frozen_pos:
      weights = weights.replace(W_pos=jax.lax.stop_gradient(weights.W_pos))
    return mean_loss(cfg, weights, x, y, plan.loss_block, compute_dtype=dtype,
                     attention=plan.attention)

  grad_fn = jax.value_and_grad(loss_fn)

  def device_sum(weights, inputs, targets):  # this device's rows → (Σ loss, Σ grads) everywhere
    if n_micro == 1:
      total = grad_fn(weights, inputs, targets)
    else:
      split = lambda a: a.reshape(-1, n_micro, a.shape[-1]).swapaxes(0, 1)

      def accumulate(total, xy):
        return jax.tree.map(jnp.add, total, grad_fn(weights, *xy)), None

      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, weights))
      total, _ = jax.lax.scan(accumulate, zeros, (split(inputs), split(targets)))
    return jax.lax.psum(total, "data")

  total = jax.shard_map(device_sum, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                        out_specs=P(), check_vma=False)(state.weights, inputs, targets)
  loss, grads = jax.tree.map(lambda a: a / (n_micro * mesh.size), total)
  updates, opt_state = tx.update(grads, state.opt_state, state.weights)
  weights = optax.apply_updates(state.weights, updates)
  return TrainState(state.step + 1, weights, opt_state), {
      "loss": loss, "grad_norm": optax.tree.norm(grads)}


def training_devices(batch_size: int, log: Callable[[str], None] = print) -> list:
  """Every device; in a one-process job with more devices than divide ``batch_size`` (say 8 CPU
  devices and a batch of 4), the most that do."""
  devices = jax.devices()
  if jax.process_count() > 1:
    return devices
  n = largest_divisor_at_most(batch_size, len(devices))
  if n < len(devices):
    log(f"training on {n} of {len(devices)} devices (train.batch_size {batch_size} is split "
        "evenly)")
  return devices[:n]


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (all processes' devices when launched multi-process)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def compile_train_step(config, tx, mesh: Mesh, plan: Optional[StepPlan] = None,
                       log: Optional[Callable[[str], None]] = None):
  """The jitted step: weights and optimiser state replicated, batch rows split over ``data``.

  ``plan`` defaults to ``plan_step`` for the mesh's platform; ``log`` receives its description.
  """
  replicated = NamedSharding(mesh, P())
  rows = NamedSharding(mesh, P("data"))
  if plan is None:
    plan = plan_step(config, mesh.size, mesh.devices.flat[0].platform)
  if log is not None:
    log(plan.describe())
  step = jax.jit(functools.partial(train_step, config, tx, plan, mesh),
                 in_shardings=(replicated, rows, rows), out_shardings=(replicated, replicated),
                 donate_argnums=0)
  if mesh.devices.flat[0].platform != "cpu" or mesh.size == 1:
    return step

  def one_step_at_a_time(state, inputs, targets):
    # Several CPU devices of one process meet in an in-process all-reduce; when the devices are
    # allowed to queue many steps ahead, the rendezvous can starve (seen: 40 steps queued on 2
    # devices hung every time; waiting every 5 steps never did).  Waiting for the previous step
    # costs nothing measurable (docs/SPEED.md), and the caller's host work (the next
    # batch) still overlaps the running step.
    jax.block_until_ready(state)
    return step(state, inputs, targets)
  one_step_at_a_time.lower = step.lower
  return one_step_at_a_time


def put_batch(mesh: Mesh, inputs: np.ndarray, targets: np.ndarray, local: bool = False):
  """Places a batch on the mesh, split by rows over the ``data`` axis.

  ``local=False``: ``inputs``/``targets`` are the whole global batch and each process keeps its
  own rows (``batches.process_rows``).  ``local=True``: they are already this process's rows (what
  ``batches.train_batch(..., rows=...)`` reads), so no host ever reads another's windows.
  """
  rows = NamedSharding(mesh, P("data"))
  n, i = jax.process_count(), jax.process_index()
  mine = slice(None) if local else batches.process_rows(inputs.shape[0], i, n)
  global_shape = (inputs.shape[0] * (n if local else 1),) + inputs.shape[1:]
  make = lambda x: jax.make_array_from_process_local_data(rows, x[mine], global_shape)
  return make(inputs), make(targets)


def abstract_step_inputs(config, tx: optax.GradientTransformation, mesh):
  """(state, inputs, targets) as ``jax.ShapeDtypeStruct``s of the step's shapes and shardings:
  the state replicated, the batch's rows split over ``data`` (``mesh`` may be abstract).  For
  compiling or exporting the step without allocating it."""
  replicated = NamedSharding(mesh, P())

  def state():
    w = initial_weights(config)
    return TrainState(jnp.zeros((), jnp.int32), w, tx.init(w))

  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                          jax.eval_shape(state))
  batch = jax.ShapeDtypeStruct((config.train.batch_size, config.model.n_ctx), jnp.int32,
                               sharding=NamedSharding(mesh, P("data")))
  return abstract, batch, batch
