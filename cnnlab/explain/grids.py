"""Grids of small panels: the filters of a layer, the feature maps of a layer, and the gallery
of a model's most confident mistakes. 1-D, 2-D and 3-D alike (see ``figures`` for how each
rank is drawn)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnnlab.explain import figures


def _filter_panel(f: np.ndarray, in_channel: int | None) -> np.ndarray:
  """One filter (*k, in) as a drawable array: 1-D (k, 1) line, 2-D (k, k[, 3]), 3-D middle."""
  spatial = f.ndim - 1
  if in_channel is not None:
    f = f[..., in_channel:in_channel + 1]
  elif not (spatial == 2 and f.shape[-1] == 3):
    f = f.mean(axis=-1, keepdims=True)
  if spatial == 3:
    f = figures.mid_slice(f)
  return figures.unit(f) if spatial >= 2 else f


def plot_filters(kernel, path: str, *, title: str | None = None, max_filters: int = 96,
                 in_channel: int | None = None, cell_inches: float = 0.8,
                 dpi: int = 100) -> str:
  """One panel per output filter of a convolution ``kernel`` (*k, in, out), k of 1-3 dims.

  2-D: three input channels are drawn as an RGB image, one as grey; otherwise the input
  channel ``in_channel`` (default: the mean over input channels), each filter min-max scaled
  on its own. 1-D: the filter as a line over its taps. 3-D: the middle slice of the first
  kernel axis. At most ``max_filters`` panels.
  """
  k = np.asarray(kernel, np.float32)
  if not 3 <= k.ndim <= 5:
    raise ValueError(f"kernel must be [*k, in, out] with 1-3 kernel dims; got shape {k.shape}")
  if in_channel is not None and not 0 <= in_channel < k.shape[-2]:
    raise ValueError(f"in_channel={in_channel} is outside the kernel's {k.shape[-2]} inputs")
  panels = []
  for o in range(min(k.shape[-1], max_filters)):
    img = _filter_panel(k[..., o], in_channel)
    panels.append((lambda ax, img=img: figures.draw_input(ax, img, lw=1.5), str(o)))
  return figures.panel_grid(panels, path, title=title, cell_inches=cell_inches, dpi=dpi)


def plot_feature_maps(maps, path: str, *, image=None, title: str | None = None,
                      max_maps: int = 64, cell_inches: float = 1.0, dpi: int = 100) -> str:
  """One panel per channel of ``maps`` (*spatial, C) with 1-3 spatial dims, each min-max
  scaled (2-D, 3-D: the middle slice) or drawn as a line (1-D), preceded by the input
  ``image`` when given. At most ``max_maps`` channels."""
  m = np.asarray(maps, np.float32)
  if not 2 <= m.ndim <= 4:
    raise ValueError(f"maps must be [*spatial, C] with 1-3 spatial dims; got shape {m.shape}")
  panels = []
  if image is not None:
    img = np.asarray(image, np.float32)
    panels.append((lambda ax: figures.draw_input(ax, img), "input"))
  for c in range(min(m.shape[-1], max_maps)):
    one = m[..., c:c + 1]
    panels.append((lambda ax, one=one: figures.draw_input(ax, one, cmap="viridis"), str(c)))
  return figures.panel_grid(panels, path, title=title, cell_inches=cell_inches, dpi=dpi)


def confident_mistakes(probabilities, labels, k: int = 16) -> np.ndarray:
  """Indices of the ``k`` wrong predictions with the highest predicted probability, most
  confident first (fewer when there are fewer mistakes)."""
  p = np.asarray(probabilities)
  labels = np.asarray(labels)
  predicted = p.argmax(axis=-1)
  wrong = np.flatnonzero(predicted != labels)
  confidence = p[wrong, predicted[wrong]]
  return wrong[np.argsort(-confidence, kind="stable")][:k]


def plot_mistakes(inputs, probabilities, labels, path: str, *,
                  class_names: Sequence[str] | None = None, indices=None, k: int = 16,
                  title: str | None = None, cell_inches: float = 1.4, dpi: int = 100) -> str:
  """A gallery of the most confident mistakes: each panel an input (N, *spatial, C) labelled
  'true -> predicted (probability)'. ``indices`` overrides the choice; ValueError when the
  model made no mistake on these inputs."""
  p = np.asarray(probabilities, np.float32)
  labels = np.asarray(labels)
  chosen = confident_mistakes(p, labels, k) if indices is None else np.asarray(indices)
  if not len(chosen):
    raise ValueError(f"no mistakes among the {len(labels)} inputs")
  name = (lambda c: str(class_names[c])) if class_names is not None else str
  panels = []
  for i in chosen:
    pred = int(p[i].argmax())
    label = f"#{i} {name(int(labels[i]))}→{name(pred)} ({p[i, pred]:.2f})"
    panels.append((lambda ax, x=np.asarray(inputs[i]): figures.draw_input(ax, x), label))
  return figures.panel_grid(panels, path, title=title, cell_inches=cell_inches, dpi=dpi)
