"""A heat map (an attribution, a Grad-CAM or occlusion map) drawn over the input it explains,
for one example of any rank:

- 1-D series (L, C): each channel's line coloured by the heat at every time step (as Wang,
  Yan & Oates 2017 draw class activation maps on GunPoint), one row per channel (at most 4);
- 2-D images (H, W, C): the input beside the input overlaid with the heat;
- 3-D volumes (D, H, W, C): the three orthogonal slices through the middle (or through
  ``slices=(d, h, w)``, or through the hottest voxel with ``slices='peak'``), each overlaid
  with the heat.

Non-negative heat uses the jet colour map from 0 to its maximum; heat with negative
values (signed attributions) a diverging one centred on 0. Over images and slices the
heat is opaque where it is strong and transparent where it is near 0. Every picture has a
colour bar.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colors
from matplotlib.collections import LineCollection

from cnnlab.explain import figures


def _norm(heat: np.ndarray):
  lo, hi = float(np.min(heat)), float(np.max(heat))
  if lo < 0:
    m = max(-lo, hi, 1e-12)
    return colors.Normalize(-m, m), "coolwarm"
  return colors.Normalize(0.0, max(hi, 1e-12)), "jet"


def _alpha(heat: np.ndarray, norm, alpha: float) -> np.ndarray:
  """Per-position opacity growing with |heat|, so cold positions show the plain input."""
  top = max(abs(norm.vmin), abs(norm.vmax), 1e-12)
  return alpha * np.clip(np.abs(heat) / top, 0.0, 1.0) ** 0.5


def _series(fig, x, heat, norm, cmap, channel_names):
  n = min(x.shape[-1], 4)
  axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
  t = np.arange(x.shape[0])
  for c, ax in enumerate(axes):
    points = np.stack([t, x[:, c]], axis=1)
    segments = np.stack([points[:-1], points[1:]], axis=1)
    lines = LineCollection(segments, cmap=cmap, norm=norm, linewidths=2.5)
    lines.set_array(0.5 * (heat[:-1] + heat[1:]))
    ax.add_collection(lines)
    ax.set_xlim(0, max(1, len(t) - 1))
    pad = 0.05 * (np.ptp(x[:, c]) or 1.0)
    ax.set_ylim(x[:, c].min() - pad, x[:, c].max() + pad)
    ax.set_ylabel(channel_names[c] if channel_names else f"channel {c}", fontsize=8)
    ax.grid(True, alpha=0.3)
  axes[-1].set_xlabel("time step")
  return lines, list(axes)


def _image(fig, x, heat, norm, cmap, alpha):
  left, right = fig.subplots(1, 2)
  picture = figures.as_picture(x)
  for ax in (left, right):
    ax.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1)
    figures.bare(ax)
  left.set_title("input", fontsize=9)
  right.set_title("heat over input", fontsize=9)
  im = right.imshow(heat, cmap=cmap, norm=norm, alpha=_alpha(heat, norm, alpha))
  return im, [left, right]


def _volume(fig, x, heat, norm, cmap, alpha, slices):
  if isinstance(slices, str):
    if slices != "peak":
      raise ValueError(f"slices={slices!r} must be 'peak' or one index per axis (d, h, w)")
    slices = np.unravel_index(int(np.argmax(np.abs(heat))), heat.shape)
  slices = [None] * 3 if slices is None else list(slices)
  if len(slices) != 3:
    raise ValueError(f"slices={slices!r} must give one index per axis (d, h, w)")
  axes = fig.subplots(1, 3)
  for axis, ax in enumerate(axes):
    index = x.shape[axis] // 2 if slices[axis] is None else int(slices[axis])
    picture = figures.as_picture(figures.mid_slice(x, axis, index))
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    h = figures.mid_slice(heat, axis, index)
    im = ax.imshow(h, cmap=cmap, norm=norm, alpha=_alpha(h, norm, alpha))
    ax.set_title(f"axis {axis} ({'DHW'[axis]}) slice {index}", fontsize=9)
    figures.bare(ax)
  return im, list(axes)


def plot_heatmap(x, heat, path: str, *, title: str | None = None, alpha: float = 0.8,
                 slices: Sequence[int | None] | str | None = None,
                 channel_names: Sequence[str] | None = None, dpi: int = 100) -> str:
  """Writes ``heat`` (*spatial) over the input ``x`` (*spatial, C) to ``path`` (PNG)."""
  x = np.asarray(x, np.float32)
  heat = np.asarray(heat, np.float32)
  if heat.shape != x.shape[:-1] or not 2 <= x.ndim <= 4:
    raise ValueError(f"need an input (*spatial, C) with 1-3 spatial dims and a heat map of "
                     f"its spatial shape; got {x.shape} and {heat.shape}")
  norm, cmap = _norm(heat)
  rank = x.ndim - 1
  rows = min(x.shape[-1], 4) if rank == 1 else 1
  size = {1: (10.0, 1.8 * rows + 0.9), 2: (8.0, 4.4), 3: (11.0, 4.2)}[rank]
  fig = figures.new_figure(*size, dpi)
  if rank == 1:
    mappable, axes = _series(fig, x, heat, norm, cmap, channel_names)
  elif rank == 2:
    mappable, axes = _image(fig, x, heat, norm, cmap, alpha)
  else:
    mappable, axes = _volume(fig, x, heat, norm, cmap, alpha, slices)
  height = size[1]      # margins in inches: axis labels below, up to two title lines above
  fig.subplots_adjust(left=0.08 if rank == 1 else 0.02, right=0.86,
                      bottom=(0.6 if rank == 1 else 0.3) / height,
                      top=1.0 - (0.75 if title else 0.35) / height, wspace=0.08, hspace=0.15)
  bar = fig.colorbar(mappable, ax=axes, fraction=0.04, pad=0.02)
  bar.set_label("attribution" if norm.vmin < 0 else "importance", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  return figures.save(fig, path)
