"""A recipe folder: an importable package of config modules, one recipe per module (each with
``get_config(arg=None)``; ``base.py`` and ``__init__.py`` are not recipes). The library never
assumes where recipes live: ``cnnlab.reproduce`` and ``cnnlab.report`` take the package's
name, and the commands in ``experiments/`` pass their own (``experiments.configs``). A
research project keeps its recipes in its own package and passes that name the same way.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NOT_RECIPES = ("__init__.py", "base.py")


def directory(package: str) -> str:
  """The folder of the recipes package ``package`` (imported by name)."""
  try:
    module = importlib.import_module(package)
  except ImportError as e:
    raise ValueError(f"recipes package {package!r} cannot be imported: {e}") from None
  return os.path.dirname(os.path.abspath(module.__file__))


def names(package: str) -> list[str]:
  """The recipes of ``package``, sorted by name."""
  return sorted(f[:-3] for f in os.listdir(directory(package))
                if f.endswith(".py") and f not in NOT_RECIPES)


def load(package: str, name: str) -> ModuleType:
  """The module of recipe ``name``."""
  return importlib.import_module(f"{package}.{name}")


def path(package: str, name: str) -> str:
  """The file of recipe ``name`` (what ``--config=`` takes)."""
  return os.path.join(directory(package), name + ".py")


def parse(recipe: str, package: str) -> tuple[str, str | None]:
  """``'name[:arg]'`` as (name, arg or None); a name that is not a recipe of ``package`` is a
  one-line ValueError listing the valid ones."""
  name, _, arg = recipe.partition(":")
  known = names(package)
  if name not in known:
    raise ValueError(f"--recipe={recipe!r} names no recipe of {package}; valid: "
                     f"{', '.join(known)}")
  return name, (arg or None)
