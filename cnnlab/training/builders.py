"""Small builders from a RunSpec: each makes one piece of a run. ``train_and_evaluate``,
``load_trained`` (evaluate / predict / visualize / init_from) and the benchmark assemble runs
from them, so every piece is built one way.

    spec = cnnlab.training.resolve_run(config)
    mesh = builders.mesh()
    model = builders.model(spec.model)               # checked on the input shape (no compile)
    opt = builders.optimizer(spec, model)            # Optimizer(schedule, tx, frozen)
    init, shardings = builders.state(spec, model, opt.tx, mesh)
    train_step = builders.train_step(spec, model, opt, mesh, shardings)
    eval_step = builders.eval_step(spec, model, mesh, shardings)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import checkpoint as ckpt_lib
from cnnlab import models, parallel, streams
from cnnlab.config import ConfigError, ModelSpec, RunSpec, fail
from cnnlab.data import pipeline
from cnnlab.models import kernels
from cnnlab.training import optim, registry, steps, tasks, transfer
from cnnlab.training.state import TrainState, create_state

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def mesh(devices=None):
  """The ('data',) mesh over every device of every process."""
  return parallel.create_mesh(devices)


def model(spec: ModelSpec, *, check_input: bool = True):
  """The linen module ``spec`` names, with its concrete kernel set; with ``check_input`` it is
  traced (not compiled) once on one example of the input shape, so a model that does not take
  that input is one ConfigError line before anything is compiled."""
  try:
    module = models.create(spec.name, num_classes=spec.num_classes, dtype=DTYPES[spec.dtype],
                           kernels=kernels.by_name(spec.kernels), **dict(spec.kwargs))
  except TypeError as e:
    fail("model.kwargs", dict(spec.kwargs), f"not accepted by {spec.name}: {e}")
  if models.info(spec.name).task != spec.task:
    fail("model.name", spec.name, f"a {models.info(spec.name).task} model; the dataset's task "
         f"is {spec.task}")
  if check_input:
    _check_input(module, spec)
  return module


def _check_input(module, spec: ModelSpec) -> None:
  shape, err = spec.input_shape, None
  try:
    out = jax.eval_shape(lambda x: module.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False),
        jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    bad = any(0 in leaf.shape for leaf in jax.tree.leaves(out))
  except Exception as e:  # shape errors surface as various exception types
    bad, err = True, e
  if bad:
    expects = "x".join(map(str, models.info(spec.name).input_shape))
    raise ConfigError(
        f"config.dataset: {'x'.join(map(str, shape))} inputs are too small for model "
        f"{spec.name!r}, which expects about {expects} (image_size / crop / series_length)"
        + (f" ({type(err).__name__})" if err else ""))


def task(spec: RunSpec):
  return tasks.get(spec.model.task)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  schedule: optax.Schedule                    # learning rate per step
  tx: optax.GradientTransformationExtraArgs
  frozen: tuple = ()                          # parameter paths that are not trained


def _step_factory(spec: RunSpec):
  return registry.lookup("step", spec.train.step)


def optimizer(spec: RunSpec, module=None) -> Optimizer:
  """The run's optimizer; with ``module``, partitioned for freeze / lr_groups / linear_probe
  (cnnlab/training/transfer.py). A step kind that makes several optimizer updates per engine
  step (registry.UPDATES_PER_STEP) reads its schedule at update // that count."""
  schedule = optim.create_schedule(spec.schedule)
  count = registry.UPDATES_PER_STEP[spec.train.step](spec)
  per_update = schedule if count == 1 else (lambda n: schedule(n // count))
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


@dataclasses.dataclass(frozen=True)
class StateInit:
  """``init()``: the run's fresh replicated TrainState; ``init(seed)``: another seed's, from the
  same compiled program (seeds trained together start exactly as each would alone)."""
  jitted: Callable                            # run key -> TrainState
  seed: int

  def __call__(self, seed: int | None = None) -> TrainState:
    return self.jitted(streams.run_key(self.seed if seed is None else seed))


def state(spec: RunSpec, module, tx, mesh_) -> tuple[StateInit, StateShardings]:
  """(init: () -> a fresh replicated TrainState, its abstract shape and shardings)."""
  ema = spec.train.ema_decay > 0
  pure = lambda rng: create_state(module, tx, rng, spec.model.input_shape, ema=ema)  # noqa: E731
  abstract = jax.eval_shape(pure, streams.run_key(spec.seed))
  repl = parallel.replicated(mesh_)
  shardings = StateShardings(abstract, jax.tree.map(lambda _: repl, abstract))
  return StateInit(jax.jit(pure, out_shardings=shardings.sharding), spec.seed), shardings


def train_step(spec: RunSpec, module, opt: Optimizer, mesh_, shardings: StateShardings, *,
               seed_map: str | None = None):
  """The jitted train step; with ``seed_map``, over a leading axis of seeds
  (``steps.over_seeds``)."""
  fn = _step_factory(spec)(spec, module, opt.tx, opt.schedule, task(spec))
  if spec.transfer.freeze_batch_stats and opt.frozen and shardings.abstract.batch_stats:
    fn = transfer.keep_frozen_stats(fn, transfer.frozen_stats_mask(
        shardings.abstract.batch_stats, opt.frozen))
  return steps.jit_train_step(mesh_, fn, shardings.sharding, seed_map=seed_map)


def eval_step(spec: RunSpec, module, mesh_, shardings: StateShardings, *,
              confusion: bool = False):
  fn = steps.make_eval_step(module, use_ema=spec.train.ema_decay > 0, confusion=confusion,
                            task=task(spec))
  return steps.jit_eval_step(mesh_, fn, shardings.sharding)


def checkpointer(spec: RunSpec, workdir: str):
  """The run's Orbax checkpointer."""
  return ckpt_lib.Checkpointer(workdir, keep=spec.loop.keep_checkpoints,
                               best_metric=spec.loop.best_metric, best_mode=spec.loop.best_mode)


def feed(spec: RunSpec) -> pipeline.Feed:
  return pipeline.Feed(spec.data)


def train_batches(spec: RunSpec, feed_: pipeline.Feed, mesh_, start_step: int, *,
                  seeds: tuple[int, ...] | None = None) -> Iterator:
  """Global, sharded training batches from ``start_step`` on. With ``seeds``: each batch
  stacks, along a leading axis, what each seed's run alone gets at that step (its own data
  order and augmentation)."""
  if seeds is None:
    host = feed_.train_batches(global_batch_size=spec.loop.global_batch, seed=spec.seed,
                               start_step=start_step)
    return parallel.prefetch_to_device(host, mesh_)
  per_seed = [feed_.train_batches(global_batch_size=spec.loop.global_batch, seed=s,
                                  start_step=start_step, background=False) for s in seeds]
  stacked = _stacked(per_seed)
  if feed_.family.in_memory:        # one thread makes every seed's batch
    stacked = feed_.in_background(stacked)
  return parallel.prefetch_to_device(stacked, mesh_, seed_axis=True)


def _stacked(iterators: list[Iterator]) -> Iterator:
  """One batch with a leading seeds axis from each step of ``iterators``; closing it closes
  them (their prefetch threads stop)."""
  try:
    for batches in zip(*iterators):
      yield {k: np.stack([b[k] for b in batches]) for k in batches[0]}
  finally:
    for it in iterators:
      close = getattr(it, "close", None)
      if close is not None:
        close()
