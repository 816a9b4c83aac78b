"""A trained model's inputs from a user's own files, prepared as the training pipeline
prepares its evaluation examples.

    entries = collect(["scan.npy", "digits/"])   # [(path, error or None)], folders expanded
    prepare = Preparer(trained.feed, trained.input_shape)    # the run's dataset
    for path, error in entries:
        for name, raw in read(path):                         # a .ts file may hold several series
            x = prepare(name, raw)                           # float32, one example

Supported: PNG/JPEG images (MNIST, CIFAR, ImageNet families), ``.npy`` arrays and NIfTI
``.nii``/``.nii.gz`` volumes (volume family; ``.npy`` also for series), ``.ts`` (UCR/UEA) and
``.csv`` series (rows are time steps, columns channels; one row is a univariate series).
Preparation is the evaluation pipeline's (``cnnlab.data.pipeline.Feed.eval_inputs``):
- mnist: a grey 28x28 image; 'standard' (x/255 - mean) / std, or 'lenet1998' (padded to 32);
- cifar: an RGB 32x32 image; per-channel standardisation or the training set's mean image;
- imagenet: any RGB image file: shorter side resized, centre crop, standardised;
- series: (L, C) with the dataset's C, resampled to the run's length, z-normalised;
- volume: (D, H, W[, C]) of the stored shape, intensity-normalised, centre-cropped.
Anything else raises ``InputError``: one line naming the file, what it holds and what the model
takes.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARRAY_EXTENSIONS = (".npy", ".nii", ".nii.gz")
SERIES_EXTENSIONS = (".ts", ".csv")
SUPPORTED = IMAGE_EXTENSIONS + ARRAY_EXTENSIONS + SERIES_EXTENSIONS


class InputError(ValueError):
  """A user file the model cannot take (one line, naming the file)."""


def extension(path: str) -> str:
  lower = path.lower()
  return ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]


def collect(paths: Sequence[str]) -> list[tuple[str, str | None]]:
  """``[(path, error or None)]`` in the order given, folders expanded into their supported
  files (sorted, not recursive)."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path)
                     if extension(f) in SUPPORTED and os.path.isfile(os.path.join(path, f)))
      out += [(f, None) for f in found] or [
          (path, f"folder holds no supported file ({', '.join(SUPPORTED)})")]
    elif not os.path.exists(path):
      out.append((path, "no such file or folder"))
    elif extension(path) not in SUPPORTED:
      out.append((path, f"unsupported file type {extension(path) or '(none)'!r}; "
                        f"supported: {', '.join(SUPPORTED)}"))
    else:
      out.append((path, None))
  return out


def _read_image(path: str) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in ("1", "I;16", "I", "F"):
        im = im.convert("L")
      elif im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
      array = np.asarray(im)
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise InputError(f"{path}: not a readable image ({str(e).splitlines()[0]})") from None
  return array[..., None] if array.ndim == 2 else array


def _read_csv(path: str) -> np.ndarray:
  try:
    values = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
  except ValueError as e:
    raise InputError(f"{path}: not a table of numbers ({str(e).splitlines()[0]})") from None
  return values.T if values.shape[0] == 1 else values      # one row: a univariate series


def _read_ts(path: str) -> list[tuple[str, np.ndarray]]:
  from cnnlab.datasets import ucr
  try:
    ts = ucr.read_ts(path)
  except (ValueError, OSError) as e:
    raise InputError(str(e).splitlines()[0]) from None
  return [(f"{path}#{i}", np.asarray(s, np.float32)) for i, s in enumerate(ts.series)]


def _read_array(path: str) -> np.ndarray:
  if extension(path) == ".npy":
    try:
      return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
      raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
  from cnnlab.data import volumes
  try:
    return volumes.read_volume(path)
  except ValueError as e:
    raise InputError(str(e).splitlines()[0]) from None


def read(path: str) -> list[tuple[str, np.ndarray]]:
  """[(name, raw array)]: one entry per image/array/csv file, one per series of a .ts file."""
  ext = extension(path)
  if ext in IMAGE_EXTENSIONS:
    return [(path, _read_image(path))]
  if ext == ".csv":
    return [(path, _read_csv(path))]
  if ext == ".ts":
    return _read_ts(path)
  return [(path, _read_array(path))]


def _shape_text(shape) -> str:
  return "x".join(str(int(s)) for s in shape)


IMAGE_FAMILIES = ("mnist", "cifar", "imagenet")


@dataclasses.dataclass(frozen=True)
class Preparer:
  """Raw array -> one model input (float32), through the data package's ``eval_inputs`` (the
  evaluation pipeline's own preprocessing); InputError (one line, naming the file) otherwise.
  Images are checked here first so the message speaks of channels and pixels."""
  feed: Any                   # the run's cnnlab.data.pipeline.Feed
  input_shape: tuple          # what the model takes (for messages)

  @property
  def info(self):
    return self.feed.facts.info

  def __call__(self, name: str, raw: np.ndarray) -> np.ndarray:
    path = name.split("#")[0]
    ext = extension(path)
    family = self.info.family
    if family in IMAGE_FAMILIES:
      raw = self._check_image(name, ext, raw)
      if family == "imagenet":
        with open(path, "rb") as f:
          raw = f.read()
    elif ext in IMAGE_EXTENSIONS:
      raise InputError(f"{name}: an image; this model takes {family} inputs of shape "
                       f"{self.input_shape} ({', '.join(ARRAY_EXTENSIONS + SERIES_EXTENSIONS)})")
    elif family == "series" and np.ndim(raw) == 1:
      raw = np.asarray(raw)[:, None]
    try:
      batch = self.feed.eval_inputs([raw])
    except ValueError as e:
      raise InputError(f"{name}: {str(e).splitlines()[0]}") from None
    return np.asarray(batch[0], np.float32)

  def _check_image(self, name, ext, raw):
    if ext not in IMAGE_EXTENSIONS:
      raise InputError(f"{name}: a {ext} file; this model takes "
                       f"{_shape_text(self.input_shape)} images (PNG/JPEG)")
    want_c = int(self.input_shape[-1])
    if raw.ndim != 3 or raw.dtype != np.uint8:
      raise InputError(f"{name}: a {raw.dtype} image of shape {raw.shape}; need 8-bit pixels")
    if raw.shape[-1] != want_c:
      kind = {1: "grey", 3: "RGB"}.get(want_c, f"{want_c}-channel")
      raise InputError(f"{name}: {raw.shape[-1]} channel(s); the model takes {kind} images "
                       f"({want_c} channel{'s' if want_c > 1 else ''})")
    stored = tuple(self.info.input_shape[:2])
    if self.info.family != "imagenet" and raw.shape[:2] != stored:
      raise InputError(f"{name}: a {_shape_text(raw.shape[:2])} image; the model takes "
                       f"{_shape_text(stored)} (resize it first)")
    return raw
