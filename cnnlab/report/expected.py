"""What each recipe is expected to give, read from the recipes themselves: a config module in
the recipes package (``experiments.configs`` by default) that defines ``EXPECTED = dict(...)``
is a recipe of the report. Its paper numbers live there, next to the docstring that cites
them — nowhere else.

``EXPECTED`` keys: ``paper`` (required: the paper's or our target's number, as text),
``source``, ``metrics`` (shown in order; each accuracy | error | top5_accuracy | top5_error),
``target`` ((metric, '>=' | '<=', fraction): the check shown as ✓ / ✗), ``time_to_accuracy``
(report the time to first reach this eval accuracy), ``time_estimate``, ``seeds``; ``model`` /
``dataset`` default to the recipe's ``get_config()``. A recipe whose dataset is chosen on the
command line (the UCR archive recipes) may add ``datasets`` ({dataset name: the paper's test
accuracy, a fraction}) and ``target_margin``: the report then has one row per dataset, each with
its own paper number and the target ``accuracy >= paper - target_margin``.

Metrics are computed from a run's final evaluation: ``accuracy`` / ``top5_accuracy`` are
``eval_accuracy`` / ``eval_top5``; ``error`` / ``top5_error`` are one minus those.

A recipe whose config argument picks an arm it is known by (``lenet5_fashion_finetune.py``:
``finetune`` / ``scratch``) lists them in ``ARMS``; ``recipe_arms`` gives every recipe's
settings per arm, by which the report recognises a run trained by hand from a recipe.
"""
from __future__ import annotations

import dataclasses
import importlib
import os

DEFAULT_PACKAGE = "experiments.configs"
METRIC_LABELS = {"accuracy": "accuracy", "error": "error", "top5_accuracy": "top-5 accuracy",
                 "top5_error": "top-5 error"}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a recipe is expected to give (from its config module's ``EXPECTED``)."""
  name: str                   # module in the recipes package
  model: str
  dataset: str
  paper: str
  metrics: tuple = ("accuracy",)
  source: str = "—"
  time_estimate: str = "—"
  target: tuple | None = None
  time_to_accuracy: float | None = None
  seeds: int = 3
  order: int = 100            # position in the report's table
  datasets: tuple = ()        # ((dataset, paper accuracy), ...): one report row per dataset
  target_margin: float = 0.0

  def for_dataset(self, dataset: str) -> "Recipe":
    """This recipe on one of its ``datasets`` (its paper number and target, derived from
    ``datasets`` and ``target_margin``); itself for a dataset not among them."""
    papers = dict(self.datasets)
    if dataset not in papers:
      return self
    acc = papers[dataset]
    return dataclasses.replace(self, dataset=dataset,
                               paper=f"{acc:.3f} test accuracy on {dataset.split('/')[-1]} "
                                     "(mean over runs)",
                               target=("accuracy", ">=", round(acc - self.target_margin, 6)))

  def variants(self) -> list["Recipe"]:
    """The recipe on its default dataset, then on each other one of ``datasets``."""
    return [self.for_dataset(self.dataset)] + [self.for_dataset(d) for d, _ in self.datasets
                                               if d != self.dataset]


def recipe(name: str, package: str = DEFAULT_PACKAGE) -> Recipe | None:
  """The recipe ``name`` of ``package`` as its ``EXPECTED`` states it (None without one)."""
  try:
    module = importlib.import_module(f"{package}.{name}")
  except ImportError:
    return None
  expected = getattr(module, "EXPECTED", None)
  if not isinstance(expected, dict) or "paper" not in expected:
    return None
  fields = {f.name for f in dataclasses.fields(Recipe)}
  known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in expected.items()
           if k in fields and k != "name"}
  if isinstance(known.get("datasets"), dict):
    known["datasets"] = tuple(sorted(known["datasets"].items()))
  if "model" not in known or "dataset" not in known:
    config = module.get_config()
    known.setdefault("model", config.model.name)
    known.setdefault("dataset", config.dataset.name)
  return Recipe(name=name, **known)


def all_recipes(package: str = DEFAULT_PACKAGE) -> list[Recipe]:
  """Every module of ``package`` that defines ``EXPECTED``, in their ``order``."""
  directory = os.path.dirname(importlib.import_module(package).__file__)
  names = sorted(f[:-3] for f in os.listdir(directory)
                 if f.endswith(".py") and f not in ("__init__.py", "base.py"))
  found = [r for r in (recipe(n, package) for n in names) if r is not None]
  return sorted(found, key=lambda r: (r.order, r.name))


def metric_value(final: dict, metric: str) -> float | None:
  acc = final.get("eval_top5" if metric.startswith("top5") else "eval_accuracy")
  if acc is None:
    return None
  return float(acc) if metric.endswith("accuracy") else 1.0 - float(acc)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One way to train a recipe: its module, config argument (None: the default) and the
  settings its ``get_config`` makes, flattened to dotted keys."""
  name: str
  arg: str | None
  settings: dict

  @property
  def label(self) -> str:
    return self.name + (f":{self.arg}" if self.arg else "")


def flatten(tree, prefix: str = "") -> dict:
  """A nested dict as ``{'a.b': value}``."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for k, v in tree.items():
    out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def recipe_arms(package: str = DEFAULT_PACKAGE) -> list[Arm]:
  """Every recipe module of ``package`` with each of its ``ARMS`` (or its default config)."""
  directory = os.path.dirname(importlib.import_module(package).__file__)
  arms = []
  for f in sorted(os.listdir(directory)):
    if not f.endswith(".py") or f in ("__init__.py", "base.py"):
      continue
    module = importlib.import_module(f"{package}.{f[:-3]}")
    if not hasattr(module, "get_config"):
      continue
    for arg in getattr(module, "ARMS", (None,)):
      config = module.get_config() if arg is None else module.get_config(arg)
      arms.append(Arm(f[:-3], arg, flatten(config.to_dict())))
  return arms