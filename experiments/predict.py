r"""Runs a trained model on your own files and says what it sees.

    python -m experiments.predict --workdir=runs/lenet5_mnist --inputs=digit.png,more_digits/ \
        [--checkpoint=auto|best|latest|STEP] [--top_k=3] [--out=preds.csv] \
        [--grey] [--resize] [--invert] \
        [--explain=gradcam|saliency|smoothgrad|integrated_gradients|occlusion] [--layer=NAME]

Each ``--inputs`` entry is a file or a folder (its supported files and DICOM series
sub-folders): PNG/JPEG/TIFF images, ``.npy`` or NIfTI volumes, a DICOM series folder (one
volume), ``.ts``/``.csv`` series — prepared as the training pipeline prepares its evaluation
examples (cnnlab/explain/user_files.py). Prints one line per input: its path and the
``--top_k`` classes by name with their probabilities.

A segmentation run instead predicts each input whole, at its own size, by the run's tiled
inference, and writes ONE mask per input into ``masks/`` beside the CSV (the folder of
``--out``; ``<workdir>/masks/`` by default): ``masks/<input stem>.png`` (uint8 class indices,
the image's size) for an image, ``masks/<stem>.nii.gz`` with the input's affine for a volume
(a ``.npy`` volume: the identity, noted in the CSV); ``-2``, ``-3``... is added to a name
already taken. Its CSV has the columns path, mask, shape, spacing_mm, ``pixels_<class>`` (2-D)
or ``voxels_<class>`` and ``ml_<class>`` (3-D: volume in mL where the voxel spacing is known),
notes, error; each input's line gives every class's share (cnnlab/explain/mask_files.py).
``--top_k`` does not apply; ``--explain`` and ``--resize`` are refused.

Each invocation writes its own CSV (columns path, predicted, probability, top_k, notes, error)
and never overwrites one: ``--out`` when given (refused if that file exists), else
``<workdir>/predictions/<UTC time>.csv`` (e.g. ``20261201T142633Z.csv``; ``-2``, ``-3``... is
added when two start in the same second). The CSV is written even when every input failed: it
then lists each input with its error. With ``--explain``, a heat-map picture per input in
``<CSV name>_explanations/`` beside the CSV.

A photo is not a training image, so three explicit conversions exist, each off by default (a
mismatch is refused with the option that fixes it), each saying per input what it did:
``--grey`` (RGB to one channel, 0.299 R + 0.587 G + 0.114 B), ``--resize`` (shorter side to the
model's, centre crop) and ``--invert`` (255 - value). For MNIST-style runs (light strokes on
black) an image that is mostly light (mean intensity above 0.5) gets a one-line hint to pass
``--invert``.

An input that cannot be used (unreadable, wrong shape or channel count) gets one ``error:``
line and an ``error`` cell; the others are still processed. Exit status: 0 all inputs done;
1 some input failed; 2 usage error (bad flags, a workdir that was never trained, an ``--out``
that exists).
"""
from __future__ import annotations

import csv
import datetime
import os
import sys

from absl import flags

from experiments import cli

EXIT_SOME_FAILED = 1
CSV_COLUMNS = ("path", "predicted", "probability", "top_k", "notes", "error")

# Shared helpers: tests import this module beside others defining flags of the same names
# (visualize's --layer, report's --out); the flags mean the same in each.
_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir (config.json + checkpoints/).")
_INPUTS = cli.shared_flag(flags.DEFINE_list, "inputs", None,
                          "Files or folders to classify, comma-separated.")
_CHECKPOINT = cli.shared_string_flag("checkpoint", "auto", "auto (best, else latest), best, "
                                     "latest, or a step number.")
_TOP_K = cli.shared_flag(flags.DEFINE_integer, "top_k", 3, "Classes shown per input.")
_OUT = cli.shared_string_flag("out", None, "CSV to write (must not exist; default: "
                              "<workdir>/predictions/<UTC time>.csv).")
_EXPLAIN = cli.shared_flag(flags.DEFINE_string, "explain", None, "Heat map per input: gradcam, "
                           "saliency, smoothgrad, integrated_gradients or occlusion.")
_LAYER = cli.shared_string_flag("layer", None, "Grad-CAM layer (default: the deepest feature "
                                "map larger than 1 in every axis).")
_GREY = cli.shared_flag(flags.DEFINE_bool, "grey", False, "Convert RGB images to one channel "
                        "(0.299 R + 0.587 G + 0.114 B) for a grey model.")
_RESIZE = cli.shared_flag(flags.DEFINE_bool, "resize", False, "Scale images to the model's "
                          "size (shorter side, Lanczos) and centre-crop them.")
_INVERT = cli.shared_flag(flags.DEFINE_bool, "invert", False, "Invert images (255 - value): "
                          "dark ink on paper for a model trained on light on black (MNIST).")


def _prepare(run, paths, conversions):
  """``[(name, input or None, notes, error or None)]`` for the files and folders in ``paths``,
  in their order (a .ts file gives one entry per series)."""
  return list(_prepared(run, paths, conversions))


def _prepared(run, paths, conversions):
  """``_prepare``'s entries one at a time (each input read when its turn comes)."""
  from cnnlab.explain import user_files
  preparer = user_files.Preparer(run.feed, run.input_shape,
                                 conversions or user_files.Conversions())
  for path, error in user_files.collect(paths):
    if error:
      yield path, None, [], error
      continue
    try:
      entries = user_files.read(path)
    except user_files.InputError as e:
      yield path, None, [], str(e).split(": ", 1)[-1]
      continue
    for name, raw in entries:
      try:
        yield (name, *preparer.prepare(name, raw), None)
      except user_files.InputError as e:
        yield name, None, [], str(e).split(": ", 1)[-1]


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


def _check_out(out: str | None) -> None:
  from cnnlab.training import ConfigError
  if out and os.path.exists(out):
    raise ConfigError(f"--out={out} exists; predict never overwrites a file: name another "
                      "(or leave --out out for <workdir>/predictions/<UTC time>.csv)")


def _new_file(out: str | None, workdir: str):
  """A new file opened for writing: ``out``, else ``<workdir>/predictions/<UTC time>.csv``
  (with -2, -3... when that name is taken). Never an existing file."""
  from cnnlab.training import ConfigError
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
      return open(out, "x", newline="")
    except FileExistsError:
      _check_out(out)
      raise ConfigError(f"--out={out} exists") from None
  folder = os.path.join(workdir, "predictions")
  os.makedirs(folder, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  for k in range(1, 1000):
    try:
      return open(os.path.join(folder, stamp + (f"-{k}" if k > 1 else "") + ".csv"), "x",
                  newline="")
    except FileExistsError:
      continue
  raise ConfigError(f"{folder}: 999 prediction files named {stamp}*.csv already")


def _write_csv(f, rows, columns=CSV_COLUMNS) -> str:
  with f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  return f.name


def _rows(run, items, probs_by_name, top_k):
  """The CSV rows (printing a line per input, notes and errors included)."""
  import numpy as np
  rows = []
  for name, _, notes, error in items:
    for note in notes:
      print(f"{name}: {note}", flush=True)
    row = {"path": name, "predicted": "", "probability": "", "top_k": "",
           "notes": " | ".join(notes), "error": error or ""}
    if error is not None:
      print(f"error: {name}: {error}", file=sys.stderr, flush=True)
      rows.append(row)
      continue
    p = probs_by_name[name]
    order = np.argsort(-p, kind="stable")[:top_k]
    print(f"{name}: " + ", ".join(f"{run.class_name(int(c))} {p[c]:.3f}" for c in order),
          flush=True)
    row.update(predicted=run.class_name(int(order[0])), probability=f"{p[order[0]]:.6f}",
               top_k=";".join(f"{run.class_name(int(c))}:{p[c]:.6f}" for c in order))
    rows.append(row)
  return rows


def predict(workdir, inputs, *, checkpoint="auto", top_k=3, out=None, explain=None,
            layer=None, conversions=None) -> tuple[list[dict], int]:
  """Classifies ``inputs``; prints a line each; writes a new CSV (and heat maps). Returns
  (csv rows, number of failed inputs). ``conversions``: a ``user_files.Conversions``."""
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
  _check_out(out)
  run = load_trained(workdir, checkpoint)
  if run.spec.model.task == "segment":
    return _segment(run, inputs, out=out, explain=explain, conversions=conversions)
  items = _prepare(run, inputs, conversions)
  ready = [(name, x) for name, x, _, error in items if error is None]
  names = [n for n, _ in ready]
  if ready:
    x = np.stack([v for _, v in ready])
    probs = inference.probabilities(run, x)
  rows = _rows(run, items, dict(zip(names, probs)) if ready else {}, top_k)
  path = _write_csv(_new_file(out, workdir), rows)
  print(f"predictions: {path}")
  if explain and ready:
    out_dir = os.path.splitext(os.path.abspath(path))[0] + "_explanations"
    layer = layer or (explainers.default_layer(run.model, run.variables, run.input_shape)
                      if explain == "gradcam" else None)
    for picture in _explain(run, explain, x, probs, names, out_dir, layer):
      print(f"explanation: {picture}")
  return rows, len(items) - len(ready)


def _mask_folder(out: str | None, workdir: str) -> str:
  """``masks/`` beside the CSV named by ``--out``, else ``<workdir>/masks``."""
  if out:
    return os.path.join(os.path.dirname(os.path.abspath(out)), "masks")
  return os.path.join(workdir, "masks")


def _segment(run, inputs, *, out, explain, conversions) -> tuple[list[dict], int]:
  """A segmentation run: one mask per input (cnnlab/explain/mask_files.py), a CSV row each
  with the counts per class; returns (rows, number of failed inputs)."""
  from cnnlab.explain import mask_files
  from cnnlab.training import ConfigError
  if explain:
    raise ConfigError(f"--explain={explain}: heat maps explain a classification; a "
                      "segmentation run writes masks (leave --explain out)")
  if conversions is not None and conversions.resize:
    raise ConfigError("--resize: a segmentation run predicts each input at its own size "
                      "(tiled inference); leave --resize out")
  names = [run.class_name(k) for k in range(run.spec.model.num_classes)]
  rank = len(run.input_shape) - 1
  predict, folder = mask_files.predictor(run), _mask_folder(out, run.workdir)
  rows, failed = [], 0
  for name, x, notes, error in _prepared(run, inputs, conversions):
    for note in notes:
      print(f"{name}: {note}", flush=True)
    if error is None:
      try:
        geometry = mask_files.geometry_of(name.split("#")[0], rank)
        m = mask_files.write_mask(predict(x).argmax(-1), folder, name, geometry, len(names))
      except (ValueError, OSError) as e:
        error = str(e).splitlines()[0]
    if error is not None:
      print(f"error: {name}: {error}", file=sys.stderr, flush=True)
      rows.append({"path": name, "notes": " | ".join(notes), "error": error})
      failed += 1
      continue
    row = mask_files.csv_row(m, names)
    row["notes"] = " | ".join([*notes, *m.notes])
    rows.append(row)
    for note in m.notes:
      print(f"{name}: {note}", flush=True)
    print(mask_files.summary(m, names), flush=True)
  path = _write_csv(_new_file(out, run.workdir), rows, mask_files.csv_columns(names, rank))
  print(f"predictions: {path}")
  return rows, failed


def main(argv):
  from cnnlab.explain import user_files
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required")
  if not _INPUTS.value:
    cli.usage_error("--inputs is required (files or folders, comma-separated)")
  conversions = user_files.Conversions(grey=_GREY.value, resize=_RESIZE.value,
                                       invert=_INVERT.value)
  with cli.errors_to_exit_codes():
    try:
      _, n_failed = predict(os.path.abspath(_WORKDIR.value), _INPUTS.value,
                            checkpoint=_CHECKPOINT.value, top_k=_TOP_K.value, out=_OUT.value,
                            explain=_EXPLAIN.value, layer=_LAYER.value,
                            conversions=conversions)
    except ValueError as e:   # an unknown --layer, from the explainers
      cli.usage_error(str(e).splitlines()[0])
  if n_failed:
    sys.exit(EXIT_SOME_FAILED)


if __name__ == "__main__":
  cli.run(main)
