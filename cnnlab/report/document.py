"""The reproduction report as Markdown: the results table (one row per group of seeds, and
the recipes not yet run), a section per group, and figures through cnnlab.explain.

Our metric is the final evaluation of each run (``final_metrics.json``), never a best-of
checkpoint chosen on the eval split: the last step's, or — when the run selects its checkpoint
by a criterion that does not look at the eval split (``selected_step`` / ``selected_by`` in
``final_metrics.json``; the UCR recipes keep the lowest train loss) — the selected checkpoint's,
marked † with its step, its criterion and the last step's value beside it. Each row names the
recipe (and config argument) its runs were made with (cnnlab.report.runs.identify). Wall time
and time-to-accuracy count from the start of the training process (``run_info.json``). Rows
whose runs came from a dirty tree or another commit than the report's are marked
(``code_version.jsonl``, cnnlab.provenance).
"""
from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any

from cnnlab import provenance
from cnnlab.data import datasets
from cnnlab.explain import training_plots
from cnnlab.report.expected import (DEFAULT_PACKAGE, Recipe, all_recipes, flatten,
                                    is_percentage, metric_label, metric_value)
from cnnlab.report.runs import Identity, RunRecord, find_groups, identify


# --- numbers and formatting ----------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (n - 1 in the denominator; None for one value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def fmt_pct(values: list[float]) -> str:
  mean, std = mean_std(values)
  return f"{100 * mean:.2f} %" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def fmt_metric(values: list[float], metric: str) -> str:
  """Mean (± std) of ``metric``: a percentage for classification's, a fraction for
  segmentation's — 4 decimals for a pixel error (0.0734), 3 for Dice / IoU (0.912)."""
  if is_percentage(metric):
    return fmt_pct(values)
  digits = 4 if metric == "pixel_error" else 3
  mean, std = mean_std(values)
  return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def fmt_duration(sec: float | None) -> str:
  if sec is None or not math.isfinite(sec):
    return "—"
  if sec < 120:
    return f"{sec:.0f} s"
  if sec < 7200:
    return f"{sec / 60:.1f} min"
  return f"{sec / 3600:.1f} h"


def _fmt_epochs(epochs: float) -> str:
  return f"{epochs:.2f}".rstrip("0").rstrip(".")


def _cell(text: Any) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
  return f"`{text}`" if text and text != "—" else "—"


def _split_label(runs: list[RunRecord]) -> str:
  """The eval split: as the run recorded it (``eval_split`` in final_metrics.json), else as its
  config names it, else the dataset's (a local dataset's from its prepared metadata when at
  hand: 'validation' when it has one)."""
  ds = runs[0].config.get("dataset", {})
  split = (runs[0].final or {}).get("eval_split") or ds.get("eval_split")
  if not split:
    try:
      split = _dataset_eval_split(ds)
    except ValueError:
      split = "eval"
  return {"validation": "val"}.get(split, split)


def _dataset_eval_split(ds: dict) -> str:
  info = datasets.get(ds.get("name"))
  if info.local:
    try:
      return datasets.describe(ds).eval_split
    except datasets.DatasetUnavailableError:   # not prepared here: the catalogue's guess
      pass
  return info.eval_split


def hardware_text(info: dict) -> str:
  hw = info.get("hardware") or {}
  if not hw:
    return "—"
  cores = hw.get("usable_cpus") or hw.get("cpu_count")
  text = f"{hw.get('cpu', '?')} ({cores} cores)"
  gpus = hw.get("gpus") or []
  if gpus:
    names = sorted(set(gpus))
    text = ", ".join(f"{gpus.count(n)}× {n}" for n in names) + "; " + text
  return text


def _ours(rec: Recipe | None, runs: list[RunRecord], done: list[RunRecord]) -> str:
  if not done:
    return "no finished run"
  metrics = rec.metrics if rec else ("accuracy",)
  split = _split_label(runs)
  parts = []
  for m in metrics:
    values = [v for v in (metric_value(r.final, m) for r in done) if v is not None]
    if values:
      parts.append(f"{fmt_metric(values, m)} {split} {metric_label(m)}")
  text = "; ".join(parts) + (" †" if any(_selected(r) for r in done) else "") + \
      f" (n={len(done)})"
  if rec and rec.target:
    metric, op, bound = rec.target
    values = [v for v in (metric_value(r.final, metric) for r in done) if v is not None]
    mean = mean_std(values)[0] if values else None
    ok = mean is not None and (mean >= bound if op == ">=" else mean <= bound)
    text += " ✓" if ok else " ✗"
  if len(done) < len(runs):
    text += f"; {len(runs) - len(done)} unfinished"
  return text


def _selected(run: RunRecord) -> int | None:
  """The step of the checkpoint whose evaluation ``final_metrics.json`` reports, when the run
  selected one (e.g. by lowest train loss) rather than reporting its last step."""
  step = (run.final or {}).get("selected_step")
  return None if step is None else int(step)


def _pct(final: dict, key: str) -> str:
  return f"{100 * final[key]:.2f} %" if final.get(key) is not None else "—"


def selection_note(group: str, done: list[RunRecord]) -> str | None:
  """The † note of a group whose runs report a selected checkpoint."""
  chosen = [r for r in done if _selected(r) is not None]
  if not chosen:
    return None
  by = "; ".join(dict.fromkeys(str(r.final.get("selected_by")) for r in chosen))
  steps = ", ".join(f"{r.name}: step {_selected(r)} of {r.final.get('step', '?')}, "
                    f"last {_pct(r.final, 'last_eval_accuracy')}" for r in chosen)
  return (f"† {group}: the value of each run's selected checkpoint, chosen by {by} (never by "
          f"the eval split), not of its last evaluation ({steps}).")


# --- the report ----------------------------------------------------------------------------------
HEADER = ("| recipe | model | dataset | ours (mean ± std over seeds) | paper / target | source "
          "| epochs | wall time (mean) | time to target | hardware | command |")


def group_row(group: str, runs: list[RunRecord], rec: Recipe | None,
              commit: str | None = None, label: str | None = None) -> tuple[str, list[str]]:
  """The table row of a group, and its footnote marks' explanations. Runs not made by a clean
  tree at ``commit`` (the report's) are marked §. ``label``: the recipe (``name:arg``) that
  made the runs, or what they are (default: ``rec``'s name)."""
  notes = []
  code = sorted({m for m in (provenance.summarize(r.code, commit) for r in runs) if m})
  done = [r for r in runs if r.finished]
  cfg, info = runs[0].config, runs[0].info
  epochs = [e for e in (r.epochs() for r in done) if e is not None]
  walls = [r.wall_time() for r in done]
  wall_s = [w for w, _ in walls if w is not None]
  wall = fmt_duration(sum(wall_s) / len(wall_s)) if wall_s else "—"
  if walls and not all(full for _, full in walls):
    wall += " ‡"
    notes.append("‡ training loop only (no run_info.json): start-up and compilation excluded.")
  ttt = "—"
  if rec and rec.time_to_accuracy:
    hits = [r.time_to_accuracy(rec.time_to_accuracy) for r in done]
    reached = [h[0] for h in hits if h is not None]
    ttt = f"{100 * rec.time_to_accuracy:g} %: "
    ttt += (fmt_duration(sum(reached) / len(reached)) if reached else "not reached")
    if reached and len(reached) < len(hits):
      ttt += f" ({len(reached)}/{len(hits)} seeds)"
    if not all(r.timed_from_start for r in done):
      ttt += " *"
      notes.append("* measured from the first logged step (no run_info.json): start-up and "
                   "compilation excluded.")
  hardware = "; ".join(sorted({hardware_text(r.info) for r in runs} - {"—"})) or "—"
  # A group filled by several invocations (e.g. seeds 0-1, then --first_seed=2) lists each.
  commands = [r.info.get("group_command") or r.info.get("command") for r in runs]
  command = "; ".join(dict.fromkeys(c for c in commands if c)) or "—"
  label = label or (rec.name if rec else None)
  name = group if label in (None, group) else f"{group} ({label})"
  selection = selection_note(group, done)
  if selection:
    notes.append(selection)
  if info.get("overrides"):
    name += " with " + ", ".join(f"`{o}`" for o in info["overrides"])
  if code:
    name += " §"
    notes.append(f"§ {group}: not all runs come from a clean tree at this report's commit "
                 f"({'; '.join(code)}).")
  cells = [name,
           (cfg.get("model") or {}).get("name") or "?",
           (cfg.get("dataset") or {}).get("name") or "?",
           _ours(rec, runs, done), rec.paper if rec else "—", rec.source if rec else "—",
           _fmt_epochs(sum(epochs) / len(epochs)) if epochs else "—", wall, ttt, hardware,
           _code(command)]
  return "| " + " | ".join(_cell(c) for c in cells) + " |", notes


def pending_row(rec: Recipe, other_dataset: bool = False) -> str:
  """The row of a recipe not run yet; ``other_dataset``: ``rec`` is one of its ``variants`` on
  a dataset other than the recipe's default (the command then names it)."""
  command = f"python -m experiments.reproduce --recipe={rec.name} --seeds={rec.seeds}"
  name = rec.name
  if other_dataset:
    short = rec.dataset.split("/")[-1]
    name = f"{rec.name}_{short}"
    command += f" --override=dataset.name={rec.dataset} --group={name}"
  cells = [name, rec.model, rec.dataset, "**not yet run**", rec.paper, rec.source, "—",
           f"estimate: {rec.time_estimate}", "—", "—", _code(command)]
  return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _figures(group: str, runs: list[RunRecord], rec: Recipe | None,
             fig_dir: str) -> dict[str, str]:
  out = {}
  curves = {}
  for r in runs:
    if r.rows:
      clock = training_plots.run_clock(r.rows, r.info.get("attempts"))
      curves[r.name] = [{**row, "elapsed_sec": clock(row["time"])} for row in r.rows]
  target = rec.time_to_accuracy if rec else None
  if rec and rec.target and target is None:
    metric, _, bound = rec.target
    target = {"accuracy": bound, "error": 1 - bound}.get(metric)
  if curves:
    out["curves"] = training_plots.plot_curves(curves, os.path.join(fig_dir, f"{group}_curves.png"),
                                    title=f"{group}: loss and accuracy, seeds overlaid",
                                    target=target)
  for r in runs:
    for split, ev in sorted(r.evals.items()):
      if "confusion_matrix" in ev:
        names = (ev.get("class_names")
                 or datasets.CLASS_NAMES.get(r.config.get("dataset", {}).get("name")))
        n = len(ev["confusion_matrix"])
        what = "accuracy" if "eval_accuracy" in ev else "pixels right"
        acc = ev.get("eval_accuracy", _diagonal(ev["confusion_matrix"]))
        out["confusion"] = training_plots.plot_confusion(
            ev["confusion_matrix"], os.path.join(fig_dir, f"{group}_confusion.png"),
            class_names=names if names and len(names) == n else None,
            title=f"{group}/{r.name}, {split} split ({what} {100 * acc:.2f} %)")
        return out
  return out


def _diagonal(matrix) -> float:
  """The share of a confusion matrix's counts on its diagonal."""
  total = sum(map(sum, matrix))
  return sum(row[i] for i, row in enumerate(matrix)) / max(total, 1)


def config_differences(configs: list[dict]) -> list[str]:
  """The config keys (dotted) on which the runs of a group disagree, the seed aside."""
  flat = [flatten(c) for c in configs]
  keys = set().union(*flat) - {"seed"}
  return sorted(k for k in keys if len({json.dumps(f.get(k), sort_keys=True)
                                        for f in flat}) > 1)


def group_section(group: str, runs: list[RunRecord], who: Identity,
                  figures: dict[str, str], out_dir: str) -> list[str]:
  lines = [f"### {group}", ""]
  rec = who.recipe
  if who.label and (rec is None or who.label.split(":")[0] != rec.name):
    lines += [f"Runs of {_recipe_text(who.label)}; no target.", ""]
  elif rec:
    lines += [f"Recipe {_recipe_text(who.label or rec.name)}; paper / target: {rec.paper} "
              f"({rec.source}).", ""]
  lines += ["| run | steps | epochs | eval result | eval loss | examples | wall time | "
            "time to target | command |", "|---|---|---|---|---|---|---|---|---|"]
  for r in runs:
    f = r.final or {}
    acc = _result(f, rec) if r.finished else "unfinished"
    if _selected(r) is not None and "eval_accuracy" in f:
      acc += (f" † (step {_selected(r)}, chosen by {f.get('selected_by')}; last step "
              f"{_pct(f, 'last_eval_accuracy')})")
    loss = f"{f['eval_loss']:.4f}" if "eval_loss" in f else "—"
    count = f"{int(f['eval_count'])}" if "eval_count" in f else "—"
    epochs = r.epochs()
    hit = r.time_to_accuracy(rec.time_to_accuracy) if rec and rec.time_to_accuracy else None
    ttt = f"{fmt_duration(hit[0])} (step {hit[1]})" if hit else "—"
    step = f.get("step", max((int(row["step"]) for row in r.rows), default="—"))
    cells = [r.name, step, f"{epochs:.2f}" if epochs is not None else "—", acc,
             loss, count, fmt_duration(r.wall_time()[0]), ttt,
             _code(r.info.get("command", "—"))]
    lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
  differing = config_differences([r.config for r in runs])
  if differing:
    lines += ["", "**The runs' configs differ beyond the seed:** "
              + ", ".join(f"`{k}`" for k in differing[:10]) + "."]
  attempts = {r.name: len(r.info.get("attempts", [])) for r in runs}
  resumed = [n for n, k in attempts.items() if k > 1]
  if resumed:
    lines += ["", f"Resumed after an interruption: {', '.join(resumed)} (gaps between "
              "attempts are not counted in the times)."]
  sw = runs[0].info.get("software")
  if sw:
    lines += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in sw.items()) + "."]
  for kind in ("curves", "confusion"):
    if kind in figures:
      rel = os.path.relpath(figures[kind], out_dir)
      lines += ["", f"![{group} {kind}]({rel})"]
  return lines + [""]


def _result(final: dict, rec: Recipe | None) -> str:
  """A finished run's result cell: its accuracy, or the recipe's (else the usual)
  segmentation metrics."""
  if "eval_accuracy" in final:
    return f"{100 * final['eval_accuracy']:.2f} %"
  metrics = rec.metrics if rec else ("pixel_error", "mean_dice")
  values = [(m, metric_value(final, m)) for m in metrics]
  return "; ".join(f"{fmt_metric([v], m)} {metric_label(m)}" for m, v in values
                   if v is not None) or "—"


def _recipe_text(label: str) -> str:
  """``name:arg`` as the recipe file and argument; other labels as they are."""
  name, _, arg = label.partition(":")
  if " " in name:
    return label
  return f"`experiments/configs/{name}.py" + (f":{arg}`" if arg else "`")


LEGEND = [
    "- **recipe**: the group's folder and, in parentheses, the recipe (`name:argument`) its "
    "runs were made with (recorded by `experiments.reproduce`, else recognised from the run's "
    "`config.json`); a fine-tuning run is never judged against a recipe that trains from "
    "scratch.",
    "- **ours**: the final evaluation of each run on every example of the eval split: the last "
    "step's, or, marked †, the checkpoint the run selected by a criterion that never looks at "
    "the eval split (e.g. the lowest train loss; its step and the last step's value are in the "
    "notes below the table and in the run's section); mean ± sample standard deviation (n − 1) "
    "over the finished seeds, n = seeds; ✓ / ✗: the mean meets / misses the target.",
    "- **wall time**: whole training process, start-up, data loading and compilation "
    "included. **time to target**: from the process start to the first evaluation at or "
    "above the target accuracy (mean over the seeds that reach it).",
    "- **not yet run**: no data for it on the machines these results come from; the command "
    "runs it, the time is an estimate from the recipe."]


def build_report(runs_dir: str, out_path: str, fig_dir: str, *,
                 package: str = DEFAULT_PACKAGE, command: str | None = None) -> str:
  """Writes the Markdown report and its figures; returns the Markdown text. ``package``: the
  recipes' package (whose modules' ``EXPECTED`` say what each should give); ``command``: the
  command line shown as the page's origin (default: the report over ``runs_dir``)."""
  groups = find_groups(runs_dir) if os.path.isdir(runs_dir) else {}
  out_dir = os.path.dirname(os.path.abspath(out_path))
  who = {g: identify(g, runs, package) for g, runs in groups.items()}
  matched = {g: w.recipe for g, w in who.items()}
  rows, notes, sections = [], [], []
  recipes = all_recipes(package)
  commit = provenance.code_version()["commit"]
  order = [r.name for r in recipes]
  ranked = sorted(groups, key=lambda g: (order.index(matched[g].name) if matched[g] and
                                         matched[g].name in order else len(order), g))
  for g in ranked:
    row, row_notes = group_row(g, groups[g], matched[g], commit, who[g].label)
    rows.append(row)
    notes += [n for n in row_notes if n not in notes]
    figures = _figures(g, groups[g], matched[g], fig_dir)
    sections += group_section(g, groups[g], who[g], figures, out_dir)
  ran = {(rec.name, rec.dataset) for rec in matched.values() if rec}
  rows += [pending_row(v, other_dataset=i > 0) for r in recipes
           for i, v in enumerate(r.variants()) if (v.name, v.dataset) not in ran]
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  command = command or f"python -m experiments.report --runs={runs_dir}"
  text = "\n".join([
      "# Reproduction results", "",
      f"Generated by `{command}` on {now} from the files the runs wrote; do not edit by hand.",
      "", *LEGEND, "",
      HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *rows, "", *notes,
      *([""] if notes else []), "## Runs", "", *sections])
  os.makedirs(out_dir, exist_ok=True)
  with open(out_path + ".tmp", "w") as f:
    f.write(text)
  os.replace(out_path + ".tmp", out_path)
  return text
