r"""Pictures of a trained workdir: what the network learned, where it looks, how it trained.

    python -m experiments.visualize --workdir=runs/lenet5_mnist \
        --what=filters,feature_maps,saliency,gradcam,mistakes,curves,confusion \
        [--layer=conv1,conv2] [--image_index=0] [--split=test] [--out_dir=DIR] \
        [--checkpoint=auto|best|latest|STEP]

``--what`` lists any of (default filters,feature_maps,curves,confusion):
- ``filters``: the kernels of each ``--layer`` (default: the first convolution called);
- ``feature_maps``: the input and the maps of each ``--layer`` (default: the first layer with a
  spatial output) for example ``--image_index`` of the eval split;
- ``saliency``, ``smoothgrad``, ``integrated_gradients``, ``occlusion``: a heat map over that
  example for its predicted class; ``gradcam`` at each ``--layer`` (default: the deepest feature
  map larger than 1 in every axis);
- ``mistakes``: the most confident mistakes among the first ``--max_examples`` eval examples;
- ``curves``: loss and accuracy against steps and wall time, from ``metrics.jsonl``;
- ``confusion``: from ``eval_<split>.json`` (python -m experiments.evaluate), else computed on
  the first ``--max_examples`` examples.
PNGs go to ``--out_dir`` (default ``<workdir>/figures``); each path is printed.

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
MAX_MAPS, MAX_FILTERS = 64, 96     # panels per grid
ATTRIBUTIONS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "occlusion")

_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir (holds config.json and "
                                  "checkpoints/).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the PNGs (default: "
                               "<workdir>/figures).")
_CHECKPOINT = cli.shared_string_flag("checkpoint", "latest", "auto (best, else latest), best, "
                                     "latest, or a step number.")
_WHAT = flags.DEFINE_list("what", list(DEFAULT_WHAT), f"Pictures to draw: {', '.join(KINDS)}.")
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


def check_what(what) -> tuple[str, ...]:
  from cnnlab.training import ConfigError
  what = tuple(w.strip() for w in what if w.strip())
  bad = [w for w in what if w not in KINDS]
  if bad or not what:
    raise ConfigError(f"--what={','.join(what)!r}: {', '.join(bad) or 'nothing'} is not a "
                      f"picture kind; valid: {', '.join(KINDS)}")
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


def _confusion(run, workdir, config, split, max_examples, out_dir, load):
  from cnnlab.explain import training_plots
  ev = _load_json(os.path.join(workdir, f"eval_{split}.json"))
  if ev and "confusion_matrix" in ev:
    matrix, acc, where = np.asarray(ev["confusion_matrix"]), ev["eval_accuracy"], ""
    names = ev.get("class_names") or _catalogue_names(config)
  else:
    run = run or load()
    _, labels, probs = _predictions(run, split, max_examples)
    k = probs.shape[-1]
    matrix = np.bincount(labels * k + probs.argmax(-1), minlength=k * k).reshape(k, k)
    acc, where = float(np.trace(matrix) / matrix.sum()), f" ({len(labels)} examples)"
    names = run.class_names
  return {"confusion": training_plots.plot_confusion(
      matrix, os.path.join(out_dir, "confusion.png"),
      class_names=names if names and len(names) == len(matrix) else None,
      title=f"{config.model.name} on {config.dataset.name}, {split} split{where}: "
            f"{100 * acc:.2f} %")}


def _catalogue_names(config):
  from cnnlab.data import datasets
  return datasets.CLASS_NAMES.get(config.dataset.name)


def _eval_split(config) -> str:
  from cnnlab.data import datasets
  return datasets.get(config.dataset.name).eval_split


def visualize(workdir: str, out_dir: str, *, what=DEFAULT_WHAT, checkpoint: str = "latest",
              layers=(), image_index: int = 0, split: str | None = None,
              max_examples: int = 2000) -> dict[str, str]:
  """Writes the pictures; returns ``{kind: path}`` (``kind[layer]`` when several layers)."""
  import ml_collections
  from cnnlab import config as config_lib
  from cnnlab.training import ConfigError, load_trained, workdir_config
  what = check_what(what)
  if image_index < 0:
    raise ConfigError(f"--image_index={image_index} must be >= 0")
  layers = [l for l in layers if l]
  config = ml_collections.ConfigDict(config_lib.complete(workdir_config(workdir)).to_dict())
  needs_model = [w for w in what if w not in ("curves", "confusion")]
  run = load_trained(workdir, checkpoint) if needs_model else None
  split = split or (run.spec.data.eval_split if run else
                    config.dataset.eval_split or _eval_split(config))
  out = {}
  if run is not None and {"feature_maps", *ATTRIBUTIONS} & set(what):
    xs, ys = run.feed.examples(split, start=image_index, limit=1)
    x, label = xs[0], int(ys[0])
  for kind in what:
    try:
      if kind == "filters":
        got = _filters(run, layers, out_dir)
      elif kind == "feature_maps":
        got = _feature_maps(run, layers, x, run.class_name(label), image_index, out_dir)
      elif kind in ATTRIBUTIONS:
        got = _attribution(run, kind, layers, x, label, image_index, out_dir)
      elif kind == "mistakes":
        got = _mistakes(run, split, max_examples, out_dir)
      elif kind == "curves":
        got = _curves(workdir, config, out_dir)
      else:
        got = _confusion(run, workdir, config, split, max_examples, out_dir,
                         lambda: load_trained(workdir, checkpoint))
    except ValueError as e:   # unknown layer, example out of range
      raise ConfigError(str(e).splitlines()[0]) from None
    for key, path in got.items():
      out[kind if len(got) == 1 else f"{kind}[{key}]"] = path
  return out


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required")
  workdir = os.path.abspath(_WORKDIR.value)
  out_dir = _OUT_DIR.value or os.path.join(workdir, "figures")
  with cli.errors_to_exit_codes():
    written = visualize(workdir, out_dir, what=_WHAT.value, checkpoint=_CHECKPOINT.value,
                        layers=(_LAYER.value or "").split(","), image_index=_IMAGE_INDEX.value,
                        split=_SPLIT.value, max_examples=_MAX_EXAMPLES.value)
  for kind, path in written.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  cli.run(main)
