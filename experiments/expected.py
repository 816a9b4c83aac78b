"""What each recipe is expected to give, for the reproduction report (experiments/report.py):
the metric to show, the paper's number and its source, a target to check, the time to reach
an accuracy, a time estimate and how many seeds to run.

``RECIPES`` holds one entry per recipe in experiments/configs, with the numbers each config's
docstring states. A config module may define ``EXPECTED = dict(...)`` with any of the
``Recipe`` fields; those win over the table, and a config not in the table that defines a
complete ``EXPECTED`` (model, dataset, metrics, paper, source, time_estimate) joins the report.

Metrics are computed from a run's final evaluation: ``accuracy`` / ``top5_accuracy`` are
``eval_accuracy`` / ``eval_top5``; ``error`` / ``top5_error`` are one minus those.
"""
from __future__ import annotations

import dataclasses
import importlib
import os


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a recipe is expected to give. A config module's ``EXPECTED`` dict overrides these."""
  name: str                   # module in experiments/configs
  model: str
  dataset: str
  metrics: tuple              # shown in order; each accuracy | error | top5_accuracy | top5_error
  paper: str                  # the paper's (or our target's) number, as text
  source: str
  time_estimate: str
  target: tuple | None = None   # (metric, '>=' | '<=', fraction): the check shown as ✓ / ✗
  time_to_accuracy: float | None = None   # report the time to first reach this eval accuracy
  seeds: int = 3


# One entry per recipe; the numbers and sources are those in each config's docstring.
RECIPES = (
    # experiments/configs/lenet5_1998_mnist.py (target: issue 5)
    Recipe("lenet5_1998_mnist", "lenet5_1998", "mnist", ("error",),
           "≤ 0.95 % test error (no distortions)",
           "LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11), §III-C, Fig. 9",
           "minutes on a 2-core CPU", target=("error", "<=", 0.0095)),
    # experiments/configs/lenet5_mnist.py
    Recipe("lenet5_mnist", "lenet5", "mnist", ("accuracy",),
           "≥ 99.0 % test accuracy (our baseline; flax's MNIST example: 99.17 % after 10 epochs)",
           "own target", "~2-3 min on a 2-core CPU", target=("accuracy", ">=", 0.99),
           time_to_accuracy=0.99),
    # experiments/configs/lenet5_fashion_mnist.py
    Recipe("lenet5_fashion_mnist", "lenet5", "fashion_mnist", ("accuracy",),
           "none (recorded); small CNNs reach ~89-91 %",
           "Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747 (context only)",
           "~2-3 min on a 2-core CPU"),
    # experiments/configs/resnet20_cifar10.py (PAPER_TEST_ERROR[20])
    Recipe("resnet20_cifar10", "resnet20", "cifar10", ("error",), "8.75 % test error",
           "He, Zhang, Ren & Sun 2016, Table 6", "~1.5 h on one modern GPU"),
    # experiments/configs/alexnet_imagenet.py
    Recipe("alexnet_imagenet", "alexnet", "imagenet2012", ("error", "top5_error"),
           "40.7 % / 18.2 % top-1 / top-5 error (one CNN); torchvision weights: "
           "43.48 % / 20.93 %", "Krizhevsky, Sutskever & Hinton 2012, Table 2; torchvision "
           "model card", "a few hours on one H100", seeds=1),
    # experiments/configs/vgg16_imagenet.py
    Recipe("vgg16_imagenet", "vgg16", "imagenet2012", ("error", "top5_error"),
           "25.6 % / 8.1 % top-1 / top-5 error (single scale, Q=384); torchvision weights at "
           "224 crop: 28.41 % / 9.62 %", "Simonyan & Zisserman 2015, Table 3; torchvision "
           "model card", "~1.5 days on one H100 in bf16", seeds=1),
    # experiments/configs/googlenet_imagenet.py
    Recipe("googlenet_imagenet", "googlenet", "imagenet2012", ("error", "top5_error"),
           "10.07 % top-5 error (one model, one crop); torchvision weights: 30.22 % / 10.47 %",
           "Szegedy et al. 2015, Table 3; torchvision model card",
           "about 2 days on one H100", seeds=1),
    # experiments/configs/resnet50_imagenet.py (TORCHVISION_ACC[50], RESNET_PAPER_ERROR[50])
    Recipe("resnet50_imagenet", "resnet50", "imagenet2012", ("error", "top5_error"),
           "23.87 % / 7.14 % top-1 / top-5 error, one crop (torchvision V1 weights); paper, "
           "10 crops: 22.85 % / 6.71 %", "torchvision model card; He et al. 2016, Table 3",
           "~10.7 h on one H100 in bf16", seeds=1),
)

METRIC_LABELS = {"accuracy": "accuracy", "error": "error", "top5_accuracy": "top-5 accuracy",
                 "top5_error": "top-5 error"}


def recipe(name: str) -> Recipe | None:
  """The table entry, updated from ``experiments.configs.<name>.EXPECTED`` when it exists."""
  base = next((r for r in RECIPES if r.name == name), None)
  try:
    module = importlib.import_module(f"experiments.configs.{name}")
  except ImportError:
    return base
  expected = getattr(module, "EXPECTED", None)
  if not isinstance(expected, dict):
    return base
  fields = {f.name for f in dataclasses.fields(Recipe)}
  known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in expected.items()
           if k in fields}
  if base is None:
    missing = {"model", "dataset", "metrics", "paper", "source", "time_estimate"} - set(known)
    if missing:
      return None
    return Recipe(name=name, **known)
  return dataclasses.replace(base, **known)


def all_recipes() -> list[Recipe]:
  """``RECIPES`` (updated from the configs' ``EXPECTED``), then any other config module in
  experiments/configs that defines a complete ``EXPECTED``."""
  out = [recipe(r.name) or r for r in RECIPES]
  config_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
  for f in sorted(os.listdir(config_dir)):
    name = f[:-3]
    if f.endswith(".py") and name not in ("__init__", "base") and \
        all(r.name != name for r in RECIPES):
      extra = recipe(name)
      if extra is not None:
        out.append(extra)
  return out


def metric_value(final: dict, metric: str) -> float | None:
  acc = final.get("eval_top5" if metric.startswith("top5") else "eval_accuracy")
  if acc is None:
    return None
  return float(acc) if metric.endswith("accuracy") else 1.0 - float(acc)
