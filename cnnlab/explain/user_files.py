"""A trained model's inputs from a user's own files, prepared as the training pipeline
prepares its evaluation examples.

    entries = collect(["scan.npy", "digits/"])   # [(path, error or None)], folders expanded
    prepare = Preparer(trained.feed, trained.input_shape)    # the run's dataset
    for path, error in entries:
        for name, raw in read(path):                         # a .ts file may hold several series
            x = prepare(name, raw)                           # float32, one example

Supported: PNG/JPEG/TIFF images (MNIST, CIFAR, ImageNet and 2-D segmentation families),
``.npy`` arrays, NIfTI ``.nii``/``.nii.gz`` volumes and DICOM series folders (volume families;
``.npy`` also for series), ``.ts`` (UCR/UEA) and ``.csv`` series (rows are time steps, columns
channels; one row is a univariate series). A folder holding DICOM files and no supported file
is one input, a volume (``collect``); any other folder is expanded into its supported files
and its DICOM series sub-folders.
Preparation is the evaluation pipeline's (``cnnlab.data.pipeline.Feed.eval_inputs``):
- mnist: a grey 28x28 image; 'standard' (x/255 - mean) / std, or 'lenet1998' (padded to 32);
- cifar: an RGB 32x32 image; per-channel standardisation or the training set's mean image;
- imagenet: any RGB image file: shorter side resized, centre crop, standardised;
- series: (L, C) with the dataset's C, resampled to the run's length, z-normalised;
- volume: (D, H, W[, C]) of the stored shape, intensity-normalised, centre-cropped;
- segmentation / segvolume: an image / volume of ANY size with the dataset's channels,
  normalised as evaluation normalises (x / 255, z-score or the CT window), never resized
  (tiled inference takes any size; ``resize`` does not apply).
Anything else raises ``InputError``: one line naming the file, what it holds and what the model
takes — and, for an image, the conversion that would make it fit.

A user's own photo rarely matches the training images, so three explicit conversions exist
(``Conversions``; all off by default, so a mismatch is refused, never silently repaired):
- ``grey``: an RGB(A) image to one channel, 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma, the
  weights PIL's "L" mode uses; alpha dropped), when the model takes grey images;
- ``resize``: the shorter side scaled to the model's side (Lanczos), then a centre crop to the
  model's height x width (aspect ratio kept, as ImageNet's evaluation crops);
- ``invert``: 255 - value, for dark ink on light paper given to a model trained on light on dark.
``Preparer.prepare`` returns the input and one line per input saying what was done. For the
MNIST family (white ink on black: mean intensity 0.13 for MNIST, 0.29 for Fashion-MNIST) an
image whose mean intensity is above 0.5 — mostly light, so a light background — gets a hint
line suggesting ``invert``: the background fills most of such an image, so its brightness
decides the mean.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
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
  files and DICOM series sub-folders (sorted, not recursive). A folder that is itself a DICOM
  series (cnnlab.data.dicom.is_series_folder) is ONE input, a volume."""
  out = []
  for path in paths:
    if os.path.isdir(path) and is_dicom_series(path):
      out.append((path, None))
    elif os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path) if _usable(path, f))
      out += [(f, None) for f in found] or [
          (path, f"folder holds no supported file ({', '.join(SUPPORTED)}) and no DICOM "
                 "series folder")]
    elif not os.path.exists(path):
      out.append((path, "no such file or folder"))
    elif extension(path) not in SUPPORTED:
      out.append((path, f"unsupported file type {extension(path) or '(none)'!r}; "
                        f"supported: {', '.join(SUPPORTED)}, DICOM series folders"))
    else:
      out.append((path, None))
  return out


def is_dicom_series(path: str) -> bool:
  """A folder of DICOM files and no supported file (a folder of PNGs is never a series; this
  also spares reading the headers of its files); without pydicom, no folder is one."""
  from cnnlab.data import dicom
  names = [f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f))]
  if any(extension(f) in SUPPORTED for f in names):
    return False
  try:
    return dicom.is_series_folder(path)
  except ImportError:
    return False


def _usable(folder: str, name: str) -> bool:
  path = os.path.join(folder, name)
  if os.path.isfile(path):
    return extension(name) in SUPPORTED
  return os.path.isdir(path) and not name.startswith(".") and is_dicom_series(path)


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
SEGMENTATION_IMAGES = ("segmentation",)   # 2-D segmentation: image files of any size
LUMA = (0.299, 0.587, 0.114)      # ITU-R BT.601, as PIL's RGB -> "L"
LIGHT_MEAN = 0.5                  # mean intensity above which an image is mostly light


@dataclasses.dataclass(frozen=True)
class Conversions:
  """The explicit changes a user allows to an image (see the module docstring)."""
  grey: bool = False
  resize: bool = False
  invert: bool = False


@dataclasses.dataclass(frozen=True)
class Preparer:
  """Raw array -> one model input (float32), through the data package's ``eval_inputs`` (the
  evaluation pipeline's own preprocessing); InputError (one line, naming the file) otherwise.
  Images are checked here first so the message speaks of channels and pixels."""
  feed: Any                   # the run's cnnlab.data.pipeline.Feed
  input_shape: tuple          # what the model takes (for messages)
  conversions: Conversions = Conversions()

  @property
  def info(self):
    return self.feed.facts.info

  def __call__(self, name: str, raw: np.ndarray) -> np.ndarray:
    return self.prepare(name, raw)[0]

  def prepare(self, name: str, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(model input, lines saying what was done to it or hinting at a fix)."""
    path = name.split("#")[0]
    ext = extension(path)
    family = self.info.family
    notes: list[str] = []
    if family in IMAGE_FAMILIES + SEGMENTATION_IMAGES:
      converted, notes = self._image(name, ext, raw)
      if family == "imagenet":    # its pipeline decodes files: the file, or the converted pixels
        converted = _file_bytes(path) if converted is raw else _png_bytes(converted)
      raw = converted
    elif ext in IMAGE_EXTENSIONS and family == "segvolume":
      raise InputError(f"{name}: an image; this model takes volumes of any size with "
                       f"{self.input_shape[-1]} channel(s) ({', '.join(ARRAY_EXTENSIONS)}, "
                       "DICOM series folders)")
    elif ext in IMAGE_EXTENSIONS:
      raise InputError(f"{name}: an image; this model takes {family} inputs of shape "
                       f"{self.input_shape} ({', '.join(ARRAY_EXTENSIONS + SERIES_EXTENSIONS)})")
    elif family == "series" and np.ndim(raw) == 1:
      raw = np.asarray(raw)[:, None]
    try:
      batch = self.feed.eval_inputs([raw])
    except ValueError as e:
      raise InputError(f"{name}: {str(e).splitlines()[0]}") from None
    return np.asarray(batch[0], np.float32), notes

  def _image(self, name, ext, raw) -> tuple[np.ndarray, list[str]]:
    """The image checked and converted as allowed; (pixels, [what was done, hint])."""
    if ext not in IMAGE_EXTENSIONS:
      size = ("any-size" if self.info.family in SEGMENTATION_IMAGES
              else _shape_text(self.input_shape))
      raise InputError(f"{name}: a {ext or 'folder'} input; this model takes {size} images "
                       "(PNG/JPEG/TIFF)")
    if raw.ndim != 3 or raw.dtype != np.uint8:
      raise InputError(f"{name}: a {raw.dtype} image of shape {raw.shape}; need 8-bit pixels")
    done = []
    raw = self._channels(name, raw, done)
    if self.info.family in IMAGE_FAMILIES:     # a segmentation network takes any size
      raw = self._size(name, raw, done)
    if self.conversions.invert:
      raw = 255 - raw
      done.append("inverted (255 - value)")
    notes = ["; ".join(done)] if done else []
    return raw, notes + self._polarity_hint(raw)

  def _channels(self, name, raw, done):
    want_c, have_c = int(self.input_shape[-1]), raw.shape[-1]
    if have_c == want_c:
      return raw
    kind = {1: "grey", 3: "RGB"}.get(want_c, f"{want_c}-channel")
    fix = ": pass --grey to convert it" if want_c == 1 and have_c in (2, 3, 4) else ""
    if not fix or not self.conversions.grey:
      raise InputError(f"{name}: {have_c} channel(s); the model takes {kind} images "
                       f"({want_c} channel{'s' if want_c > 1 else ''}){fix}")
    done.append(f"converted {'RGB' if have_c >= 3 else 'grey+alpha'} to grey"
                + (f" ({' + '.join(f'{w} {c}' for w, c in zip(LUMA, 'RGB'))})"
                   if have_c >= 3 else "") + (", alpha dropped" if have_c in (2, 4) else ""))
    return to_grey(raw)

  def _size(self, name, raw, done):
    stored = tuple(self.info.input_shape[:2])
    if self.info.family == "imagenet" or raw.shape[:2] == stored:
      return raw
    if not self.conversions.resize:
      raise InputError(f"{name}: a {_shape_text(raw.shape[:2])} image; the model takes "
                       f"{_shape_text(stored)}: pass --resize to scale and centre-crop it")
    out, scaled = resize_and_crop(raw, stored)
    done.append(f"resized {_shape_text(raw.shape[:2])} to {_shape_text(scaled)} (Lanczos), "
                f"centre-cropped to {_shape_text(stored)}")
    return out

  def _polarity_hint(self, raw) -> list[str]:
    """For a light-on-dark family (MNIST's), a hint when the image is mostly light."""
    if self.info.family != "mnist" or self.conversions.invert:
      return []
    mean = float(raw.mean()) / 255.0
    if mean <= LIGHT_MEAN or float(self.info.mean[0]) > LIGHT_MEAN:
      return []
    return [f"hint: mostly light (mean intensity {mean:.2f}): dark strokes on a light "
            f"background? This model was trained on light strokes on black (mean "
            f"{float(self.info.mean[0]):.2f}); pass --invert to flip it"]


def to_grey(raw: np.ndarray) -> np.ndarray:
  """(H, W, C) uint8 RGB / RGBA / grey+alpha -> (H, W, 1) uint8 (BT.601 luma, alpha dropped)."""
  if raw.shape[-1] in (1, 2):
    return raw[..., :1]
  grey = raw[..., :3].astype(np.float32) @ np.asarray(LUMA, np.float32)
  return np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None]


def resize_and_crop(raw: np.ndarray, size: tuple) -> tuple[np.ndarray, tuple[int, int]]:
  """``raw`` (H, W, C) uint8 scaled (Lanczos) so that it covers ``size`` (h, w) with its aspect
  ratio kept, then centre-cropped to ``size``; (pixels, the scaled shape)."""
  from PIL import Image
  h, w = raw.shape[:2]
  scale = max(size[0] / h, size[1] / w)
  scaled = (max(size[0], round(h * scale)), max(size[1], round(w * scale)))
  im = Image.fromarray(raw[..., 0] if raw.shape[-1] == 1 else raw)
  out = np.asarray(im.resize((scaled[1], scaled[0]), Image.Resampling.LANCZOS))
  top, left = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
  out = out[top:top + size[0], left:left + size[1]]
  return (out[..., None] if out.ndim == 2 else out), scaled


def _file_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _png_bytes(raw: np.ndarray) -> bytes:
  """Converted pixels re-encoded (losslessly) for a pipeline that decodes files itself."""
  import io
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(raw[..., 0] if raw.shape[-1] == 1 else raw).save(buffer, format="PNG")
  return buffer.getvalue()
