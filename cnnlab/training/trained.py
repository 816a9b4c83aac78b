"""THE loader of a trained run — evaluate, predict, visualize and init_from all use it:

    t = load_trained("runs/lenet5_mnist", checkpoint="auto")
    logits = t.model.apply(t.variables, images, train=False)
    x, labels = t.feed.examples(limit=100)           # eval examples as the model sees them

It reads the workdir's own ``config.json`` (or takes a given config / spec), resolves it on
this machine's devices against the dataset's facts (one metadata read, nothing decoded), builds
the run's parts and restores the chosen checkpoint — 'latest', 'best', 'auto' (best when one
is recorded, else latest) or a saved step — onto the current devices. A workdir that was never
trained is one ConfigError line.
"""
from __future__ import annotations

import dataclasses
import json
import os
from cnnlab import config as config_lib
from cnnlab import platform
from cnnlab.config import ConfigError, RunSpec
from cnnlab.data import datasets
from cnnlab.training import builders
from cnnlab.training.parts import Parts, build_parts
from cnnlab.training.state import TrainState, eval_variables


@dataclasses.dataclass(frozen=True)
class Trained:
  workdir: str
  spec: RunSpec
  parts: Parts
  state: TrainState           # the whole restored state (sharded), for the run's own steps
  variables: dict             # {'params', 'batch_stats'?} as evaluation uses them (EMA if set)
  step: int

  @property
  def model(self):
    return self.parts.model

  @property
  def feed(self):
    return self.parts.feed

  @property
  def facts(self):
    return self.spec.data.facts

  @property
  def name(self) -> str:
    return self.spec.model.name

  @property
  def input_shape(self) -> tuple:
    return tuple(self.spec.model.input_shape)

  @property
  def class_names(self) -> tuple | None:
    return self.facts.class_names

  def class_name(self, c: int) -> str:
    names = self.class_names
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def resolve_run(config, *, devices=None, require_prepared: bool = True) -> RunSpec:
  """``config`` -> RunSpec the way a run resolves it: the dataset described (one metadata
  read), the devices described (``cnnlab.platform``), then the pure ``cnnlab.config.resolve``.
  An unknown dataset name is a ConfigError; an unprepared dataset DatasetUnavailableError."""
  c = config_lib.complete(config)
  counts = devices or platform.describe(probe_onednn=False)
  # The config's own checks before any file is read: a typo is named even when the dataset is
  # not prepared (and before first-use preparation builds it); resolve repeats them.
  config_lib.checks.check_keys(c, device_count=counts.device_count,
                               process_count=counts.process_count)
  try:
    facts = datasets.describe(c.dataset, require_prepared=require_prepared)
  except ValueError:
    config_lib.fail("dataset.name", c.dataset.name, "valid datasets: "
                    + ", ".join(datasets.names()) + ", ucr/<Name>, volumes/<name>")
  if devices is None:
    devices = platform.describe(probe_onednn=c.model.kernels in ("auto", "cpu+onednn"))
  return config_lib.resolve(c, facts, devices)


def workdir_config(workdir: str) -> dict:
  """The completed config a run saved in ``workdir`` (ConfigError if there is none)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"--workdir={workdir!r} holds no config.json: it was never trained "
                      "(train it with python -m experiments.train)")
  with open(path) as f:
    config = json.load(f)
  model = config.get("model") or {}
  if model.get("num_classes") == 0:   # written before RunSpec, where 0 meant "the dataset's"
    model["num_classes"] = None
  return config


def checkpoint_step(ck, which, workdir: str) -> int:
  """'latest', 'best', 'auto' or a saved step number -> the step (ConfigError otherwise)."""
  which = str(which)
  if which == "auto":
    which = "best" if ck.best_step() is not None else "latest"
  if which in ("latest", "best"):
    step = ck.latest_step() if which == "latest" else ck.best_step()
  elif which.isdigit() and int(which) in ck.all_steps():
    step = int(which)
  else:
    raise ConfigError(f"--checkpoint={which!r} is not one of auto, latest, best, or a saved "
                      f"step {ck.all_steps()}")
  if step is None:
    raise ConfigError(f"--workdir={workdir!r} holds no {which} checkpoint")
  return step


def load_trained(workdir: str, checkpoint="latest", *, spec=None, confusion: bool = False,
                 devices=None) -> Trained:
  """The run in ``workdir`` at ``checkpoint``. ``spec``: a RunSpec or config to use instead of
  the workdir's config.json."""
  if not isinstance(spec, RunSpec):
    spec = resolve_run(spec if spec is not None else workdir_config(workdir), devices=devices)
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
  return Trained(workdir=workdir, spec=spec, parts=parts, state=state, variables=variables,
                 step=int(step))


__all__ = ["Trained", "checkpoint_step", "load_trained", "resolve_run", "workdir_config"]
