"""The JAX side of the benchmark: the engine's real train / eval steps of one model, compiled on a
fixed synthetic batch already on the device, with XLA's FLOP and memory read-outs.

    from cnnlab.bench.jax_side import JaxBench
    b = JaxBench("resnet20", batch_size=128, input_shape=(32, 32, 3), dtype="float32")
    b.train(10)      # {"seconds": ..., "cpu_seconds": ..., "images": 1280}

Nothing here imports TensorFlow: the steps come from ``cnnlab.training.steps`` and the model
registry only (the input pipeline's throughput lives in ``cnnlab.bench.pipeline``).
"""
from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab import config, models, parallel, platform
from cnnlab.training import builders, optim, steps, tasks
from cnnlab.training.state import create_state

DATASET_FOR_FAMILY = {"lenet": "mnist", "resnet_cifar": "cifar10"}   # images: else imagenet2012


def spatial_rank(model_name: str) -> int:
  """Spatial dimensions of the model's documented input (ModelInfo.input_shape minus channels)."""
  return len(models.info(model_name).input_shape) - 1


def input_shape(model_name: str, size: int = 0, shape=None) -> tuple[int, ...]:
  """The per-example input shape, channels last: ``shape`` if given; else ModelInfo.input_shape
  with ``size`` (when > 0) replacing the length of a 1-D signal or the height and width of an
  image or volume / video (the depth / time axis of a 3-D input stays as documented)."""
  base = tuple(models.info(model_name).input_shape)
  if shape:
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(base) or min(shape) < 1 or shape[-1] != base[-1]:
      raise ValueError(f"input shape {shape} does not fit {model_name!r}, which takes "
                       f"{len(base) - 1}-D inputs with {base[-1]} channels like {base}")
    return shape
  if size <= 0:
    return base
  spatial = list(base[:-1])
  for i in range(max(0, len(spatial) - 2), len(spatial)):
    spatial[i] = int(size)
  return (*spatial, base[-1])


def dataset_for(model_name: str, image_size: int) -> tuple[str | None, str | None]:
  """(dataset name, preprocess) that feed an image model in the recipes; (None, None) for 1-D
  and 3-D models, whose input pipelines the benchmark does not measure."""
  if spatial_rank(model_name) != 2:
    return None, None
  name = DATASET_FOR_FAMILY.get(models.info(model_name).family, "imagenet2012")
  pre = "lenet1998" if name == "mnist" and image_size == 32 else None
  return name, pre


def train_config(model_name: str, batch_size: int, image_size: int, dtype: str):
  """A recipe-like config: SGD momentum 0.9, L2 weight decay 1e-4, constant lr; the model's
  documented class count (so no dataset catalogue is consulted)."""
  c = config.defaults()
  c.model.name = model_name
  c.model.dtype = dtype
  c.model.num_classes = models.info(model_name).num_classes
  dataset, pre = dataset_for(model_name, image_size)
  c.dataset.name = dataset or "imagenet2012"   # unused by the steps; the recipes' default
  if pre:
    c.dataset.preprocess = pre
  c.batch_size = batch_size
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = "l2"
  c.aux_loss_weight = 0.3 if model_name == "googlenet" else 0.0
  return c


class Setup:
  """Everything the benchmark runs for one model, before anything is compiled: the model, the
  recipe-like optimizer, the engine's pure train/eval steps and the state initialiser — built
  the way a training run builds them (cnnlab.config specs, cnnlab.training.builders)."""

  def __init__(self, model_name: str, batch_size: int, shape, dtype: str,
               kernels: str = "auto"):
    self.input_shape = tuple(shape)
    self.config = train_config(model_name, batch_size, self.input_shape[-2], dtype)
    self.optim, sched, self.train_spec = config.resolve_optimization(
        self.config, global_batch=batch_size, steps_per_epoch=1000, total_steps=100_000)
    # "auto": what a run on this process decides (cnnlab.config.choose_kernels).
    devices = platform.describe(probe_onednn=kernels in ("auto", "cpu+onednn"))
    self.kernels, self.kernels_why = config.choose_kernels(kernels, devices)
    self.task = models.info(model_name).task
    self.model = builders.model(config.ModelSpec(
        name=model_name, kwargs={}, dtype=dtype, num_classes=self.config.model.num_classes,
        input_shape=self.input_shape, kernels=self.kernels, task=self.task), check_input=False)
    self.num_classes = self.model.num_classes
    self.batch_size = batch_size
    schedule = optim.create_schedule(sched)
    tx = optim.create_optimizer(self.optim, schedule, sched)
    self.init = lambda: create_state(self.model, tx, jax.random.PRNGKey(0),  # noqa: E731
                                     self.input_shape)
    task = tasks.get(self.task)
    self.train_step = steps.make_train_step(self.model, tx, self.train_spec, self.optim,
                                            schedule, task)
    self.eval_step = steps.make_eval_step(self.model, task=task)

  def label_shape(self) -> tuple[int, ...]:
    """Labels per example (classification) or per pixel / voxel (segmentation)."""
    return (self.batch_size, *self.input_shape[:-1]) if self.task == "segment" \
        else (self.batch_size,)

  def abstract_batch(self, mask: bool = False) -> dict:
    b = {"image": jax.ShapeDtypeStruct((self.batch_size, *self.input_shape), jnp.float32),
         "label": jax.ShapeDtypeStruct(self.label_shape(), jnp.int32)}
    if mask:
      b["mask"] = jax.ShapeDtypeStruct((self.batch_size,), jnp.bool_)
    return b

  def eval_shape(self):
    """(state, train metrics, eval outputs) as shapes: traces everything, compiles nothing."""
    state = jax.eval_shape(self.init)
    new_state, metrics = jax.eval_shape(self.train_step, state, self.abstract_batch())
    outs = jax.eval_shape(self.eval_step, state, self.abstract_batch(mask=True))
    return new_state, metrics, outs


class JaxBench:
  """The real train/eval steps of one model, compiled, on a fixed synthetic batch on the device.

  The train step is the engine's: BatchNorm in train mode, L2 weight decay, SGD with momentum,
  the finiteness guard and the per-step metrics, jitted by ``steps.jit_train_step`` with the state
  donated. A timed call dispatches its steps back to back and syncs once at the end."""

  def __init__(self, model_name: str, batch_size: int, input_shape, dtype: str, *,
               with_eval: bool = True, kernels: str = "auto"):
    self.jax = jax
    setup = Setup(model_name, batch_size, input_shape, dtype, kernels)
    self.config, self.num_classes, self.kernels = setup.config, setup.num_classes, setup.kernels
    self.task = setup.task
    self.optim, self.train_spec = setup.optim, setup.train_spec
    mesh = parallel.create_mesh()
    repl = parallel.replicated(mesh)
    sharding = jax.tree.map(lambda _: repl, jax.eval_shape(setup.init))
    self.state = jax.jit(setup.init, out_shardings=sharding)()
    p_train = steps.jit_train_step(mesh, setup.train_step, sharding)
    p_eval = steps.jit_eval_step(mesh, setup.eval_step, sharding)
    rng = np.random.default_rng(0)
    host = {"image": rng.standard_normal((batch_size, *setup.input_shape), np.float32),
            "label": rng.integers(0, self.num_classes, setup.label_shape()).astype(np.int32)}
    self.batch = parallel.shard_batch(mesh, host)
    self.batch_size = batch_size
    self.sync = parallel.needs_step_sync(mesh)   # the loop's per-step sync on multi-device CPU
    t0 = time.perf_counter()
    lowered = p_train.lower(self.state, self.batch)
    t1 = time.perf_counter()
    self.train_fn = lowered.compile()
    self.lower_s, self.compile_s = t1 - t0, time.perf_counter() - t0
    self.devices = mesh.size
    # XLA's cost analysis of a partitioned program counts one device's share. The count on
    # the program as traced (before XLA's GPU passes turn convolutions into library calls) is
    # kept beside it as a cross-check.
    self.flops = xla_flops(self.train_fn) * mesh.size
    self.flops_hlo = xla_flops(lowered)
    self.memory = step_memory(self.train_fn)
    self.eval_fn = None
    if with_eval:
      self.eval_batch = parallel.shard_batch(mesh, {**host, "mask": np.ones(batch_size, bool)})
      self.eval_fn = p_eval.lower(self.state, self.eval_batch).compile()

  def train(self, steps: int) -> dict:
    pending = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      self.state, m = self.train_fn(self.state, self.batch)
      pending.append(m)
      if self.sync:
        self.jax.block_until_ready(self.state)
    host = self.jax.device_get(pending)              # metrics to the host: the round's sync
    self.jax.block_until_ready(self.state)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    # The engine's guard skips a non-finite step (state unchanged): timing skipped steps would
    # mislead, so every round says whether all its steps were finite.
    return {"seconds": seconds, "cpu_seconds": cpu, "images": steps * self.batch_size,
            "finite": all(int(m["finite"]) for m in host)}

  def eval(self, steps: int) -> dict:
    if self.eval_fn is None:
      raise RuntimeError("this JaxBench was built with with_eval=False")
    outs = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      outs.append(self.eval_fn(self.state, self.eval_batch))
      if self.sync:
        self.jax.block_until_ready(outs[-1])
    self.jax.device_get(outs)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch_size}


def xla_flops(program) -> float:
  """FLOPs of one call of a lowered or compiled program by XLA's cost analysis (0.0 where
  unavailable)."""
  try:
    cost = program.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) if cost else 0.0
  except Exception:  # not every backend implements cost analysis
    return 0.0


def step_memory(compiled) -> dict | None:
  """XLA's own account of one call's device memory, in MiB: arguments, outputs, temporaries,
  the donated bytes it reuses (alias), and their total."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend reports it
    m = None
  if m is None:
    return None
  mib = {k: getattr(m, f"{k}_size_in_bytes", 0) / 2**20
         for k in ("argument", "output", "temp", "alias", "generated_code")}
  mib["total"] = mib["argument"] + mib["output"] + mib["temp"] - mib["alias"]
  peak = getattr(m, "peak_memory_in_bytes", 0)
  if peak:
    mib["peak"] = peak / 2**20
  return mib


def device_peak_mb() -> float | None:
  """The first local device's peak bytes in use since the process started (GPU/TPU), MiB."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:
    stats = None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: kB
