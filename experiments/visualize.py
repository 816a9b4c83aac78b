r"""Pictures of a trained workdir: what the network learned, where it looks, how it trained.

    python -m experiments.visualize --workdir=runs/lenet5_mnist \
        --what=filters,feature_maps,saliency,gradcam,mistakes,curves,confusion \
        [--layer=conv1,conv2] [--image_index=0] [--split=test] [--out_dir=DIR] \
        [--checkpoint=auto|best|latest|STEP]

``--what`` lists any of (default filters,feature_maps,curves,confusion; for a segmentation run
overlay,contours,dice,curves):
- ``filters``: the kernels of each ``--layer`` (default: the first convolution called);
- ``feature_maps``: the input and the maps of each ``--layer`` (default: the first layer with a
  spatial output) for example ``--image_index`` of the eval split;
- ``saliency``, ``smoothgrad``, ``integrated_gradients``, ``occlusion``: a heat map over that
  example for its predicted class; ``gradcam`` at each ``--layer`` (default: the deepest feature
  map larger than 1 in every axis);
- ``mistakes``: the most confident mistakes among the first ``--max_examples`` eval examples;
- ``curves``: loss and accuracy against steps and wall time, from ``metrics.jsonl``;
- ``confusion``: from ``eval_<split>.json`` (python -m experiments.evaluate), else computed on
  the first ``--max_examples`` examples (segmentation: labelled pixels by true and predicted
  class, from that file or over the whole split).
For a segmentation run, example ``--image_index`` of the split is predicted whole (the run's
tiled inference) and drawn (cnnlab/explain/masks.py):
- ``overlay``: the predicted mask over the input (a volume: three orthogonal slices through
  the centre of its largest structure);
- ``contours``: the outline of each class in the truth (solid) and the prediction (dashed);
- ``dice``: the example's Dice per class as bars, beside the split's from
  ``eval_<split>.json`` when that file is of the same checkpoint.
``feature_maps`` then shows the maps of the example's central tile (``dataset.tile_shape``);
the attributions and ``mistakes`` are for classification runs and are refused.
PNGs go to ``--out_dir`` (default ``<workdir>/figures``), named ``<kind>.png``
(``<kind>_<layer>.png`` per layer); each path is printed.

Exit status: 0 done; 2 usage error (never-trained workdir, unknown --what or layer, bad values).
"""
from __future__ import annotations

import json
import os

from absl import flags
import numpy as np

from experiments import cli

KINDS = ("filters", "feature_maps", "saliency", "smoothgrad", "integrated_gradients",
         "gradcam", "occlusion", "mistakes", "curves", "confusion")
DEFAULT_WHAT = ("filters", "feature_maps", "curves", "confusion")
MASK_KINDS = ("overlay", "contours", "dice")
SEGMENTATION_KINDS = MASK_KINDS + ("filters", "feature_maps", "curves", "confusion")
DEFAULT_SEGMENTATION = ("overlay", "contours", "dice", "curves")
MAX_MAPS, MAX_FILTERS = 64, 96     # panels per grid
ATTRIBUTIONS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "occlusion")

_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir (holds config.json and "
                                  "checkpoints/).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the PNGs (default: "
                               "<workdir>/figures).")
_CHECKPOINT = cli.shared_string_flag("checkpoint", "latest", "auto (best, else latest), best, "
                                     "latest, or a step number.")
_WHAT = flags.DEFINE_list("what", None, f"Pictures to draw: {', '.join(KINDS)}; for a "
                          f"segmentation run {', '.join(SEGMENTATION_KINDS)} (default: "
                          f"{','.join(DEFAULT_WHAT)}; segmentation: "
                          f"{','.join(DEFAULT_SEGMENTATION)}).")
_LAYER = cli.shared_string_flag("layer", None, "Layer name(s), comma-separated, for filters, "
                                "feature_maps and gradcam.")
_IMAGE_INDEX = flags.DEFINE_integer("image_index", 0, "Index of the example in the eval split.")
_SPLIT = cli.shared_string_flag("split", None, "Dataset split (default: the recipe's eval split).")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 2000, "Examples searched for mistakes.")


def _load_json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_what(what, segmentation: bool = False) -> tuple[str, ...]:
  """The picture kinds asked for, checked against the run's task."""
  from cnnlab.training import ConfigError
  what = tuple(w.strip() for w in what if w.strip())
  valid = SEGMENTATION_KINDS if segmentation else KINDS
  bad = [w for w in what if w not in valid]
  if bad or not what:
    other = [w for w in bad if w in KINDS + MASK_KINDS]
    if other:
      needs = "a classification" if segmentation else "a segmentation"
      raise ConfigError(f"--what={','.join(what)!r}: {', '.join(other)} is drawn for {needs} "
                        f"run only; this run's kinds: {', '.join(valid)}")
    raise ConfigError(f"--what={','.join(what)!r}: {', '.join(bad) or 'nothing'} is not a "
                      f"picture kind; valid: {', '.join(valid)}")
  return what


def _filters(run, layers, out_dir):
  from cnnlab.explain import features, grids
  found = features.layers(run.model, run.variables, run.input_shape)
  with_kernel = [l for l in found if np.ndim(features.kernel_of(run.variables, l.name)) >= 3]
  if not layers:
    layers = [features.first_kernel_layer(run.model, run.variables, run.input_shape).name]
  out = {}
  for name in layers:
    layer = features.check_layer(name, with_kernel, "layer with a convolution kernel")
    kernel = np.asarray(features.kernel_of(run.variables, layer.name), np.float32)
    shape = "x".join(map(str, kernel.shape[:-1]))
    n = kernel.shape[-1]
    count = f"{n} filters" if n <= MAX_FILTERS else f"the first {MAX_FILTERS} of {n} filters"
    out[name] = grids.plot_filters(
        kernel, os.path.join(out_dir, f"filters_{_safe(name)}.png"), max_filters=MAX_FILTERS,
        title=f"{run.name} {name}: {count} {shape}, step {run.step}")
  return out


def _feature_maps(run, layers, x, label_text, index, out_dir):
  from cnnlab.explain import features, grids
  out = {}
  for name in layers or [None]:
    layer_name, maps = features.feature_maps(run.model, run.variables, x, name)
    shape = "x".join(map(str, maps.shape[:-1]))
    n = maps.shape[-1]
    count = f"{n} maps" if n <= MAX_MAPS else f"the first {MAX_MAPS} of {n} maps"
    out[layer_name] = grids.plot_feature_maps(
        maps, os.path.join(out_dir, f"feature_maps_{_safe(layer_name)}.png"), image=x,
        max_maps=MAX_MAPS, title=f"{run.name} {layer_name}: {count} {shape}, example "
                                 f"{index} ({label_text}), step {run.step}")
  return out


def _safe(name: str) -> str:
  return name.replace("/", "_").replace("#", "_")


def _attribution(run, kind, layers, x, label, index, out_dir):
  from cnnlab.explain import explainers, heatmaps
  from cnnlab.training import inference
  probs = inference.probabilities(run, x[None])[0]
  pred = int(probs.argmax())
  out = {}
  for layer in (layers or [explainers.default_layer(run.model, run.variables, x.shape)]
                if kind == "gradcam" else [None]):
    heat = explainers.heat_maps(kind, run.model, run.variables, x[None], [pred],
                                layer=layer)[0]
    where = f" at {layer}" if layer else ""
    title = (f"{run.name} {explainers.TITLES[kind]}{where}, example {index}: true "
             f"{run.class_name(label)}, predicted {run.class_name(pred)} ({probs[pred]:.2f})")
    if kind == "integrated_gradients":
      c = explainers.ig_completeness(run.model, run.variables, x[None], [pred])
      title += (f"\nsum of attributions {c['sum'][0]:.3f} vs f(x) - f(0) = "
                f"{c['delta'][0]:.3f} (completeness gap {c['gap'][0]:.3g})")
    stem = f"{kind}_{_safe(layer)}" if layer else kind
    out[layer or kind] = heatmaps.plot_heatmap(x, heat, os.path.join(out_dir, f"{stem}.png"),
                                               title=title)
  return out


def _predictions(run, split, max_examples):
  from cnnlab.training import inference
  x, labels = run.feed.examples(split, limit=max_examples)
  return x, labels, inference.probabilities(run, x, batch_size=250)


def _mistakes(run, split, max_examples, out_dir):
  from cnnlab.explain import grids
  x, labels, probs = _predictions(run, split, max_examples)
  wrong = int((probs.argmax(-1) != labels).sum())
  if not wrong:
    return {}
  shown = grids.confident_mistakes(probs, labels, 16)
  return {"mistakes": grids.plot_mistakes(
      x, probs, labels, os.path.join(out_dir, "mistakes.png"), indices=shown,
      class_names=run.class_names,
      title=f"{run.name}: the {len(shown)} most confident of {wrong} mistakes on "
            f"{len(labels)} {split} examples (true→predicted, probability)")}


def _curves(workdir, config, out_dir):
  from cnnlab.explain import training_plots
  from cnnlab.metrics import read_jsonl
  rows = [r for r in read_jsonl(workdir) if "step" in r and "time" in r]
  if not rows:
    return {}
  info = _load_json(os.path.join(workdir, "run_info.json")) or {}
  clock = training_plots.run_clock(rows, info.get("attempts"))
  rows = [{**r, "elapsed_sec": clock(r["time"])} for r in rows]
  return {"curves": training_plots.plot_curves(
      {os.path.basename(workdir.rstrip("/")): rows}, os.path.join(out_dir, "curves.png"),
      title=f"{config.model.name} on {config.dataset.name}")}


def _confusion(run, workdir, config, split, max_examples, out_dir, load, segment=False):
  from cnnlab.explain import training_plots
  ev = _load_json(os.path.join(workdir, f"eval_{split}.json"))
  if ev and "confusion_matrix" in ev:
    matrix, where = np.asarray(ev["confusion_matrix"]), ""
    names = ev.get("class_names") or _catalogue_names(config)
  elif segment:
    from cnnlab.training import segmentation
    run = run or load()
    matrix = segmentation.evaluate(run.parts, run.state, split, confusion=True)["confusion"]
    where, names = "", run.class_names
  else:
    run = run or load()
    _, labels, probs = _predictions(run, split, max_examples)
    k = probs.shape[-1]
    matrix = np.bincount(labels * k + probs.argmax(-1), minlength=k * k).reshape(k, k)
    where, names = f" ({len(labels)} examples)", run.class_names
  acc = float(np.trace(matrix) / max(matrix.sum(), 1))
  return {"confusion": training_plots.plot_confusion(
      matrix, os.path.join(out_dir, "confusion.png"),
      class_names=names if names and len(names) == len(matrix) else None,
      title=f"{config.model.name} on {config.dataset.name}, {split} split{where}: "
            f"{100 * acc:.2f} %" + (" of labelled pixels right" if segment else ""))}


def _is_segmentation(config) -> bool:
  from cnnlab.data import datasets, families
  try:
    return families.get(datasets.get(config.dataset.name).family).task == "segment"
  except ValueError:
    return False


def _segment_example(run, split, index):
  """(input, truth mask, predicted mask) of example ``index`` of ``split``, predicted whole."""
  import itertools
  from cnnlab.explain import mask_files
  found = next(itertools.islice(run.feed.whole_examples(split), index, None), None)
  if found is None:
    n = sum(1 for _ in run.feed.whole_examples(split))
    raise ValueError(f"--image_index={index}: the {split} split has {n} examples")
  x, truth = found
  return x, truth, mask_files.predictor(run)(x).argmax(-1)


def _split_dice(run, workdir, split):
  """The split's Dice per class from eval_<split>.json when it is of this checkpoint."""
  ev = _load_json(os.path.join(workdir, f"eval_{split}.json")) or {}
  if not str(ev.get("source", "")).endswith(os.path.join("checkpoints", str(run.step))):
    return None
  names = [run.class_name(k) for k in range(run.spec.model.num_classes)]
  return [ev.get(f"eval_dice_{n}", float("nan")) for n in names]


def _masks(run, kind, example, split, index, workdir, out_dir):
  from cnnlab.explain import masks
  x, truth, pred = example
  names = [run.class_name(k) for k in range(run.spec.model.num_classes)]
  path = os.path.join(out_dir, f"{kind}.png")
  head = f"{run.name}, {split} example {index}, step {run.step}"
  if kind == "overlay":
    return {kind: masks.plot_overlay(x, pred, path, class_names=names,
                                     title=f"{head}: predicted mask")}
  s = masks.example_scores(truth, pred, len(names))
  if not (np.asarray(truth) != masks.IGNORE_LABEL).any():
    raise ValueError(f"{kind}: {split} example {index} has no labelled pixel; pick a "
                     "labelled split (--split)")
  if kind == "contours":
    return {kind: masks.plot_contours(x, truth, pred, path, class_names=names,
                                      title=f"{head}: truth (solid) vs prediction (dashed), "
                                            f"pixel error {float(s['pixel_error']):.4f}")}
  return {kind: masks.plot_dice(s["dice"], path, class_names=names,
                                split_dice=_split_dice(run, workdir, split),
                                split_label=f"{split} split",
                                title=f"{head}: Dice per class")}


def _central_tile(run, x):
  """The example's central ``tile_shape`` window (zero-padded where it is smaller)."""
  tile = tuple(run.spec.data.options["tile_shape"])
  pad = [(0, max(0, t - n)) for t, n in zip(tile, x.shape[:-1])] + [(0, 0)]
  x = np.pad(x, pad)
  start = [(n - t) // 2 for n, t in zip(x.shape[:-1], tile)]
  return x[tuple(slice(a, a + t) for a, t in zip(start, tile))]


def _catalogue_names(config):
  from cnnlab.data import datasets
  return datasets.CLASS_NAMES.get(config.dataset.name)


def _eval_split(config) -> str:
  from cnnlab.data import datasets
  return datasets.get(config.dataset.name).eval_split


def visualize(workdir: str, out_dir: str, *, what=None, checkpoint: str = "latest",
              layers=(), image_index: int = 0, split: str | None = None,
              max_examples: int = 2000) -> dict[str, str]:
  """Writes the pictures; returns ``{kind: path}`` (``kind[layer]`` when several layers).
  ``what``: None for the run's defaults (DEFAULT_WHAT, or DEFAULT_SEGMENTATION)."""
  import ml_collections
  from cnnlab import config as config_lib
  from cnnlab.training import ConfigError, load_trained, workdir_config
  if image_index < 0:
    raise ConfigError(f"--image_index={image_index} must be >= 0")
  layers = [l for l in layers if l]
  config = ml_collections.ConfigDict(config_lib.complete(workdir_config(workdir)).to_dict())
  segment = _is_segmentation(config)
  what = check_what(what or (DEFAULT_SEGMENTATION if segment else DEFAULT_WHAT), segment)
  needs_model = [w for w in what if w not in ("curves", "confusion")]
  run = load_trained(workdir, checkpoint) if needs_model else None
  split = split or (run.spec.data.eval_split if run else
                    config.dataset.eval_split or _eval_split(config))
  out = {}
  try:
    x, label, example = _example(run, what, split, image_index, segment)
  except ValueError as e:   # example out of range
    raise ConfigError(str(e).splitlines()[0]) from None
  for kind in what:
    try:
      got = _draw(kind, run, layers, x, label, example, image_index, split, workdir, config,
                  out_dir, max_examples, lambda: load_trained(workdir, checkpoint), segment)
    except ValueError as e:   # unknown layer, example out of range
      raise ConfigError(str(e).splitlines()[0]) from None
    for key, path in got.items():
      out[kind if len(got) == 1 else f"{kind}[{key}]"] = path
  return out


def _example(run, what, split, index, segment):
  """(input for feature maps / attributions, its label text or class, whole segmentation
  example or None) — only what ``what`` needs."""
  if run is None:
    return None, None, None
  if segment and {"feature_maps", *MASK_KINDS} & set(what):
    example = _segment_example(run, split, index)
    return _central_tile(run, example[0]), "central tile", example
  if {"feature_maps", *ATTRIBUTIONS} & set(what):
    xs, ys = run.feed.examples(split, start=index, limit=1)
    return xs[0], int(ys[0]), None
  return None, None, None


def _draw(kind, run, layers, x, label, example, index, split, workdir, config, out_dir,
          max_examples, load, segment):
  if kind == "filters":
    return _filters(run, layers, out_dir)
  if kind == "feature_maps":
    text = label if segment else run.class_name(label)
    return _feature_maps(run, layers, x, text, index, out_dir)
  if kind in MASK_KINDS:
    return _masks(run, kind, example, split, index, workdir, out_dir)
  if kind in ATTRIBUTIONS:
    return _attribution(run, kind, layers, x, label, index, out_dir)
  if kind == "mistakes":
    return _mistakes(run, split, max_examples, out_dir)
  if kind == "curves":
    return _curves(workdir, config, out_dir)
  return _confusion(run, workdir, config, split, max_examples, out_dir, load, segment)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required")
  workdir = os.path.abspath(_WORKDIR.value)
  out_dir = _OUT_DIR.value or os.path.join(workdir, "figures")
  with cli.errors_to_exit_codes():
    written = visualize(workdir, out_dir, what=_WHAT.value or None,
                        checkpoint=_CHECKPOINT.value,
                        layers=(_LAYER.value or "").split(","), image_index=_IMAGE_INDEX.value,
                        split=_SPLIT.value, max_examples=_MAX_EXAMPLES.value)
  for kind, path in written.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  cli.run(main)
