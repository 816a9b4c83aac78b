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
  from cnnlab.training import builders, load_trained

  if torchvision_weights:
    trained_state, spec, parts, source = _torchvision_state(config, torchvision_weights)
  else:
    t = load_trained(workdir, checkpoint, spec=config, confusion=True)
    trained_state, spec, parts = t.state, t.spec, t.parts
    source = os.path.join(workdir, "checkpoints", str(t.step))
  split = split or spec.data.eval_split
  result = builders.evaluate(spec, trained_state, parts.eval_step, parts.mesh, split=split)
  confusion = result.pop("confusion")
  per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
  result.update(split=split, source=source, per_class_accuracy=per_class.tolist(),
                confusion_matrix=confusion.astype(int).tolist())
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
      json.dump(result, f)
  return result


def _torchvision_state(config, path):
  """(state holding the converted weights, spec, parts, source) for ``config``'s model, built
  as torchvision builds it for published weights (e.g. GoogLeNet's transform_input), unless
  the config's model.kwargs says otherwise."""
  import jax
  from cnnlab import config as config_lib
  from cnnlab.interop import torchvision as tv
  from cnnlab.training import build_parts
  config = config_lib.complete(config)
  tv_kwargs = getattr(tv, "model_kwargs", None)
  if tv_kwargs is not None:
    config.model.kwargs = {**tv_kwargs(config.model.name), **dict(config.model.kwargs)}
  spec = config_lib.resolve(config)
  parts = build_parts(spec, confusion=True)
  variables = tv.load(path, spec.model.name)
  state = parts.init().replace(params=variables["params"],
                               batch_stats=variables.get("batch_stats", {}))
  return jax.device_put(state, parts.shardings.sharding), spec, parts, path


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
  print(f"{r['split']}: top1={r['eval_accuracy']:.4f} top5={r['eval_top5']:.4f} "
        f"loss={r['eval_loss']:.4f} count={int(r['eval_count'])} -> "
        f"{os.path.join(workdir, 'eval_' + r['split'] + '.json')}")


if __name__ == "__main__":
  cli.run(main)
