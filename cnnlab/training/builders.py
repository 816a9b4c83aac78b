"""Small builders from a RunSpec: each makes one piece of a run. ``train_and_evaluate``,
``load_trained`` (evaluate / predict / visualize) and the benchmark assemble runs from them,
so every piece is built one way.

    spec = cnnlab.config.resolve(config)
    mesh = builders.mesh()
    model = builders.model(spec.model)
    opt = builders.optimizer(spec)                   # Optimizer(schedule, tx)
    init, shardings = builders.state(spec, model, opt.tx, mesh)
    train_step = builders.train_step(spec, model, opt, mesh, shardings)
    eval_step = builders.eval_step(spec, model, mesh, shardings)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import optax

from cnnlab import parallel, streams
from cnnlab.config import ModelSpec, RunSpec
from cnnlab.training import optim, steps
from cnnlab.training.state import TrainState, create_state

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def mesh(devices=None):
  """The ('data',) mesh over every device of every process."""
  return parallel.create_mesh(devices)


def model(spec: ModelSpec):
  """The linen module ``spec`` names (TypeError for kwargs the family does not take)."""
  from cnnlab import models
  kwargs = dict(spec.kwargs)
  if spec.kernels != "auto":   # else models.create chooses (kernels.select())
    from cnnlab.models import kernels
    kwargs["kernels"] = kernels.by_name(spec.kernels)
  return models.create(spec.name, num_classes=spec.num_classes, dtype=DTYPES[spec.dtype],
                       **kwargs)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  schedule: optax.Schedule                    # learning rate per step
  tx: optax.GradientTransformationExtraArgs
  frozen: tuple = ()                          # parameter paths that are not trained


def optimizer(spec: RunSpec, module=None) -> Optimizer:
  """The run's optimizer; with ``module``, partitioned for freeze / lr_groups / linear_probe
  (cnnlab/training/transfer.py). With online updates the optimizer counts examples, so its
  schedule is the per-step one read at example // batch."""
  from cnnlab.training import transfer
  schedule = optim.create_schedule(spec.schedule)
  per_update = schedule
  if spec.train.online_updates:
    batch = spec.loop.global_batch
    per_update = lambda n: schedule(n // batch)  # noqa: E731
  tx = optim.create_optimizer(spec.optim, per_update, spec.schedule)
  frozen = ()
  if module is not None:
    tx, frozen = transfer.plan_optimizer(tx, spec, module)
    tx = optax.with_extra_args_support(tx)
  return Optimizer(schedule, tx, tuple(frozen))


@dataclasses.dataclass(frozen=True)
class StateShardings:
  abstract: Any           # the state's shapes and dtypes (jax.ShapeDtypeStruct tree)
  sharding: Any           # its shardings (replicated)

  def with_sharding(self):
    """Abstract arrays carrying their shardings (what Orbax restores into)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract, self.sharding)


def state(spec: RunSpec, module, tx, mesh_) -> tuple[Callable[[], TrainState], StateShardings]:
  """(init: () -> a fresh replicated TrainState, its abstract shape and shardings)."""
  rng = streams.run_key(spec.seed)
  ema = spec.train.ema_decay > 0
  pure = lambda: create_state(module, tx, rng, spec.model.input_shape, ema=ema)  # noqa: E731
  abstract = jax.eval_shape(pure)
  repl = parallel.replicated(mesh_)
  shardings = StateShardings(abstract, jax.tree.map(lambda _: repl, abstract))
  return jax.jit(pure, out_shardings=shardings.sharding), shardings


def train_step(spec: RunSpec, module, opt: Optimizer, mesh_, shardings: StateShardings):
  if spec.train.online_updates:
    from cnnlab.training import online
    fn = online.from_spec(spec, module, opt.tx, opt.schedule)
  else:
    fn = steps.make_train_step(module, opt.tx, spec.train, spec.optim, opt.schedule)
  if spec.transfer.freeze_batch_stats and opt.frozen and shardings.abstract.batch_stats:
    from cnnlab.training import transfer
    fn = transfer.keep_frozen_stats(fn, transfer.frozen_stats_mask(
        shardings.abstract.batch_stats, opt.frozen))
  return steps.jit_train_step(mesh_, fn, shardings.sharding)


def eval_step(spec: RunSpec, module, mesh_, shardings: StateShardings, *,
              confusion: bool = False):
  fn = steps.make_eval_step(module, use_ema=spec.train.ema_decay > 0, confusion=confusion)
  return steps.jit_eval_step(mesh_, fn, shardings.sharding)


def checkpointer(spec: RunSpec, workdir: str):
  """The run's Orbax checkpointer (imported here: the step path needs no Orbax)."""
  from cnnlab import checkpoint as ckpt_lib
  return ckpt_lib.Checkpointer(workdir, keep=spec.loop.keep_checkpoints,
                               best_metric=spec.loop.best_metric, best_mode=spec.loop.best_mode)


def train_batches(spec: RunSpec, mesh_, start_step: int) -> Iterator[dict]:
  """Global, sharded training batches from ``start_step`` on."""
  from cnnlab.data import pipeline
  host = pipeline.train_batches(spec.data, global_batch_size=spec.loop.global_batch,
                                seed=spec.seed, start_step=start_step)
  return parallel.prefetch_to_device(host, mesh_)


def evaluate(spec: RunSpec, state: TrainState, eval_step_, mesh_, split: str | None = None):
  """Eval metrics over every example of ``split`` (default: the eval split), each counted
  once (padded batches carry a mask); ``confusion`` too when the step computes it."""
  from cnnlab.data import pipeline
  import numpy as np
  batches = pipeline.eval_batches(spec.data, split=split or spec.data.eval_split,
                                  global_batch_size=spec.loop.eval_batch)
  sync = parallel.needs_step_sync(mesh_)
  totals = None
  for batch in parallel.prefetch_to_device(batches, mesh_):
    out = eval_step_(state, batch)
    if sync:
      jax.block_until_ready(out)
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  result = {"eval_loss": float(totals["loss_sum"]) / count,
            "eval_accuracy": float(totals["correct"]) / count,
            "eval_top5": float(totals["correct5"]) / count, "eval_count": count}
  if "confusion" in totals:
    result["confusion"] = np.asarray(totals["confusion"])
  return result
