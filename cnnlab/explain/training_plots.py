"""Pictures of training: loss and accuracy curves of one or several runs (from
``metrics.jsonl`` rows) and the confusion matrix of an evaluation."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from cnnlab.explain import figures


def series(rows: Sequence[Mapping[str, float]], key: str, *,
           time_key: str = "time") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, times, values) of ``key`` from ``metrics.jsonl`` rows, sorted by step. A step
  logged twice (a resumed run repeats the steps after its last checkpoint) keeps its last
  value."""
  latest: dict[int, tuple[float, float]] = {}
  for r in rows:
    if key in r and r[key] is not None and np.isfinite(r[key]):
      latest[int(r["step"])] = (float(r.get(time_key, np.nan)), float(r[key]))
  steps = np.array(sorted(latest), dtype=np.int64)
  times = np.array([latest[s][0] for s in steps], dtype=np.float64)
  values = np.array([latest[s][1] for s in steps], dtype=np.float64)
  return steps, times, values


def run_clock(rows: Sequence[Mapping[str, float]], attempts: Sequence[Mapping] | None = None):
  """A function from Unix time to seconds of run time. With ``attempts`` (run_info.json's
  ``[{start_time, end_time}, ...]``) the clock starts at the first attempt's start and skips
  the gaps between attempts (a resumed run); without, it starts at the first logged row."""
  spans = sorted(((float(a["start_time"]), float(a.get("end_time", math.inf)))
                  for a in (attempts or [])), key=lambda s: s[0])
  if not spans:
    t0 = min((float(r["time"]) for r in rows if "time" in r), default=0.0)
    return lambda t: float(t) - t0

  def clock(t):
    done = 0.0
    for start, end in spans:
      if t <= end:
        return done + max(0.0, float(t) - start)
      done += end - start
    return done
  return clock


def _format_axes(axes, focus: Sequence[float], target: float | None) -> None:
  """Labels, log-scaled loss, the accuracy zoom and the target line of plot_curves' 2x2 axes."""
  for row_i, quantity in enumerate(("loss", "accuracy")):
    for col_i, xlabel in enumerate(("step", "wall time (s)")):
      ax = axes[row_i, col_i]
      ax.set_xlabel(xlabel)
      ax.set_ylabel(quantity)
      ax.grid(True, alpha=0.3)
      if not ax.lines:
        continue
      if col_i == 1:  # wall time from the start: the start-up and compilation time shows
        ax.set_xlim(left=0.0)
      if quantity == "loss" and all(np.all(np.asarray(line.get_ydata(), float) > 0)
                                    for line in ax.lines):
        ax.set_yscale("log")
      if quantity == "accuracy" and focus:
        lo = min(focus)
        ax.set_ylim(max(0.0, lo - 0.3 * (1 - lo)), min(1.0, max(focus) + 0.3 * (1 - lo)))
      if quantity == "accuracy" and target is not None:
        ax.axhline(target, color="0.3", ls=":", lw=1.0)


def plot_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], path: str, *,
                title: str | None = None, time_key: str = "elapsed_sec",
                target: float | None = None,
                width: float = 12.0, height: float = 8.0, dpi: int = 100) -> str:
  """Loss (top, log scale) and accuracy (bottom) against steps (left) and wall time (right),
  for one or more runs (``label -> metrics.jsonl rows``) overlaid, one colour per run:
  training solid, evaluation dashed with markers. The accuracy axis zooms in on where the runs
  end up (every eval accuracy and the training accuracy of the second half of the steps), so
  the early climb may leave the frame; ``target`` draws a dotted line at that accuracy.

  Wall time is ``row[time_key]`` (seconds since the run started, e.g. from ``run_clock``);
  rows without it fall back to ``time`` minus the run's first logged time.
  """
  fig = figures.new_figure(width, height, dpi)
  axes = fig.subplots(2, 2)
  colours = [f"C{i}" for i in range(10)]
  focus: list[float] = []   # the accuracies the bottom row zooms in on
  for i, (label, rows) in enumerate(runs.items()):
    rows = list(rows)
    if rows and not all(time_key in r for r in rows):
      t0 = min(float(r["time"]) for r in rows if "time" in r)
      rows = [{**r, time_key: float(r["time"]) - t0} for r in rows if "time" in r]
    colour = colours[i % len(colours)]
    for row_i, (train_key, eval_key) in enumerate((("train_loss", "eval_loss"),
                                                   ("train_accuracy", "eval_accuracy"))):
      for key, style in ((train_key, dict(ls="-", lw=1.0, alpha=0.8)),
                         (eval_key, dict(ls="--", lw=1.5, marker="o", ms=3))):
        steps, times, values = series(rows, key, time_key=time_key)
        if not len(steps):
          continue
        if key == "eval_accuracy":
          focus.extend(values)
        elif key == "train_accuracy":
          focus.extend(values[steps >= steps[-1] / 2])
        name = f"{label} {'train' if key == train_key else 'eval'}"
        axes[row_i, 0].plot(steps, values, color=colour, label=name, **style)
        axes[row_i, 1].plot(times, values, color=colour, label=name, **style)
  _format_axes(axes, focus, target)
  if axes[0, 0].lines:
    axes[0, 0].legend(fontsize=7, loc="upper right")
  if title:
    fig.suptitle(title)
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.92 if title else 0.96,
                      wspace=0.22, hspace=0.28)
  return figures.save(fig, path)


def plot_confusion(matrix, path: str, *, class_names: Sequence[str] | None = None,
                   normalize: bool = True, title: str | None = None, size: float = 7.0,
                   dpi: int = 100) -> str:
  """Heat map of a confusion matrix (rows: true class, columns: predicted). ``normalize``
  divides each row by its count (so the diagonal is per-class recall). Cells carry their
  value when there are at most 20 classes. The figure is ``size`` x ``size`` inches."""
  cm = np.asarray(matrix, np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"confusion matrix must be square; got shape {cm.shape}")
  n = cm.shape[0]
  if class_names is not None and len(class_names) != n:
    raise ValueError(f"class_names has {len(class_names)} names for {n} classes")
  shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
  fig = figures.new_figure(size, size, dpi)
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  ticks = np.arange(n)
  if n <= 50:
    names = list(class_names) if class_names is not None else [str(i) for i in ticks]
    ax.set_xticks(ticks, labels=names, rotation=90 if max(map(len, names)) > 2 else 0,
                  fontsize=8)
    ax.set_yticks(ticks, labels=names, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if n <= 20:
    threshold = 0.5 * float(shown.max() or 1.0)
    for i in range(n):
      for j in range(n):
        value = shown[i, j]
        text = f"{value:.2f}" if normalize else f"{int(value)}"
        if normalize and value < 0.005:
          text = "0" if value == 0 else "<.01"
        ax.text(j, i, text, ha="center", va="center", fontsize=6,
                color="white" if value > threshold else "black")
  if title:
    ax.set_title(title)
  fig.subplots_adjust(left=0.16, right=0.92, bottom=0.16, top=0.94)
  return figures.save(fig, path)

