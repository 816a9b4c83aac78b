"""What every picture shares: an Agg figure of a fixed size, PNG saving, min-max scaling, the
near-square grid of panels, and drawing one input (or map) of any rank into a panel.

Drawing uses matplotlib's object API on a ``Figure`` with the Agg canvas: no pyplot, no GUI,
no global backend switch; works on headless machines. Figure sizes are fixed by the arguments
(no tight bounding box), so a PNG's pixel size is known in advance: grids of ``rows x cols``
cells are ``cols * cell_inches`` wide and ``rows * cell_inches + HEADER_INCHES`` high, times
``dpi``; ``grid_shape`` gives rows and cols.

Panels by rank of the array drawn (channels last): a 1-D series (L, C) is a line per channel
against time; a 2-D image (H, W, C) is grey for one channel, RGB for three, the channel mean
otherwise; a 3-D volume (D, H, W, C) shows its middle slice along the first axis.
"""
from __future__ import annotations

import math
import os
import textwrap
from typing import Callable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HEADER_INCHES = 0.5

# Class names of the datasets with fixed label orders (for workdirs that record none).
def grid_shape(n: int) -> tuple[int, int]:
  """(rows, cols) of the near-square grid used for n filters or maps."""
  if n < 1:
    raise ValueError(f"need at least one panel; got n={n}")
  cols = int(math.ceil(math.sqrt(n)))
  return int(math.ceil(n / cols)), cols


def new_figure(width: float, height: float, dpi: int) -> Figure:
  fig = Figure(figsize=(width, height), dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def save(fig: Figure, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=fig.dpi, format="png")
  return path


def unit(x: np.ndarray) -> np.ndarray:
  """Min-max scaled to [0, 1] (a constant array becomes 0.5)."""
  x = np.asarray(x, np.float32)
  lo, hi = float(np.min(x)), float(np.max(x))
  return np.full_like(x, 0.5) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def as_picture(image: np.ndarray) -> np.ndarray:
  """A 2-D (H, W, C) input as something imshow draws: grey (H, W) or RGB (H, W, 3), [0, 1]."""
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    return unit(image)
  if image.shape[-1] == 3:
    return unit(image)
  return unit(image.mean(axis=-1))


def mid_slice(volume: np.ndarray, axis: int = 0, index: int | None = None) -> np.ndarray:
  """The slice ``index`` (default: the middle) of a (D, H, W[, C]) volume along ``axis``."""
  size = volume.shape[axis]
  index = size // 2 if index is None else index
  if not 0 <= index < size:
    raise ValueError(f"slice {index} is outside axis {axis} of size {size}")
  return np.take(volume, index, axis=axis)


def draw_input(ax, x: np.ndarray, *, cmap: str = "gray", lw: float = 1.0) -> None:
  """One input or map (channels last) into ``ax``, by its rank (see the module docstring)."""
  x = np.asarray(x, np.float32)
  if x.ndim == 2:      # (L, C): a series
    t = np.arange(x.shape[0])
    for c in range(min(x.shape[1], 8)):
      ax.plot(t, x[:, c], lw=lw)
    ax.set_xlim(0, max(1, x.shape[0] - 1))
    return
  if x.ndim == 4:      # (D, H, W, C): middle slice
    x = mid_slice(x)
  picture = as_picture(x)
  ax.imshow(picture, cmap=None if picture.ndim == 3 else cmap, interpolation="nearest",
            vmin=0.0, vmax=1.0)


def bare(ax) -> None:
  ax.set_xticks([])
  ax.set_yticks([])


def header(fig: Figure, title: str | None, width_inches: float, height_inches: float) -> None:
  """At most two lines of 8 pt title (~16 characters per inch) in the grid's header."""
  if not title:
    return
  width = max(10, int(width_inches * 16))
  lines = textwrap.wrap(title, width)
  text = "\n".join(lines[:2])
  if len(lines) > 2:
    text = text[:-1] + "…"
  fig.suptitle(text, fontsize=8, y=1.0 - 0.08 * HEADER_INCHES / height_inches, va="top")


def panel_grid(panels: Sequence[tuple[Callable, str]], path: str, *, title: str | None,
               cell_inches: float, dpi: int) -> str:
  """A near-square grid of panels ``(draw(ax), label)`` under a header, written to ``path``."""
  rows, cols = grid_shape(len(panels))
  height = rows * cell_inches + HEADER_INCHES
  fig = new_figure(cols * cell_inches, height, dpi)
  grid = fig.add_gridspec(rows, cols, left=0.01, right=0.99, bottom=0.01,
                          top=1.0 - HEADER_INCHES / height, wspace=0.08, hspace=0.3)
  for i, (draw, label) in enumerate(panels):
    ax = fig.add_subplot(grid[i // cols, i % cols])
    draw(ax)
    bare(ax)
    if label:
      ax.set_title(label, fontsize=7, pad=2)
  header(fig, title, cols * cell_inches, height)
  return save(fig, path)
