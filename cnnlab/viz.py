"""Pictures of a network and its training: first-layer filters, feature maps, training curves
and confusion matrices, written as PNG files.

Two halves:
- Looking inside a model (needs jax): ``trace_layers`` runs ``model.apply`` once under
  ``flax.linen.intercept_methods`` and records, in call order, the output of every submodule's
  ``__call__`` (its path such as ``conv1`` or ``layer1_0/conv2``, its class, the array).
  ``feature_maps`` picks one layer's maps for one image; ``first_conv_kernel`` finds the first
  convolution that is called and returns its HWIO kernel. The outputs are those of the modules
  themselves: for ``lenet5``'s ``conv1`` that is the convolution before its ReLU (the ReLU is a
  function, not a module).
- Drawing (numpy in, PNG out): ``plot_filters``, ``plot_feature_maps``, ``plot_curves``
  (``metrics.jsonl`` rows of one or several runs overlaid), ``plot_confusion``.

Drawing uses matplotlib's object API on a ``Figure`` with the Agg canvas: no pyplot, no GUI,
no global backend switch; works on headless machines. Figure sizes are fixed by
the arguments (no tight bounding box), so a PNG's pixel size is known in advance: grids of
``rows x cols`` cells are ``cols * cell_inches`` wide and ``rows * cell_inches + HEADER_INCHES``
high, times ``dpi``; ``grid_shape`` gives rows and cols.
"""
from __future__ import annotations

import dataclasses
import math
import os
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HEADER_INCHES = 0.5

# Class names for confusion-matrix axes (the datasets' own label orders).
CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"),
}


# --- looking inside a model --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerOutput:
  name: str        # module path joined by '/', e.g. 'layer1_0/conv1'
  kind: str        # the module's class name, e.g. 'Conv'
  output: Any      # the array it returned (numpy), batch first


def trace_layers(model, variables, images) -> list[LayerOutput]:
  """Every submodule's ``__call__`` output for ``images`` (NHWC batch), in call order, in
  inference mode (``train=False``: BatchNorm running statistics, no dropout).

  A module called more than once appears once per call (later calls get a ``#2``, ``#3``
  suffix). The top-level module and non-array outputs (e.g. GoogLeNet's named tuple) are left
  out.
  """
  import flax.linen as nn
  import jax

  records: list[LayerOutput] = []
  seen: dict[str, int] = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = tuple(context.module.path)
    if context.method_name == "__call__" and path and hasattr(out, "shape"):
      name = "/".join(path)
      seen[name] = seen.get(name, 0) + 1
      if seen[name] > 1:
        name = f"{name}#{seen[name]}"
      records.append(LayerOutput(name, type(context.module).__name__, out))
    return out

  with nn.intercept_methods(interceptor):
    model.apply(variables, images, train=False)
  return [dataclasses.replace(r, output=np.asarray(jax.device_get(r.output))) for r in records]


def spatial_layers(model, variables, images) -> list[LayerOutput]:
  """The traced layers whose output is a (batch, H, W, C) map: the ones worth drawing."""
  return [r for r in trace_layers(model, variables, images) if r.output.ndim == 4]


def feature_maps(model, variables, image, layer: str | None = None) -> tuple[str, np.ndarray]:
  """``(layer name, maps [H, W, C])`` of one ``image`` ([H, W, C] or [1, H, W, C]).

  ``layer=None`` takes the first layer with a spatial output (the first convolution in every
  model of the zoo). An unknown name raises ValueError listing the valid ones.
  """
  image = np.asarray(image, np.float32)
  if image.ndim == 3:
    image = image[None]
  if image.ndim != 4 or image.shape[0] != 1:
    raise ValueError(f"image must be [H, W, C] or [1, H, W, C]; got shape {image.shape}")
  layers = spatial_layers(model, variables, image)
  if not layers:
    raise ValueError(f"{type(model).__name__} has no layer with a [N, H, W, C] output")
  if layer is None:
    chosen = layers[0]
  else:
    found = [r for r in layers if r.name == layer]
    if not found:
      raise ValueError(f"layer={layer!r} is not a spatial layer of {type(model).__name__}; "
                       f"valid: {', '.join(r.name for r in layers)}")
    chosen = found[0]
  return chosen.name, chosen.output[0]


def _subtree(tree: Mapping, path: Sequence[str]):
  for part in path:
    if not isinstance(tree, Mapping) or part not in tree:
      return None
    tree = tree[part]
  return tree


def first_conv_kernel(model, variables, image_shape) -> tuple[str, np.ndarray]:
  """``(layer name, kernel [kh, kw, in, out])`` of the first convolution the model calls.

  Found by tracing the model on zeros of ``image_shape`` (H, W, C) and taking the first
  called module whose parameters hold a 4-D ``kernel`` (call order, not the parameter dict's
  order, which pytree operations sort alphabetically).
  """
  zeros = np.zeros((1, *image_shape), np.float32)
  for record in trace_layers(model, variables, zeros):
    params = _subtree(variables.get("params", {}), record.name.split("#")[0].split("/"))
    kernel = params.get("kernel") if isinstance(params, Mapping) else None
    if kernel is not None and np.ndim(kernel) == 4:
      return record.name, np.asarray(kernel, np.float32)
  raise ValueError(f"{type(model).__name__} calls no module with a 4-D 'kernel' parameter")


# --- drawing helpers ----------------------------------------------------------------------------
def grid_shape(n: int) -> tuple[int, int]:
  """(rows, cols) of the near-square grid used for n filters or maps."""
  if n < 1:
    raise ValueError(f"need at least one panel; got n={n}")
  cols = int(math.ceil(math.sqrt(n)))
  return int(math.ceil(n / cols)), cols


def _new_figure(width: float, height: float, dpi: int) -> Figure:
  fig = Figure(figsize=(width, height), dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=fig.dpi, format="png")
  return path


def _unit(x: np.ndarray) -> np.ndarray:
  """Min-max scaled to [0, 1] (a constant array becomes 0.5)."""
  lo, hi = float(np.min(x)), float(np.max(x))
  return np.full_like(x, 0.5) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def _image_grid(panels: Sequence[tuple[np.ndarray, str]], path: str, *, title: str | None,
                cell_inches: float, dpi: int, cmap: str) -> str:
  rows, cols = grid_shape(len(panels))
  fig = _new_figure(cols * cell_inches, rows * cell_inches + HEADER_INCHES, dpi)
  top = 1.0 - HEADER_INCHES / (rows * cell_inches + HEADER_INCHES)
  grid = fig.add_gridspec(rows, cols, left=0.01, right=0.99, bottom=0.01, top=top,
                          wspace=0.08, hspace=0.25)
  for i, (img, label) in enumerate(panels):
    ax = fig.add_subplot(grid[i // cols, i % cols])
    ax.imshow(img, cmap=None if img.ndim == 3 else cmap, interpolation="nearest",
              vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if label:
      ax.set_title(label, fontsize=7, pad=2)
  if title:  # at most two lines of 8 pt (~16 characters per inch) fit the header
    width = max(10, int(cols * cell_inches * 16))
    text = "\n".join(textwrap.wrap(title, width)[:2])
    if len(textwrap.wrap(title, width)) > 2:
      text = text[:-1] + "…"
    fig.suptitle(text, fontsize=8, y=1.0 - 0.08 * HEADER_INCHES /
                 (rows * cell_inches + HEADER_INCHES), va="top")
  return _save(fig, path)


# --- the pictures -------------------------------------------------------------------------------
def plot_filters(kernel, path: str, *, title: str | None = None, max_filters: int = 96,
                 in_channel: int | None = None, cell_inches: float = 0.8,
                 dpi: int = 100) -> str:
  """One panel per output filter of an HWIO ``kernel``.

  Three input channels are drawn as an RGB image, one as grey; otherwise the input channel
  ``in_channel`` (default: the mean over input channels). Each filter is min-max scaled on
  its own. At most ``max_filters`` panels.
  """
  k = np.asarray(kernel, np.float32)
  if k.ndim != 4:
    raise ValueError(f"kernel must be 4-D [kh, kw, in, out]; got shape {k.shape}")
  panels = []
  for o in range(min(k.shape[3], max_filters)):
    f = k[:, :, :, o]
    if f.shape[2] == 3 and in_channel is None:
      img = _unit(f)
    elif in_channel is not None:
      img = _unit(f[:, :, in_channel])
    else:
      img = _unit(f.mean(axis=2))
    panels.append((img, str(o)))
  return _image_grid(panels, path, title=title, cell_inches=cell_inches, dpi=dpi, cmap="gray")


def plot_feature_maps(maps, path: str, *, image=None, title: str | None = None,
                      max_maps: int = 64, cell_inches: float = 1.0, dpi: int = 100) -> str:
  """One panel per channel of ``maps`` [H, W, C] (each min-max scaled), preceded by the
  input ``image`` [H, W, 1 or 3] when given. At most ``max_maps`` channels."""
  m = np.asarray(maps, np.float32)
  if m.ndim != 3:
    raise ValueError(f"maps must be [H, W, C]; got shape {m.shape}")
  panels = []
  if image is not None:
    img = np.asarray(image, np.float32)
    img = _unit(img[..., 0] if img.shape[-1] == 1 else img)
    panels.append((img, "input"))
  panels += [(_unit(m[:, :, c]), str(c)) for c in range(min(m.shape[2], max_maps))]
  return _image_grid(panels, path, title=title, cell_inches=cell_inches, dpi=dpi,
                     cmap="viridis")


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
  fig = _new_figure(width, height, dpi)
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
  if axes[0, 0].lines:
    axes[0, 0].legend(fontsize=7, loc="upper right")
  if title:
    fig.suptitle(title)
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.92 if title else 0.96,
                      wspace=0.22, hspace=0.28)
  return _save(fig, path)


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
  fig = _new_figure(size, size, dpi)
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
  return _save(fig, path)

