"""Pictures of a segmentation — one example predicted whole, drawn three ways:

- ``plot_overlay``: the predicted mask over the input, one colour per class;
- ``plot_contours``: the outline of each class in the truth (solid) and in the prediction
  (dashed), in the class's colour (one class drawn: green truth, magenta prediction), over
  the input;
- ``plot_dice``: the example's Dice per class as bars (and the whole split's beside them when
  known), the mean over classes as a line.

Inputs are (*spatial, C) with 2 or 3 spatial dims, masks (*spatial) of class indices; 255 in a
truth mask marks an unlabelled pixel (outlined by nothing, counted in no Dice). A 2-D example
is drawn whole; a 3-D one as its three orthogonal slices through one voxel: by default the
centre of mass of the largest structure (the drawn class with the most voxels in the truth,
else in the prediction), the volume's centre when nothing is drawn (``section``).

Which classes get a colour (``drawn_classes``): every class but the background — the class
named "background", or, when none is, the class covering most of the masks (e.g. the cell
interior of an EM slice, leaving the membranes drawn): colouring it too would tint the whole
picture. Class k's colour is entry k of matplotlib's 'tab10' (k mod 10), the same in every
picture. Pure matplotlib on an Agg canvas (cnnlab/explain/figures.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from cnnlab.explain import figures

IGNORE_LABEL = 255
PALETTE = "tab10"
TRUTH_COLOUR, PREDICTION_COLOUR = (0.0, 0.8, 0.0, 1.0), (1.0, 0.0, 1.0, 1.0)
_DHW = "DHW"


def colour(k: int) -> tuple[float, float, float, float]:
  return tuple(colormaps[PALETTE](k % 10))


def drawn_classes(class_names: Sequence[str], *masks) -> list[int]:
  """The classes given a colour (see the module docstring)."""
  k = len(class_names)
  lowered = [str(n).lower() for n in class_names]
  if "background" in lowered:
    skip = lowered.index("background")
  else:
    counts = sum(np.bincount(np.asarray(m, np.int64)[np.asarray(m) != IGNORE_LABEL].ravel(),
                             minlength=k)[:k] for m in masks)
    skip = int(np.argmax(counts)) if k > 1 else -1
  return [c for c in range(k) if c != skip]


def section(masks: Sequence[np.ndarray], classes: Sequence[int]) -> tuple[int, ...]:
  """The voxel the slices go through: the centre of mass of the largest drawn structure of
  the first mask that holds one (see the module docstring)."""
  shape = np.asarray(masks[0]).shape
  for m in masks:
    m = np.asarray(m)
    sizes = [int((m == c).sum()) for c in classes]
    if sizes and max(sizes) > 0:
      where = np.argwhere(m == classes[int(np.argmax(sizes))])
      return tuple(int(round(v)) for v in where.mean(axis=0))
  return tuple(n // 2 for n in shape)


def _planes(x, masks, at) -> list[tuple[np.ndarray, list[np.ndarray], str]]:
  """[(picture, masks' planes, label)]: the image itself, or three slices through ``at``."""
  if x.ndim == 3:
    return [(figures.as_picture(x), list(masks), "")]
  out = []
  for axis in range(3):
    i = int(at[axis])
    out.append((figures.as_picture(figures.mid_slice(x, axis, i)),
                [figures.mid_slice(m, axis, i) for m in masks],
                f"axis {axis} ({_DHW[axis]}) slice {i}"))
  return out


def _rgba(mask: np.ndarray, classes: Sequence[int], alpha: float) -> np.ndarray:
  out = np.zeros(mask.shape + (4,), np.float32)
  for c in classes:
    out[mask == c] = (*colour(c)[:3], alpha)
  return out


def _check(x, *masks) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim not in (3, 4) or any(np.shape(m) != x.shape[:-1] for m in masks):
    raise ValueError(f"need an input (*spatial, C) with 2 or 3 spatial dims and masks of its "
                     f"spatial shape; got {x.shape} and {[np.shape(m) for m in masks]}")
  return x


def _figure(pictures: Sequence[np.ndarray], title: str | None, dpi: int,
            legend_rows: int = 1):
  """A row of panels sized to the pictures' aspect, a header and room for a legend below."""
  n = len(pictures)
  panel = 4.0 if n > 1 else 6.0
  aspect = max(p.shape[0] / p.shape[1] for p in pictures)
  top_in, bottom_in = (0.6 if title else 0.35), 0.2 + 0.3 * legend_rows
  width = panel * n
  height = min(max(panel * aspect, 2.0), 8.0) + top_in + bottom_in
  fig = figures.new_figure(width, height, dpi)
  axes = fig.subplots(1, n, squeeze=False)[0]
  fig.subplots_adjust(left=0.02, right=0.98, wspace=0.06, bottom=bottom_in / height,
                      top=1.0 - top_in / height)
  if title:
    figures.header(fig, title, width, height)
  return fig, axes


def _legend(fig, handles) -> None:
  if handles:
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               frameon=False)


def plot_overlay(x, pred, path: str, *, class_names: Sequence[str], title: str | None = None,
                 slices: Sequence[int] | None = None, alpha: float = 0.45,
                 dpi: int = 100) -> str:
  """The predicted mask over the input (2-D: the input beside the overlay; 3-D: three slices
  through ``slices`` (d, h, w) or the ``section``), with a legend of each drawn class and
  its share of the prediction."""
  x = _check(x, pred)
  pred = np.asarray(pred)
  classes = drawn_classes(class_names, pred)
  planes = _planes(x, [pred], slices or section([pred], classes))
  panels = [(planes[0][0], None, "input")] if x.ndim == 3 else []
  panels += [(picture, ms[0], label or "prediction") for picture, ms, label in planes]
  fig, axes = _figure([p for p, _, _ in panels], title, dpi)
  for ax, (picture, mask, label) in zip(axes, panels):
    ax.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1)
    if mask is not None:
      ax.imshow(_rgba(mask, classes, alpha), interpolation="nearest")
    ax.set_title(label, fontsize=9)
    figures.bare(ax)
  share = np.bincount(pred.astype(np.int64).ravel(), minlength=len(class_names)) / pred.size
  _legend(fig, [Patch(color=colour(c), label=f"{class_names[c]} {100 * share[c]:.1f} %")
                for c in classes])
  return figures.save(fig, path)


def _outline(ax, mask: np.ndarray, c: int, style: str, width: float, rgba) -> None:
  inside = (mask == c).astype(np.float32)
  if inside.min() < inside.max():     # contour() warns about a constant field
    ax.contour(inside, levels=[0.5], colors=[rgba], linewidths=width, linestyles=style)


def contour_colours(classes: Sequence[int]) -> dict[int, tuple]:
  """{class: (truth colour, prediction colour)}: the class's own colour for both, told apart
  by line style; with a single drawn class, green truth and magenta prediction."""
  if len(classes) == 1:
    return {classes[0]: (TRUTH_COLOUR, PREDICTION_COLOUR)}
  return {c: (colour(c), colour(c)) for c in classes}


def plot_contours(x, truth, pred, path: str, *, class_names: Sequence[str],
                  title: str | None = None, slices: Sequence[int] | None = None,
                  dpi: int = 100) -> str:
  """Each drawn class outlined in the truth (solid) and the prediction (dashed) over the input
  (3-D: three slices, as ``plot_overlay``). A truth without any labelled pixel is refused."""
  x = _check(x, truth, pred)
  truth, pred = np.asarray(truth), np.asarray(pred)
  if not (truth != IGNORE_LABEL).any():
    raise ValueError("contours need a labelled example: every pixel of this one is "
                     "unlabelled (255); pick a labelled split")
  classes = drawn_classes(class_names, truth)
  lines = contour_colours(classes)
  planes = _planes(x, [truth, pred], slices or section([truth, pred], classes))
  fig, axes = _figure([p for p, _, _ in planes], title, dpi)
  for ax, (picture, (t, p), label) in zip(axes, planes):
    ax.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1)
    for c, (truth_rgba, pred_rgba) in lines.items():
      _outline(ax, t, c, "solid", 1.5, truth_rgba)
      _outline(ax, p, c, "dashed", 1.1, pred_rgba)
    ax.set_title(label or "truth (solid) vs prediction (dashed)", fontsize=9)
    figures.bare(ax)
  if len(classes) == 1:
    name = class_names[classes[0]]
    handles = [Line2D([], [], color=TRUTH_COLOUR, label=f"{name}: truth"),
               Line2D([], [], color=PREDICTION_COLOUR, ls="dashed", label=f"{name}: prediction")]
  else:
    handles = [Patch(color=colour(c), label=str(class_names[c])) for c in classes]
    handles += [Line2D([], [], color="k", ls="solid", label="truth"),
                Line2D([], [], color="k", ls="dashed", label="prediction")]
  _legend(fig, handles)
  return figures.save(fig, path)


def example_scores(truth, pred, num_classes: int) -> dict:
  """Dice / IoU per class (K,) and their means of one example (cnnlab.training.seg_metrics
  scores; unlabelled pixels left out; NaN for a class in neither mask)."""
  from cnnlab.training import seg_metrics
  truth, pred = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
  valid = truth != IGNORE_LABEL
  t, p = truth[valid], pred[valid]
  count = lambda v: np.bincount(v, minlength=num_classes)[:num_classes]
  totals = {"intersection": count(t[t == p]), "predicted": count(p), "true": count(t),
            "pixels": np.int64(valid.sum()), "errors": np.int64((t != p).sum())}
  return seg_metrics.scores(totals)


def plot_dice(dice, path: str, *, class_names: Sequence[str], title: str | None = None,
              split_dice=None, split_label: str = "whole split", dpi: int = 100) -> str:
  """Per-class Dice as bars with their values (a class absent from truth and prediction:
  'absent'), the example's mean over the classes present as a dotted line (class 0 left out
  when named "background", as the evaluation's mean Dice); ``split_dice`` (K,) adds the whole
  split's bars beside the example's."""
  dice = np.asarray(dice, np.float64)
  k = len(class_names)
  if dice.shape != (k,) or (split_dice is not None and np.shape(split_dice) != (k,)):
    raise ValueError(f"need one Dice per class ({k}); got {dice.shape}")
  series = [("this example", dice)] + ([] if split_dice is None else
                                      [(split_label, np.asarray(split_dice, np.float64))])
  width = 0.8 / len(series)
  fig = figures.new_figure(max(6.0, 1.1 * k + 2.0), 4.4, dpi)
  ax = fig.add_subplot(1, 1, 1)
  handles = []
  for j, (label, values) in enumerate(series):
    where = np.arange(k) - 0.4 + width * (j + 0.5)
    shade = 1.0 if j == 0 else 0.45
    bars = ax.bar(where, np.nan_to_num(values), width, color=[colour(c) for c in range(k)],
                  alpha=shade)
    handles.append(Patch(color="0.4", alpha=shade, label=label))
    for bar, v in zip(bars, values):
      ax.text(bar.get_x() + bar.get_width() / 2, (0 if np.isnan(v) else v) + 0.01,
              "absent" if np.isnan(v) else f"{v:.3f}", ha="center", va="bottom", fontsize=7)
  first = 1 if str(class_names[0]).lower() == "background" else 0
  if np.isfinite(dice[first:]).any():
    mean = float(np.nanmean(dice[first:]))
    ax.axhline(mean, color="k", ls=":", lw=1)
    handles.append(Line2D([], [], color="k", ls=":", label=f"example mean {mean:.3f}"
                          + (" (no background)" if first else "")))
  ax.set_xticks(np.arange(k), labels=[str(n) for n in class_names], fontsize=8,
                rotation=30 if max(len(str(n)) for n in class_names) > 8 else 0)
  ax.set_ylim(0, 1.32)
  ax.set_yticks(np.linspace(0, 1, 6))
  ax.set_ylabel("Dice")
  ax.legend(handles=handles, fontsize=7, loc="upper center", ncol=2, frameon=False)
  if title:
    ax.set_title(title, fontsize=9)
  fig.subplots_adjust(left=0.12, right=0.97, bottom=0.2, top=0.88)
  return figures.save(fig, path)
