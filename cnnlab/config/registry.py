"""The names a config may use for the pluggable parts of a run, and the rules each adds.

The config layer sits below everything else in cnnlab, so it cannot ask the model zoo which
models exist or the engine which losses it has. Instead the layers above register their names
here when they are imported (``cnnlab/__init__.py`` imports them all): the model zoo its models,
the kernels module its kernel sets, the training engine its built-in losses, optimizers and step
kinds, and each research project under ``cnnlab.proj`` its own (with the extra rules its names
bring, e.g. "this optimizer needs online updates"). ``resolve`` then checks a config against
the names registered, and the engine looks up the implementation under the same name in its
own table (cnnlab/training/registry.py).

    register("loss", "dice", check=None)
    names("loss")                 # ('cross_entropy', 'dice', ...), in registration order
    check(c)                      # every registered rule for the names c uses
"""
from __future__ import annotations

from typing import Callable

KINDS = ("model", "kernels", "loss", "optimizer", "step")
_NAMES: dict[str, dict[str, Callable | None]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, check: Callable | None = None) -> None:
  """Makes ``name`` valid for ``kind``; ``check(c)`` (a completed config) runs whenever a config
  uses that name and raises ConfigError for a combination the name does not support."""
  if kind not in _NAMES:
    raise ValueError(f"unknown registry kind {kind!r}: one of {', '.join(KINDS)}")
  if name in _NAMES[kind] and _NAMES[kind][name] is not check:
    raise ValueError(f"{kind} {name!r} is registered twice")
  _NAMES[kind][name] = check


def names(kind: str) -> tuple[str, ...]:
  return tuple(_NAMES[kind])


def known(kind: str, name: str) -> bool:
  return name in _NAMES[kind]


def rule(kind: str, name: str) -> Callable | None:
  return _NAMES[kind].get(name)
