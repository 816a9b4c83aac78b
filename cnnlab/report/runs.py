"""Reading run workdirs for the reproduction report: one ``RunRecord`` per workdir, groups of
seeds under a runs directory, and the recipe each group reproduces."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cnnlab import provenance
from cnnlab.data import datasets
from cnnlab.explain import training_plots
from cnnlab.metrics import read_jsonl
from cnnlab.report.expected import Recipe, all_recipes, recipe


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
    return self.final is not None and "eval_accuracy" in self.final

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


def group_recipe(group: str, runs: list[RunRecord], package: str) -> Recipe | None:
  """run_info's recipe (with a config argument only if the model is the recipe's default),
  else the group's name, else the unique recipe with the runs' model and dataset."""
  info = runs[0].info
  cfg = runs[0].config
  model = cfg.get("model", {}).get("name")
  dataset = cfg.get("dataset", {}).get("name")
  if info.get("recipe"):
    rec = recipe(info["recipe"], package)
    ok = rec and (not info.get("config_arg") or rec.model == model)
    return rec.for_dataset(dataset) if ok else None
  recipes = all_recipes(package)
  if any(r.name == group for r in recipes):
    return recipe(group, package).for_dataset(dataset)
  matches = [v for r in recipes for v in r.variants() if (v.model, v.dataset) == (model, dataset)]
  return matches[0] if len(matches) == 1 else None
