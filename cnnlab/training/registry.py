"""The engine's implementations behind the names a config uses: losses, optimizers and kinds
of train step. The engine itself names no paper: research code registers its parts here (and
their names and rules with ``cnnlab.config.registry``, so resolve knows them) when its module
is imported — cnnlab.proj.lecun1998 adds LeNet-5's MAP loss, SDLM and online updates.

    register_loss("dice", make_dice)                       # make(train_spec) -> fn(logits, batch)
    register_optimizer("sgd", make_sgd)                    # make(optim_spec, schedule) -> tx
    register_step("online", make_online, check=rule)       # make(spec, model, tx, schedule) -> step

A loss function takes the model's logits (train mode, the main head) and the batch (``label``,
and whatever else the task's pipeline yields, e.g. a per-pixel ``weight``) and returns a scalar.
"""
from __future__ import annotations

from typing import Callable

from cnnlab.config import registry as config_registry

LOSSES: dict[str, Callable] = {}
OPTIMIZERS: dict[str, Callable] = {}
STEPS: dict[str, Callable] = {}
UPDATES_PER_STEP: dict[str, Callable] = {}
_TABLES = {"loss": LOSSES, "optimizer": OPTIMIZERS, "step": STEPS}


def _register(kind: str, name: str, factory: Callable, check: Callable | None) -> None:
  _TABLES[kind][name] = factory
  config_registry.register(kind, name, check)


def register_loss(name: str, factory: Callable, check: Callable | None = None) -> None:
  _register("loss", name, factory, check)


def register_optimizer(name: str, factory: Callable, check: Callable | None = None) -> None:
  _register("optimizer", name, factory, check)


def register_step(name: str, factory: Callable, check: Callable | None = None, *,
                  updates_per_step: Callable | None = None) -> None:
  """``updates_per_step(spec)``: optimizer updates one engine step makes (default 1); the
  optimizer's schedule is then read at update // that count."""
  _register("step", name, factory, check)
  UPDATES_PER_STEP[name] = updates_per_step or (lambda spec: 1)


def lookup(kind: str, name: str) -> Callable:
  table = _TABLES[kind]
  if name not in table:
    raise ValueError(f"no {kind} named {name!r} is registered; registered: "
                     f"{', '.join(table)}")
  return table[name]
