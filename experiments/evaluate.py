r"""Evaluates a trained workdir — or torchvision weights — on a split.

    python -m experiments.evaluate --workdir=runs/lenet5_mnist [--checkpoint=best|latest|STEP] [--split=test]
    python -m experiments.evaluate --config=experiments/configs/resnet50_imagenet.py \
        --torchvision_weights=resnet50.pth --workdir=runs/r50_tv

Writes ``eval_<split>.json`` to the workdir and prints a one-line summary. Every example of the
split is counted exactly once. What it holds depends on the run's task:
- classification: top-1, top-5, loss, count, per-class accuracy, the confusion matrix;
- segmentation (every image / volume of the split predicted whole by tiles, as training's
  evaluation does): ``eval_dice_<class>`` and ``eval_iou_<class>`` per class, ``eval_mean_dice``
  / ``eval_mean_iou`` (class 0 left out when it is named "background"), ``eval_pixel_error``,
  ``eval_loss`` (cross-entropy per labelled pixel), ``eval_count`` (images), and
  ``confusion_matrix``: labelled pixels (voxels) by true class (rows) and predicted class.
"""
import json
import os

from absl import flags

from experiments import cli

_CONFIG = cli.shared_config_flag("Recipe (default: the workdir's config.json).")
_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir (or output dir for "
                               "--torchvision_weights).")
_CHECKPOINT = cli.shared_string_flag("checkpoint", "latest", "latest, best, or a step number.")
_SPLIT = cli.shared_string_flag("split", None, "Dataset split (default: the recipe's eval split).")
_TV = flags.DEFINE_string("torchvision_weights", None, "A torchvision .pth / .safetensors "
                          "state dict to evaluate instead of a checkpoint.")
cli.define_distributed_flags()


def evaluate(config, workdir, *, checkpoint="latest", split=None, torchvision_weights=None):
  """Returns the metrics dict it also writes to ``<workdir>/eval_<split>.json``. ``config``:
  None for the workdir's own config.json."""
  import jax
  import numpy as np
  from cnnlab import metrics
  from cnnlab.interop import evaluation
  from cnnlab.training import load_trained

  if torchvision_weights:
    t = evaluation.torchvision_run(config, torchvision_weights)
    source = torchvision_weights
  else:
    t = load_trained(workdir, checkpoint, spec=config, confusion=True)
    source = os.path.join(workdir, "checkpoints", str(t.step))
  split = split or t.spec.data.eval_split
  if t.spec.model.task == "segment":
    from cnnlab.training import segmentation
    result = segmentation.evaluate(t.parts, t.state, split, confusion=True)
    confusion = result.pop("confusion")
  else:
    result = t.parts.evaluate(t.state, split)
    confusion = result.pop("confusion")
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    result["per_class_accuracy"] = per_class.tolist()
  result.update(split=split, source=source, confusion_matrix=confusion.astype(int).tolist(),
                class_names=list(t.class_names) if t.class_names else None)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
      json.dump(metrics.strict_json(result), f, allow_nan=False)
  return result


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required")
  cli.init_distributed()
  workdir = os.path.abspath(_WORKDIR.value)
  if _TV.value and _CONFIG.value is None:
    cli.usage_error("--torchvision_weights needs --config (which model and dataset)")
  with cli.errors_to_exit_codes():
    r = evaluate(cli.load_config(_CONFIG, required=False), workdir,
                 checkpoint=_CHECKPOINT.value,
                 split=_SPLIT.value, torchvision_weights=_TV.value)
  print(summary(r, os.path.join(workdir, "eval_" + r["split"] + ".json")))


def summary(r: dict, path: str) -> str:
  """The one line printed for a result of ``evaluate``."""
  head = f"{r['split']}: "
  if "eval_mean_dice" in r:
    dice = " ".join(f"{k[len('eval_dice_'):]}={v:.4f}" for k, v in r.items()
                    if k.startswith("eval_dice_"))
    head += (f"mean_dice={r['eval_mean_dice']:.4f} mean_iou={r['eval_mean_iou']:.4f} "
             f"pixel_error={r['eval_pixel_error']:.4f} dice: {dice} ")
  else:
    top5 = f" top5={r['eval_top5']:.4f}" if "eval_top5" in r else ""
    head += f"top1={r['eval_accuracy']:.4f}{top5} "
  return head + f"loss={r['eval_loss']:.4f} count={int(r['eval_count'])} -> {path}"

if __name__ == "__main__":
  cli.run(main)
