"""Reading run workdirs for the reproduction report: one ``RunRecord`` per workdir, groups of
seeds under a runs directory, and the recipe each group reproduces.

Which recipe a group's runs were made with (``identify``): the one ``run_info.json`` names
(``experiments/reproduce.py`` records it, with its config argument), else the recipe the group
is named after, else the recipe arm whose settings the run's ``config.json`` carries unchanged
(a run trained by hand from a recipe; the seed aside), else the one recipe with the run's
model and dataset. A fine-tuning run (``init_from`` set) is never taken for a recipe that trains
from scratch: labelled by its own recipe arm (``lenet5_fashion_finetune:finetune``), or as
fine-tuned from its source, it is never judged against a from-scratch target.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cnnlab import provenance
from cnnlab.data import datasets
from cnnlab.explain import training_plots
from cnnlab.metrics import read_jsonl
from cnnlab.report.expected import Recipe, all_recipes, flatten, recipe, recipe_arms

# A final evaluation holds one of these: classification's accuracy, segmentation's scores.
FINAL_KEYS = ("eval_accuracy", "eval_pixel_error", "eval_mean_dice")


# --- reading workdirs ----------------------------------------------------------------------------
def _load_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _is_workdir(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f))
             for f in ("config.json", "metrics.jsonl", "run_info.json"))


@dataclasses.dataclass
class RunRecord:
  name: str
  path: str
  config: dict
  rows: list
  final: dict | None
  info: dict
  evals: dict
  code: list = dataclasses.field(default_factory=list)   # provenance.read(): one per start

  @property
  def finished(self) -> bool:
    return self.final is not None and any(k in self.final for k in FINAL_KEYS)

  def elapsed(self, t: float) -> float:
    """Seconds of run time at Unix time ``t`` (see ``training_plots.run_clock``)."""
    return training_plots.run_clock(self.rows, self.info.get("attempts"))(t)

  @property
  def timed_from_start(self) -> bool:
    return bool(self.info.get("attempts"))

  def wall_time(self) -> tuple[float | None, bool]:
    """(seconds, from process start?): run_info's total, else the loop's own time."""
    if self.info.get("wall_time_sec") is not None:
      return float(self.info["wall_time_sec"]), True
    if self.final and self.final.get("wall_time_sec") is not None:
      return float(self.final["wall_time_sec"]), False
    return None, False

  def epochs(self) -> float | None:
    step = (self.final or {}).get("step")
    if step is None:
      step = max((int(r["step"]) for r in self.rows), default=None)
    cfg = self.config
    try:
      ds = cfg["dataset"]
      info = datasets.get(ds["name"])
      split = ds.get("train_split") or info.train_split
      per_epoch = max(1, info.splits[split] // int(cfg["batch_size"]))
      return step / per_epoch if step is not None else None
    except (KeyError, TypeError, ValueError):
      return cfg.get("num_epochs")

  def time_to_accuracy(self, threshold: float) -> tuple[float, int] | None:
    """(elapsed seconds, step) of the first evaluation reaching ``threshold``."""
    for r in sorted((r for r in self.rows if "eval_accuracy" in r), key=lambda r: r["time"]):
      if r["eval_accuracy"] >= threshold:
        return self.elapsed(float(r["time"])), int(r["step"])
    return None


def read_run(path: str) -> RunRecord:
  evals = {}
  for f in sorted(os.listdir(path)):
    if f.startswith("eval_") and f.endswith(".json"):
      data = _load_json(os.path.join(path, f))
      if isinstance(data, dict):
        evals[f[5:-5]] = data
  return RunRecord(name=os.path.basename(path.rstrip("/")), path=path,
                   config=_load_json(os.path.join(path, "config.json")) or {},
                   rows=[r for r in read_jsonl(path) if "step" in r and "time" in r],
                   final=_load_json(os.path.join(path, "final_metrics.json")),
                   info=_load_json(os.path.join(path, "run_info.json")) or {}, evals=evals,
                   code=provenance.read(path))


def find_groups(runs_dir: str) -> dict[str, list[RunRecord]]:
  """``group name -> runs`` (sorted by name), skipping hidden directories (.jax_cache)."""
  groups = {}
  for g in sorted(os.listdir(runs_dir)):
    gpath = os.path.join(runs_dir, g)
    if g.startswith(".") or not os.path.isdir(gpath):
      continue
    if _is_workdir(gpath):
      groups[g] = [read_run(gpath)]
      continue
    seeds = [os.path.join(gpath, s) for s in sorted(os.listdir(gpath)) if not s.startswith(".")]
    runs = [read_run(s) for s in seeds if os.path.isdir(s) and _is_workdir(s)]
    if runs:
      groups[g] = runs
  return groups


@dataclasses.dataclass(frozen=True)
class Identity:
  """What made a group: ``label`` names its recipe (``name`` or ``name:arg``) or says what the
  runs are when no recipe matches; ``recipe`` is the ``EXPECTED`` it is judged against."""
  label: str | None
  recipe: Recipe | None


def _init_from(config: dict) -> str:
  return str(config.get("init_from") or "")


def _same(a, b) -> bool:
  return json.dumps(a, sort_keys=True, default=list) == json.dumps(b, sort_keys=True,
                                                                    default=list)


def matching_arm(config: dict, package: str):
  """The recipe arm every one of whose settings ``config`` (a run's config.json) carries, the
  seed aside; the most specific one when several do; None when none does."""
  flat = flatten(config)
  found = [a for a in recipe_arms(package)
           if all(k == "seed" or (k in flat and _same(flat[k], v))
                  for k, v in a.settings.items())]
  return max(found, key=lambda a: len(a.settings), default=None)


def _expected(name: str, arg: str | None, model, dataset, package: str) -> Recipe | None:
  """The recipe's EXPECTED for this run: with a config argument only if the model is the
  recipe's default (resnet20_cifar10's EXPECTED is depth 20's, not 56's)."""
  rec = recipe(name, package)
  ok = rec and (not arg or rec.model == model)
  return rec.for_dataset(dataset) if ok else None


def identify(group: str, runs: list[RunRecord], package: str) -> Identity:
  """The recipe that made ``runs`` (see the module docstring)."""
  info, cfg = runs[0].info, runs[0].config
  model = cfg.get("model", {}).get("name")
  dataset = cfg.get("dataset", {}).get("name")
  if info.get("recipe"):
    name, arg = info["recipe"], info.get("config_arg")
    return Identity(name + (f":{arg}" if arg else ""),
                    _expected(name, arg, model, dataset, package))
  recipes = all_recipes(package)
  if any(r.name == group for r in recipes):
    return Identity(group, recipe(group, package).for_dataset(dataset))
  arm = matching_arm(cfg, package) if cfg else None
  if arm is not None:
    return Identity(arm.label, _expected(arm.name, arm.arg, model, dataset, package))
  if _init_from(cfg):
    return Identity(f"fine-tuned from {_init_from(cfg)}", None)
  matches = [v for r in recipes for v in r.variants() if (v.model, v.dataset) == (model, dataset)]
  return Identity(matches[0].name, matches[0]) if len(matches) == 1 else Identity(None, None)


def group_recipe(group: str, runs: list[RunRecord], package: str) -> Recipe | None:
  """The ``EXPECTED`` a group is judged against (``identify``'s recipe)."""
  return identify(group, runs, package).recipe
