"""The one loader for users of a trained run (evaluate, predict, visualize, init_from):

    t = load_trained("runs/lenet5_mnist", checkpoint="best")
    logits = t.model.apply(t.variables, images, train=False)

It resolves the workdir's own ``config.json`` (or a given config / spec), builds the run's
parts and restores the chosen checkpoint onto the current devices.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from cnnlab.config import ConfigError, RunSpec, resolve
from cnnlab.training import builders
from cnnlab.training.parts import Parts, build_parts
from cnnlab.training.state import TrainState, eval_variables


@dataclasses.dataclass(frozen=True)
class Trained:
  spec: RunSpec
  model: Any                  # the linen module
  variables: dict             # {'params', 'batch_stats'?} as evaluation uses them (EMA if set)
  step: int
  class_names: tuple | None
  state: TrainState           # the whole restored state (sharded), for the run's own steps
  parts: Parts


def workdir_config(workdir: str):
  """The completed config a run saved in ``workdir`` (ConfigError if there is none)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"--workdir={workdir!r} holds no config.json (not a training workdir)")
  with open(path) as f:
    config = json.load(f)
  model = config.get("model") or {}
  if model.get("num_classes") == 0:   # written before RunSpec, where 0 meant "the dataset's"
    model["num_classes"] = None
  return config


def checkpoint_step(ck, which, workdir: str) -> int:
  """'latest', 'best' or a saved step number -> the step (ConfigError otherwise)."""
  which = str(which)
  if which in ("latest", "best"):
    step = ck.latest_step() if which == "latest" else ck.best_step()
  elif which.isdigit() and int(which) in ck.all_steps():
    step = int(which)
  else:
    raise ConfigError(f"--checkpoint={which!r} is not one of latest, best, or a saved step "
                      f"{ck.all_steps()}")
  if step is None:
    raise ConfigError(f"--workdir={workdir!r} holds no {which} checkpoint")
  return step


def load_trained(workdir: str, checkpoint="latest", *, spec=None, confusion: bool = False,
                 **resolve_kw) -> Trained:
  """The run in ``workdir`` at ``checkpoint`` ('best' | 'latest' | a step number).
  ``spec``: a RunSpec or config to use instead of the workdir's config.json."""
  if not isinstance(spec, RunSpec):
    spec = resolve(spec if spec is not None else workdir_config(workdir), **resolve_kw)
  parts = build_parts(spec, confusion=confusion)
  ck = builders.checkpointer(spec, workdir)
  try:
    step = checkpoint_step(ck, checkpoint, workdir)
    target = parts.shardings.with_sharding()
    ck.check_compatible(step, target)
    state = ck.restore(step, target)
  finally:
    ck.close(raise_errors=False)
  variables = eval_variables(state, use_ema=spec.train.ema_decay > 0)
  return Trained(spec=spec, model=parts.model, variables=variables, step=step,
                 class_names=class_names(spec.data.name), state=state, parts=parts)


def class_names(dataset: str) -> tuple | None:
  """Human-readable class names where cnnlab knows them (cnnlab.viz's table)."""
  try:
    from cnnlab import viz
  except ImportError:
    return None
  names = getattr(viz, "CLASS_NAMES", {}).get(dataset)
  return tuple(names) if names else None


def host_variables(trained: Trained) -> dict:
  return jax.device_get(trained.variables)
