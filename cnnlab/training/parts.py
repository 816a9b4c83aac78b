"""A run's parts, built once from a RunSpec: what training, evaluation and the loaders of a
trained run share (``build_parts``), and the parameter fingerprint runs are compared by."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import jax
import numpy as np

from cnnlab import parallel
from cnnlab.config import RunSpec
from cnnlab.data import pipeline
from cnnlab.training import builders


@dataclasses.dataclass(frozen=True)
class Parts:
  spec: RunSpec
  mesh: Any
  model: Any                                  # the linen module
  optimizer: builders.Optimizer
  init: Callable                              # () -> fresh replicated TrainState
  shardings: builders.StateShardings
  train_step: Callable                        # jitted (state, batch) -> (state, metrics)
  eval_step: Callable                         # jitted (state, batch) -> sums
  feed: pipeline.Feed                         # the run's data (splits decoded once)
  sync: bool                                  # block on every step (multi-device CPU)

  def evaluate(self, state, split: str | None = None) -> dict:
    """The task's metrics over every example of ``split`` (default: the eval split)."""
    return builders.task(self.spec).evaluate(self, state, split)


def build_parts(spec: RunSpec, *, mesh=None, confusion: bool = False) -> Parts:
  """Everything a run computes with, traced lazily (jit compiles on first call); the model is
  checked on its input shape here, once."""
  mesh = mesh or builders.mesh()
  if spec.loop.device_count != mesh.size:
    raise ValueError(f"the spec was resolved for {spec.loop.device_count} devices but the "
                     f"mesh has {mesh.size}")
  model = builders.model(spec.model)
  opt = builders.optimizer(spec, model)
  init, shardings = builders.state(spec, model, opt.tx, mesh)
  return Parts(spec=spec, mesh=mesh, model=model, optimizer=opt, init=init,
               shardings=shardings,
               train_step=builders.train_step(spec, model, opt, mesh, shardings),
               eval_step=builders.eval_step(spec, model, mesh, shardings, confusion=confusion),
               feed=builders.feed(spec), sync=parallel.needs_step_sync(mesh))


def params_fingerprint(params) -> str:
  """SHA-256 of every parameter's bytes (this process's replica): equal fingerprints mean
  bit-identical parameters, across restarts, device counts and processes."""
  digest = hashlib.sha256()
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in flat:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
  return digest.hexdigest()
