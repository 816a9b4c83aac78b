"""The JAX side of ``experiments/benchmark.py``: the real train / eval steps of one model compiled
on a fixed synthetic batch (``JaxBench``), the recipe-like config they are built from, memory
and FLOP read-outs, and the input pipeline's throughput for the model's dataset family.

Kept apart from the driver so that it can be used from a notebook:

    from experiments.bench_jax import JaxBench
    b = JaxBench("resnet20", batch_size=128, image_size=32, dtype="float32")
    b.train(10)      # {"seconds": ..., "cpu_seconds": ..., "images": 1280}
"""
from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time

DATASET_FOR_FAMILY = {"lenet": "mnist", "resnet_cifar": "cifar10"}   # else imagenet2012


def dataset_for(model_name: str, image_size: int) -> tuple[str, str | None]:
  """(dataset name, preprocess) that feed ``model_name`` in the recipes."""
  from cnnlab import models
  name = DATASET_FOR_FAMILY.get(models.info(model_name).family, "imagenet2012")
  pre = "lenet1998" if name == "mnist" and image_size == 32 else None
  return name, pre


def train_config(model_name: str, batch_size: int, image_size: int, dtype: str):
  """A recipe-like config: SGD momentum 0.9, L2 weight decay 1e-4, constant lr."""
  from experiments.configs.base import base
  c = base()
  c.model.name = model_name
  c.model.dtype = dtype
  c.dataset.name, pre = dataset_for(model_name, image_size)
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
  recipe-like optimizer, the pure train/eval steps and the state initialiser."""

  def __init__(self, model_name: str, batch_size: int, image_size: int, dtype: str):
    import jax
    from cnnlab import models
    from cnnlab.training import optim, steps, validation
    from cnnlab.training.state import create_state
    self.config = train_config(model_name, batch_size, image_size, dtype)
    self.model = validation.build_model(self.config)
    self.num_classes = self.model.num_classes
    self.batch_size = batch_size
    self.image_shape = (image_size, image_size, models.info(model_name).input_shape[-1])
    schedule = optim.create_schedule(self.config, 1000, 100_000)
    tx = optim.create_optimizer(self.config, schedule)
    self.init = lambda: create_state(self.model, tx, jax.random.PRNGKey(0),  # noqa: E731
                                     self.image_shape)
    self.train_step = steps.make_train_step(self.model, tx, self.config, schedule)
    self.eval_step = steps.make_eval_step(self.model)

  def abstract_batch(self, mask: bool = False) -> dict:
    import jax
    import jax.numpy as jnp
    b = {"image": jax.ShapeDtypeStruct((self.batch_size, *self.image_shape), jnp.float32),
         "label": jax.ShapeDtypeStruct((self.batch_size,), jnp.int32)}
    if mask:
      b["mask"] = jax.ShapeDtypeStruct((self.batch_size,), jnp.bool_)
    return b

  def eval_shape(self):
    """(state, train metrics, eval outputs) as shapes: traces everything, compiles nothing."""
    import jax
    state = jax.eval_shape(self.init)
    new_state, metrics = jax.eval_shape(self.train_step, state, self.abstract_batch())
    outs = jax.eval_shape(self.eval_step, state, self.abstract_batch(mask=True))
    return new_state, metrics, outs


class JaxBench:
  """The real train/eval steps of one model, compiled, on a fixed synthetic batch."""

  def __init__(self, model_name: str, batch_size: int, image_size: int, dtype: str):
    import jax
    import numpy as np
    from cnnlab import parallel
    from cnnlab.training import steps
    self.jax = jax
    setup = Setup(model_name, batch_size, image_size, dtype)
    self.config = setup.config
    self.num_classes = setup.num_classes
    mesh = parallel.create_mesh()
    repl = parallel.replicated(mesh)
    sharding = jax.tree.map(lambda _: repl, jax.eval_shape(setup.init))
    self.state = jax.jit(setup.init, out_shardings=sharding)()
    p_train, p_eval = steps.jit_steps(mesh, setup.train_step, setup.eval_step, sharding)
    rng = np.random.default_rng(0)
    host = {"image": rng.standard_normal((batch_size, *setup.image_shape), np.float32),
            "label": rng.integers(0, self.num_classes, batch_size).astype(np.int32)}
    self.batch = parallel.shard_batch(mesh, host)
    self.eval_batch = parallel.shard_batch(mesh, {**host, "mask": np.ones(batch_size, bool)})
    self.batch_size = batch_size
    self.sync = parallel.needs_step_sync(mesh)   # the loop's per-step sync on multi-device CPU
    t0 = time.perf_counter()
    self.train_fn = p_train.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.devices = mesh.size
    # XLA's cost analysis of a partitioned program counts one device's share.
    self.flops = _flops(self.train_fn) * mesh.size
    self.eval_fn = p_eval.lower(self.state, self.eval_batch).compile()

  def train(self, steps: int) -> dict:
    pending = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      self.state, m = self.train_fn(self.state, self.batch)
      pending.append(m)
      if self.sync:
        self.jax.block_until_ready(self.state)
    self.jax.device_get(pending)                     # metrics to the host: the round's sync
    self.jax.block_until_ready(self.state)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch_size}

  def eval(self, steps: int) -> dict:
    outs = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      outs.append(self.eval_fn(self.state, self.eval_batch))
      if self.sync:
        self.jax.block_until_ready(outs[-1])
    self.jax.device_get(outs)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch_size}


def _flops(compiled) -> float:
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) if cost else 0.0
  except Exception:  # not every backend implements cost analysis
    return 0.0


def device_peak_mb() -> float | None:
  import jax
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:
    stats = None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: kB


# --- the input pipeline -------------------------------------------------------------------------
def _synthetic_data_dir(dataset: str, root: str) -> str:
  """Writes small raw files in the dataset's original format and prepares them with TFDS."""
  from cnnlab.data import prepare, synthetic
  raw, data_dir = os.path.join(root, "raw"), os.path.join(root, "tfds")
  if dataset == "mnist":
    sums = synthetic.write_mnist(raw)
    prepare.prepare("mnist", raw, data_dir, checksums=sums, max_examples_per_split=4096)
  elif dataset == "cifar10":
    sums = synthetic.write_cifar(raw, "cifar10", n_train=4096, n_test=256)
    prepare.prepare("cifar10", raw, data_dir, checksums=sums)
  else:   # photo-like JPEGs of ImageNet's typical size, so decoding costs what it really does
    sums = synthetic.write_imagenet(raw, classes=4, per_class=24, n_val=8,
                                    size_range=(300, 500), solid=False)
    prepare.prepare("imagenet2012", raw, data_dir, checksums=sums)
  return data_dir


def pipeline_throughput(model_name: str, batch_size: int, image_size: int,
                        data_dir: str | None, num_batches: int) -> dict:
  import tensorflow_datasets as tfds
  from cnnlab.data import datasets, pipeline
  tfds.disable_progress_bar()
  name, pre = dataset_for(model_name, image_size)
  source = "synthetic"
  with tempfile.TemporaryDirectory(prefix="cnnlab_bench_") as tmp:
    use_dir = None
    if data_dir:
      try:
        datasets.builder(datasets.get(name), data_dir)
        use_dir, source = data_dir, data_dir
      except datasets.DatasetUnavailableError:
        pass
    if use_dir is None:
      with contextlib.redirect_stdout(sys.stderr):   # TFDS prints its progress to stdout
        use_dir = _synthetic_data_dir(name, tmp)
    over = {"data_dir": use_dir, "shuffle_buffer": 256}
    if pre:
      over["preprocess"] = pre
    if name == "imagenet2012":
      over["image_size"] = image_size
    cfg = pipeline.make_config(name, **over)
    rate = pipeline.measure_throughput(cfg, global_batch_size=batch_size,
                                       num_batches=num_batches, warmup=3)
  return {"pipeline_dataset": name, "pipeline_source": source, "pipeline_img_s": rate}
