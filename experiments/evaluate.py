r"""Evaluates a trained workdir — or torchvision weights — on a split.

    python -m experiments.evaluate --workdir=runs/lenet5_mnist [--checkpoint=best|latest|STEP] [--split=test]
    python -m experiments.evaluate --config=experiments/configs/resnet50_imagenet.py \
        --torchvision_weights=resnet50.pth --workdir=runs/r50_tv

Writes ``eval_<split>.json`` (top-1, top-5, loss, count, per-class accuracy, confusion matrix) to
the workdir and prints a summary. Every example of the split is counted exactly once.
"""
import json
import os

from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe (default: the workdir's config.json).")
_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir (or output dir for "
                               "--torchvision_weights).")
_CHECKPOINT = cli.shared_string_flag("checkpoint", "latest", "latest, best, or a step number.")
_SPLIT = cli.shared_string_flag("split", None, "Dataset split (default: the recipe's eval split).")
_TV = flags.DEFINE_string("torchvision_weights", None, "A torchvision .pth / .safetensors "
                          "state dict to evaluate instead of a checkpoint.")
cli.define_distributed_flags()


def _load_config(workdir):
  config = cli.load_config(_CONFIG, required=False)
  if config is not None:
    return config
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    cli.usage_error(f"--config is required: {path} does not exist")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def evaluate(config, workdir, *, checkpoint="latest", split=None, torchvision_weights=None):
  """Returns the metrics dict it also writes to ``<workdir>/eval_<split>.json``."""
  import jax
  import numpy as np
  from cnnlab.training import loop, steps, validation

  validation.validate(config)
  run = loop.Run(config)
  split = split or validation.eval_split(config)
  if torchvision_weights:
    from cnnlab.interop import torchvision as tv
    variables = tv.load(torchvision_weights, config.model.name)
    fresh = run.init_state()
    state = fresh.replace(params=variables["params"],
                          batch_stats=variables.get("batch_stats", {}))
    state = jax.device_put(state, run.state_sharding)
    source = torchvision_weights
  else:
    state, step = run.restore_checkpoint(workdir, checkpoint)
    source = os.path.join(workdir, "checkpoints", str(step))
  eval_step = jax.jit(steps.make_eval_step(run.model, confusion=True,
                                           use_ema=float(config.get("ema_decay", 0)) > 0),
                      in_shardings=(run.state_sharding, None))
  result = run.evaluate(state, split=split, eval_step=eval_step)
  confusion = result.pop("confusion")
  per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
  result.update(split=split, source=source, per_class_accuracy=per_class.tolist(),
                confusion_matrix=confusion.astype(int).tolist())
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
      json.dump(result, f)
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
    r = evaluate(_load_config(workdir), workdir, checkpoint=_CHECKPOINT.value,
                 split=_SPLIT.value, torchvision_weights=_TV.value)
  print(f"{r['split']}: top1={r['eval_accuracy']:.4f} top5={r['eval_top5']:.4f} "
        f"loss={r['eval_loss']:.4f} count={int(r['eval_count'])} -> "
        f"{os.path.join(workdir, 'eval_' + r['split'] + '.json')}")


if __name__ == "__main__":
  cli.run(main)
