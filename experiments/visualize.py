r"""Pictures of a trained workdir: first-layer filters, feature maps of one evaluation image,
training curves and the confusion matrix.

    python -m experiments.visualize --workdir=runs/lenet5_mnist/seed0 [--out_dir=DIR] \
        [--checkpoint=latest|best|STEP] [--layer=conv2] [--image_index=0] [--split=test]

Restores the checkpoint (with the workdir's config.json) and writes to ``--out_dir`` (default
``<workdir>/figures``):
- ``filters.png``: the kernels of the first convolution the model calls;
- ``feature_maps.png``: the input and the output maps of ``--layer`` (default: the first layer
  with a spatial output) for image ``--image_index`` of the eval split;
- ``curves.png``: loss and accuracy against steps and wall time, from ``metrics.jsonl``;
- ``confusion.png``: when ``eval_<split>.json`` exists (``python -m experiments.evaluate``).

Exit status: 0 done; 2 usage error (no checkpoint, unknown layer, bad flag values).
"""
from __future__ import annotations

import json
import os

from absl import flags

from experiments import cli

_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir (holds config.json and "
                               "checkpoints/).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the PNGs (default: "
                               "<workdir>/figures).")
_CHECKPOINT = cli.shared_string_flag("checkpoint", "latest", "latest, best, or a step number.")
_LAYER = flags.DEFINE_string("layer", None, "Module path of the layer whose feature maps to "
                             "draw (default: the first layer with a spatial output).")
_IMAGE_INDEX = flags.DEFINE_integer("image_index", 0, "Index of the image in the eval split.")
_SPLIT = cli.shared_string_flag("split", None, "Dataset split (default: the recipe's eval split).")


def _load_json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _restore(config, workdir, checkpoint):
  """(run, state, step) for ``checkpoint`` in ``latest`` / ``best`` / a saved step."""
  from cnnlab.training import loop
  run = loop.Run(config)
  state, step = run.restore_checkpoint(workdir, checkpoint)
  return run, state, step


def eval_image(config, split, index):
  """(image [H, W, C] as the model sees it, label) of example ``index`` of ``split``."""
  from cnnlab.data import pipeline
  from cnnlab.training import validation
  batch_size = validation.eval_batch_size(config)
  seen = 0
  for batch in pipeline.eval_batches(config.dataset, split=split,
                                     global_batch_size=batch_size):
    n = int(batch["mask"].sum())
    if index < seen + n:
      return batch["image"][index - seen], int(batch["label"][index - seen])
    seen += n
  raise ValueError(f"--image_index={index} is out of range: split {split!r} has {seen} "
                   "examples")


def visualize(config, workdir: str, out_dir: str, *, checkpoint: str = "latest",
              layer: str | None = None, image_index: int = 0,
              split: str | None = None) -> dict[str, str]:
  """Writes the pictures; returns ``{kind: path}``."""
  import jax
  from cnnlab import viz
  from cnnlab.metrics import read_jsonl
  from cnnlab.training import state as state_lib, validation

  validation.validate(config)
  split = split or validation.eval_split(config)
  if image_index < 0:
    raise validation.ConfigError(f"--image_index={image_index} must be >= 0")
  run, state, step = _restore(config, workdir, checkpoint)
  variables = jax.device_get(state_lib.eval_variables(
      state, use_ema=float(config.get("ema_decay", 0.0)) > 0))
  model = run.model
  name = config.model.name
  dataset = config.dataset.name
  out = {}

  conv_name, kernel = viz.first_conv_kernel(model, variables, run.image_shape)
  out["filters"] = viz.plot_filters(
      kernel, os.path.join(out_dir, "filters.png"),
      title=f"{name} {conv_name}: {kernel.shape[3]} filters "
            f"{kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}, step {step}")

  image, label = eval_image(config, split, image_index)
  try:
    layer_name, maps = viz.feature_maps(model, variables, image, layer)
  except ValueError as e:
    raise validation.ConfigError(str(e)) from None
  names = viz.CLASS_NAMES.get(dataset)
  label_text = names[label] if names and label < len(names) else str(label)
  out["feature_maps"] = viz.plot_feature_maps(
      maps, os.path.join(out_dir, "feature_maps.png"), image=image,
      title=f"{name} {layer_name}: {maps.shape[2]} maps {maps.shape[0]}x{maps.shape[1]}, "
            f"{split} image {image_index} ({label_text}), step {step}")

  rows = [r for r in read_jsonl(workdir) if "step" in r and "time" in r]
  if rows:
    info = _load_json(os.path.join(workdir, "run_info.json")) or {}
    clock = viz.run_clock(rows, info.get("attempts"))
    rows = [{**r, "elapsed_sec": clock(r["time"])} for r in rows]
    out["curves"] = viz.plot_curves({os.path.basename(workdir.rstrip("/")): rows},
                                    os.path.join(out_dir, "curves.png"),
                                    title=f"{name} on {dataset}")

  ev = _load_json(os.path.join(workdir, f"eval_{split}.json"))
  if ev and "confusion_matrix" in ev:
    n = len(ev["confusion_matrix"])
    out["confusion"] = viz.plot_confusion(
        ev["confusion_matrix"], os.path.join(out_dir, "confusion.png"),
        class_names=names if names and len(names) == n else None,
        title=f"{name} on {dataset}, {split} split: {100 * ev['eval_accuracy']:.2f} %")
  return out


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required")
  workdir = os.path.abspath(_WORKDIR.value)
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    cli.usage_error(f"--workdir={_WORKDIR.value!r} holds no config.json")
  import ml_collections
  config = ml_collections.ConfigDict(_load_json(config_path))
  out_dir = _OUT_DIR.value or os.path.join(workdir, "figures")
  with cli.errors_to_exit_codes():
    written = visualize(config, workdir, out_dir, checkpoint=_CHECKPOINT.value,
                        layer=_LAYER.value, image_index=_IMAGE_INDEX.value, split=_SPLIT.value)
  for kind, path in written.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  cli.run(main)
