"""What each recipe is expected to give, read from the recipes themselves: a config module in
the recipes package (``experiments.configs`` by default) that defines ``EXPECTED = dict(...)``
is a recipe of the report. Its paper numbers live there, next to the docstring that cites
them — nowhere else.

``EXPECTED`` keys: ``paper`` (required: the paper's or our target's number, as text),
``source``, ``metrics`` (shown in order; each one of ``METRICS`` below), ``target`` ((metric,
'>=' | '<=', fraction): the check shown as ✓ / ✗; '<=' for errors), ``time_to_accuracy``
(report the time to first reach this eval accuracy), ``time_estimate``, ``seeds``; ``model`` /
``dataset`` default to the recipe's ``get_config()``. A recipe whose dataset is chosen on the
command line (the UCR archive recipes) may add ``datasets`` ({dataset name: the paper's test
accuracy, a fraction}) and ``target_margin``: the report then has one row per dataset, each with
its own paper number and the target ``accuracy >= paper - target_margin``.

Metrics are computed from a run's final evaluation (``metric_value``):
- classification: ``accuracy`` / ``top5_accuracy`` are ``eval_accuracy`` / ``eval_top5``;
  ``error`` / ``top5_error`` are one minus those (shown as percentages);
- segmentation: ``pixel_error``, ``mean_dice``, ``mean_iou`` are ``eval_pixel_error``,
  ``eval_mean_dice``, ``eval_mean_iou``; ``dice:<class>`` is that class's ``eval_dice_<class>``
  and ``dice:<a>+<b>+<c>`` the mean of those classes' Dice (``iou:`` likewise); shown as
  fractions (a pixel error as 0.0734, a Dice as 0.912). A class Dice that is missing or NaN
  (the class in neither truth nor prediction) gives no value.

A recipe whose config argument picks an arm it is known by (``lenet5_fashion_finetune.py``:
``finetune`` / ``scratch``) lists them in ``ARMS``; ``recipe_arms`` gives every recipe's
settings per arm, by which the report recognises a run trained by hand from a recipe.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os

DEFAULT_PACKAGE = "experiments.configs"
METRIC_LABELS = {"accuracy": "accuracy", "error": "error", "top5_accuracy": "top-5 accuracy",
                 "top5_error": "top-5 error"}                  # shown as percentages
FRACTION_KEYS = {"pixel_error": "eval_pixel_error", "mean_dice": "eval_mean_dice",
                 "mean_iou": "eval_mean_iou"}                  # shown as fractions
PER_CLASS = {"dice": "Dice", "iou": "IoU"}                     # dice:<class>[+<class>...]
FRACTION_LABELS = {"pixel_error": "pixel error", "mean_dice": "mean Dice",
                   "mean_iou": "mean IoU"}


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
  """``metric`` (see the module docstring) of a final evaluation; None where it lacks it."""
  if metric in METRIC_LABELS:
    acc = final.get("eval_top5" if metric.startswith("top5") else "eval_accuracy")
    if acc is None:
      return None
    return float(acc) if metric.endswith("accuracy") else 1.0 - float(acc)
  if metric in FRACTION_KEYS:
    return _finite(final.get(FRACTION_KEYS[metric]))
  kind, classes = _per_class(metric)
  values = [_finite(final.get(f"eval_{kind}_{c}")) for c in classes]
  return None if None in values else sum(values) / len(values)


def _finite(value) -> float | None:
  if value is None or not math.isfinite(float(value)):
    return None
  return float(value)


def _per_class(metric: str) -> tuple[str, list[str]]:
  kind, _, classes = metric.partition(":")
  if kind not in PER_CLASS or not classes or "" in classes.split("+"):
    raise ValueError(f"metric {metric!r} is not one of {', '.join(METRIC_LABELS)}, "
                     f"{', '.join(FRACTION_KEYS)}, dice:<class>[+<class>...], "
                     "iou:<class>[+<class>...]")
  return kind, classes.split("+")


def metric_label(metric: str) -> str:
  """How the report names ``metric``: 'top-5 error', 'pixel error', 'membrane Dice',
  'mean Dice of liver, kidney, spine'."""
  if metric in METRIC_LABELS:
    return METRIC_LABELS[metric]
  if metric in FRACTION_LABELS:
    return FRACTION_LABELS[metric]
  kind, classes = _per_class(metric)
  if len(classes) == 1:
    return f"{classes[0]} {PER_CLASS[kind]}"
  return f"mean {PER_CLASS[kind]} of {', '.join(classes)}"


def is_percentage(metric: str) -> bool:
  """Classification's metrics are shown as percentages, segmentation's as fractions."""
  return metric in METRIC_LABELS


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