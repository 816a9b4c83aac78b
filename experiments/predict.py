r"""Runs a trained model on your own files and says what it sees.

    python -m experiments.predict --workdir=runs/lenet5_mnist --inputs=digit.png,more_digits/ \
        [--checkpoint=auto|best|latest|STEP] [--top_k=3] [--out=preds.csv] \
        [--explain=gradcam|saliency|smoothgrad|integrated_gradients|occlusion] [--layer=NAME]

Each ``--inputs`` entry is a file or a folder (its supported files): PNG/JPEG images, ``.npy``
or NIfTI volumes, ``.ts``/``.csv`` series — prepared as the training pipeline prepares its
evaluation examples (cnnlab/explain/user_files.py). Prints one line per input: its path and the
``--top_k`` classes by name with their probabilities. Writes ``predictions.csv`` in the workdir
(or ``--out``) with columns path, predicted, probability, top_k, error. With ``--explain``, a
heat-map picture per input in ``explanations/`` beside the CSV.

An input that cannot be used (unreadable, wrong shape or channel count) gets one ``error:``
line and an ``error`` cell; the others are still processed. Exit status: 0 all inputs done;
1 some input failed; 2 usage error (bad flags, a workdir that was never trained).
"""
from __future__ import annotations

import csv
import os
import sys

from absl import flags

from experiments import cli

EXIT_SOME_FAILED = 1
FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program: tests import this module beside others that define
  flags of the same names (report.py's --out)."""
  cli.shared_string_flag("workdir", None, "Training workdir (config.json + checkpoints/).")
  flags.DEFINE_list("inputs", None, "Files or folders to classify, comma-separated.")
  cli.shared_string_flag("checkpoint", "auto", "auto (best, else latest), best, latest, or a "
                         "step number.")
  flags.DEFINE_integer("top_k", 3, "Classes shown per input.")
  cli.shared_string_flag("out", None, "CSV path (default: <workdir>/predictions.csv).")
  flags.DEFINE_string("explain", None, "Heat map per input: gradcam, saliency, smoothgrad, "
                      "integrated_gradients or occlusion.")
  cli.shared_string_flag("layer", None, "Grad-CAM layer (default: the last feature map).")



def _prepare(run, paths):
  """``[(name, input or None, error or None)]`` for the files and folders in ``paths``, in
  their order (a .ts file gives one entry per series)."""
  from cnnlab.explain import user_files
  prepare = user_files.Preparer(run.feed, run.input_shape)
  items = []
  for path, error in user_files.collect(paths):
    if error:
      items.append((path, None, error))
      continue
    try:
      for name, raw in user_files.read(path):
        try:
          items.append((name, prepare(name, raw), None))
        except user_files.InputError as e:
          items.append((name, None, str(e).split(": ", 1)[-1]))
    except user_files.InputError as e:
      items.append((path, None, str(e).split(": ", 1)[-1]))
  return items


def _explain(run, method, x, probs, names, out_dir, layer):
  from cnnlab.explain import explainers, heatmaps
  paths = []
  maps = explainers.heat_maps(method, run.model, run.variables, x, probs.argmax(-1),
                              layer=layer)
  for name, xi, p, h in zip(names, x, probs, maps):
    c = int(p.argmax())
    base = os.path.basename(name).replace("#", "_")
    title = (f"{explainers.TITLES[method]}{f' at {layer}' if layer else ''}: {base} → "
             f"{run.class_name(c)} ({p[c]:.2f})")
    paths.append(heatmaps.plot_heatmap(xi, h, os.path.join(out_dir, f"{base}.{method}.png"),
                                       title=title))
  return paths


def _write_csv(path, rows):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, ["path", "predicted", "probability", "top_k", "error"])
    writer.writeheader()
    writer.writerows(rows)


def predict(workdir, inputs, *, checkpoint="auto", top_k=3, out=None, explain=None,
            layer=None) -> tuple[list[dict], int]:
  """Classifies ``inputs``; prints a line each; writes the CSV (and heat maps). Returns
  (csv rows, number of failed inputs)."""
  import numpy as np
  from cnnlab.explain import explainers
  from cnnlab.training import ConfigError, inference, load_trained
  if explain:
    try:
      explainers.check_method(explain)
    except ValueError as e:
      raise ConfigError(f"--explain: {e}") from None
  if top_k < 1:
    raise ConfigError(f"--top_k={top_k} must be >= 1")
  run = load_trained(workdir, checkpoint)
  items = _prepare(run, inputs)
  ready = [(name, x) for name, x, error in items if error is None]
  names = [n for n, _ in ready]
  if ready:
    x = np.stack([v for _, v in ready])
    probs = inference.probabilities(run, x)
  by_name = dict(zip(names, probs)) if ready else {}
  rows = []
  for name, _, error in items:
    if error is not None:
      print(f"error: {name}: {error}", file=sys.stderr, flush=True)
      rows.append({"path": name, "predicted": "", "probability": "", "top_k": "",
                   "error": error})
      continue
    p = by_name[name]
    order = np.argsort(-p, kind="stable")[:top_k]
    print(f"{name}: " + ", ".join(f"{run.class_name(int(c))} {p[c]:.3f}" for c in order),
          flush=True)
    rows.append({"path": name, "predicted": run.class_name(int(order[0])),
                 "probability": f"{p[order[0]]:.6f}", "error": "",
                 "top_k": ";".join(f"{run.class_name(int(c))}:{p[c]:.6f}" for c in order)})
  out = out or os.path.join(workdir, "predictions.csv")
  _write_csv(out, rows)
  print(f"predictions: {out}")
  if explain and ready:
    out_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "explanations")
    layer = layer or (explainers.default_layer(run.model, run.variables, run.input_shape)
                      if explain == "gradcam" else None)
    for path in _explain(run, explain, x, probs, names, out_dir, layer):
      print(f"explanation: {path}")
  return rows, len(items) - len(ready)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not FLAGS.workdir:
    cli.usage_error("--workdir is required")
  if not FLAGS.inputs:
    cli.usage_error("--inputs is required (files or folders, comma-separated)")
  with cli.errors_to_exit_codes():
    try:
      _, n_failed = predict(os.path.abspath(FLAGS.workdir), FLAGS.inputs,
                            checkpoint=FLAGS.checkpoint, top_k=FLAGS.top_k, out=FLAGS.out,
                            explain=FLAGS.explain, layer=FLAGS.layer)
    except ValueError as e:   # an unknown --layer, from the explainers
      cli.usage_error(str(e).splitlines()[0])
  if n_failed:
    sys.exit(EXIT_SOME_FAILED)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
