"""A trained model's inputs from a user's own files, prepared as the training pipeline
prepares its evaluation examples.

    files, failed = collect(["scan.npy", "digits/"])        # folders: their supported files
    prepare = Preparer.for_dataset(info, opts, input_shape)  # cnnlab.data catalogue entry
    for path in files:
        for name, raw in read(path):                         # a .ts file may hold several series
            x = prepare(name, raw)                           # float32, one example

Supported: PNG/JPEG images (MNIST, CIFAR, ImageNet families), ``.npy`` arrays and NIfTI
``.nii``/``.nii.gz`` volumes (volume family; ``.npy`` also for series), ``.ts`` (UCR/UEA) and
``.csv`` series (rows are time steps, columns channels; one row is a univariate series).
Preparation per family:
- mnist: a grey 28x28 image; 'standard' (x/255 - mean) / std, or 'lenet1998' (padded to 32);
- cifar: an RGB 32x32 image; per-channel standardisation or the training set's mean image;
- imagenet: any RGB image file: shorter side resized, centre crop, standardised (TF ops);
- series: (L, C) with the model's L and C, z-normalised per channel unless preprocess 'raw';
- volume: (D, H, W[, C]) of the model's shape (a larger one is centre-cropped to it),
  z-scored per volume unless preprocess 'raw'.
Anything else raises ``InputError``: one line naming the file, what it holds and what the model
takes.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

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


def collect(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(files to read, [(path, error)]) for files and folders (a folder's supported files,
  sorted, not recursive)."""
  files, failed = [], []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path)
                     if extension(f) in SUPPORTED and os.path.isfile(os.path.join(path, f)))
      if found:
        files += found
      else:
        failed.append((path, f"folder holds no supported file ({', '.join(SUPPORTED)})"))
    elif not os.path.exists(path):
      failed.append((path, "no such file or folder"))
    elif extension(path) not in SUPPORTED:
      failed.append((path, f"unsupported file type {extension(path) or '(none)'!r}; "
                           f"supported: {', '.join(SUPPORTED)}"))
    else:
      files.append(path)
  return files, failed


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
  from cnnlab.data import ucr
  try:
    ts = ucr.read_ts(path)
  except ValueError as e:
    raise InputError(str(e).splitlines()[0]) from None
  return [(f"{path}#{i}", np.asarray(s, np.float32)) for i, s in enumerate(ts.series)]


def _read_array(path: str) -> np.ndarray:
  if extension(path) == ".npy":
    try:
      return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
      raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
  try:
    import nibabel
  except ImportError:
    raise InputError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
  try:
    return np.asarray(nibabel.load(path).get_fdata(), np.float32)
  except Exception as e:  # nibabel raises several types for a damaged file
    raise InputError(f"{path}: not a readable NIfTI volume ({str(e).splitlines()[0]})") from None


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


def znorm(x: np.ndarray, axes) -> np.ndarray:
  """(x - mean) / std over ``axes`` (std 0 -> divided by 1)."""
  mean = x.mean(axis=axes, keepdims=True)
  std = x.std(axis=axes, keepdims=True)
  return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Preparer:
  """Raw array -> one model input (float32 ``input_shape``); InputError otherwise."""
  family: str
  input_shape: tuple
  preprocess: str
  image_fn: Callable[[np.ndarray], np.ndarray] | None = None   # uint8 batch -> float batch
  encoded_fn: Callable[[bytes], Any] | None = None             # ImageNet: file bytes -> input

  @classmethod
  def for_dataset(cls, info, opts: Mapping[str, Any], input_shape) -> "Preparer":
    """From a cnnlab.data catalogue entry and the run's resolved dataset options."""
    from cnnlab.data import preprocess as pp
    pre = str(opts.get("preprocess") or "")
    shape = tuple(int(s) for s in input_shape)
    if info.family == "mnist":
      fn = (pp.mnist_lenet1998 if pre == "lenet1998"
            else lambda x: pp.mnist_standard(x, info.mean, info.std))
      return cls("mnist", shape, pre, image_fn=fn)
    if info.family == "cifar":
      if pre == "per_pixel_mean":
        from cnnlab.data import datasets, memory
        mean = memory.mean_image(datasets.builder(info, opts.get("data_dir")), info.train_split)
        return cls("cifar", shape, pre, image_fn=lambda x: pp.subtract_pixel_mean(x, mean))
      return cls("cifar", shape, pre,
                 image_fn=lambda x: pp.normalize_channels(x, info.mean, info.std))
    if info.family == "imagenet":
      fn = lambda data: pp.imagenet_eval(  # noqa: E731
          data, image_size=shape[0], eval_resize=int(opts.get("eval_resize") or 256),
          mean=info.mean, std=info.std)
      return cls("imagenet", shape, pre, encoded_fn=fn)
    return cls(info.family, shape, pre)

  def __call__(self, name: str, raw: np.ndarray) -> np.ndarray:
    path = name.split("#")[0]
    ext = extension(path)
    if self.family in ("mnist", "cifar", "imagenet"):
      if ext not in IMAGE_EXTENSIONS:
        raise InputError(f"{name}: a {ext} file; this model takes "
                         f"{_shape_text(self.input_shape)} images (PNG/JPEG)")
      return self._image(name, path, raw)
    if self.family == "series":
      return self._series(name, raw)
    if self.family == "volume":
      return self._volume(name, raw)
    raise InputError(f"{name}: cannot prepare inputs for the {self.family!r} data family")

  def _image(self, name, path, raw):
    want_c = self.input_shape[-1]
    if raw.ndim != 3 or raw.dtype != np.uint8:
      raise InputError(f"{name}: a {raw.dtype} image of shape {raw.shape}; need 8-bit pixels")
    if raw.shape[-1] != want_c:
      kind = {1: "grey", 3: "RGB"}.get(want_c, f"{want_c}-channel")
      raise InputError(f"{name}: {raw.shape[-1]} channel(s); the model takes {kind} images "
                       f"({want_c} channel{'s' if want_c > 1 else ''})")
    if self.encoded_fn is not None:
      with open(path, "rb") as f:
        return np.asarray(self.encoded_fn(f.read()), np.float32)
    stored = (28, 28) if self.preprocess == "lenet1998" else tuple(self.input_shape[:2])
    if raw.shape[:2] != stored:
      raise InputError(f"{name}: a {_shape_text(raw.shape[:2])} image; the model takes "
                       f"{_shape_text(stored)} (resize it first)")
    return np.asarray(self.image_fn(raw[None]), np.float32)[0]

  def _series(self, name, raw):
    x = np.asarray(raw, np.float32)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape != self.input_shape:
      raise InputError(f"{name}: a series of shape {x.shape} (length, channels); the model "
                       f"takes {self.input_shape}")
    return x if self.preprocess == "raw" else znorm(x, axes=0)

  def _volume(self, name, raw):
    x = np.asarray(raw, np.float32)
    want = self.input_shape
    x = x[..., None] if x.ndim == len(want) - 1 and want[-1] == 1 else x
    if x.ndim != len(want) or x.shape[-1] != want[-1] or any(
        s < w for s, w in zip(x.shape[:-1], want[:-1])):
      raise InputError(f"{name}: a volume of shape {raw.shape}; the model takes {want} "
                       f"(D, H, W, C; larger volumes are centre-cropped)")
    starts = [(s - w) // 2 for s, w in zip(x.shape[:-1], want[:-1])]
    x = x[tuple(slice(a, a + w) for a, w in zip(starts, want[:-1]))]
    return x if self.preprocess == "raw" else znorm(x, axes=tuple(range(x.ndim - 1)))
