"""A segmentation run's predictions as files: one mask per input, and what the prediction CSV
says about it.

    predict = predictor(trained)               # prepared input [*S, C] -> logits [*S, K]
    mask = predict(x).argmax(-1)                # class indices at the input's own size
    m = write_mask(mask, "masks/", "scan.nii.gz", geometry_of("scan.nii.gz"))
    row = csv_row(m, class_names)               # counts (and mL) per class

Each input is predicted whole by the run's tiled inference (cnnlab.training.segmentation:
``predict_whole`` with the run's ``tile_shape``, ``tile_overlap``, ``tile_blend``; U-Net's
mirrored overlap-tile for valid-padding networks), so its size is free and device memory is
bounded by one batch of tiles.

Masks hold class indices (uint8; class k of the run's class names is the value k — not the
label values the dataset was prepared from):
- an image: ``<folder>/<input stem>.png``, a one-channel PNG of the input's height x width;
- a volume: ``<folder>/<stem>.nii.gz`` (``scan.nii.gz`` -> ``scan``; a DICOM series folder:
  its name) in read_volume's axis order, with the input's affine (cnnlab.data.volumes: NIfTI
  its own, a DICOM series the RAS affine of its geometry). A ``.npy`` volume has no geometry:
  its mask gets the identity affine (1 mm voxels at the origin) and a note saying so.
A mask never overwrites a file: when ``<stem>.png`` exists (an earlier prediction, or two
inputs with one stem), the next free ``<stem>-2.png``, ``<stem>-3.png``... is taken; the CSV
names the file written.

Per class, the CSV has the count of pixels / voxels predicted as that class and, for a volume
whose voxel spacing is known (NIfTI, DICOM), its volume in mL: count x the product of the
(z, y, x) spacing in mm / 1000 (1 mL = 1000 mm^3).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import numpy as np

MM3_PER_ML = 1000.0
MAX_CLASSES = 256          # class indices stored as uint8
NPY_AFFINE_NOTE = "a .npy volume has no geometry: mask written with the identity affine"


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Where an input lies: ``spacing`` (z, y, x) mm or None, ``affine`` 4x4 or None (images),
  and notes to report with it."""
  spacing: tuple[float, float, float] | None = None
  affine: np.ndarray | None = None
  notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class MaskFile:
  """One written mask: its path, the input's spatial shape, counts per class (K,), and the
  volume per class in mL (None when the spacing is unknown)."""
  name: str                      # the input, as given
  path: str
  shape: tuple[int, ...]
  counts: np.ndarray
  spacing: tuple[float, float, float] | None
  volumes_ml: np.ndarray | None
  notes: tuple[str, ...]


def predictor(trained) -> Callable[[np.ndarray], np.ndarray]:
  """Prepared input [*S, C] -> float32 logits [*S, K], predicted whole by tiles."""
  from cnnlab.training import segmentation
  apply = segmentation.tile_apply(trained.parts, trained.state)
  return lambda x: segmentation.predict_whole(trained.parts, apply, np.asarray(x, np.float32))


def geometry_of(path: str, rank: int) -> Geometry:
  """The geometry of a user's input: none for a 2-D image, the header's for a volume."""
  if rank == 2:
    return Geometry()
  from cnnlab.data import volumes
  g = volumes.geometry(path)
  if g.affine is None:
    return Geometry(None, np.eye(4), (NPY_AFFINE_NOTE,))
  return Geometry(tuple(float(s) for s in g.spacing), np.asarray(g.affine, float))


def stem(path: str) -> str:
  """The mask's base name: ``scan.nii.gz`` -> ``scan``, ``a/b.png`` -> ``b``, a folder: its
  name."""
  from cnnlab.data import volumes
  if os.path.isdir(path) or path.lower().endswith(volumes.EXTENSIONS):
    return volumes.volume_stem(path)
  return os.path.splitext(os.path.basename(path))[0]


def class_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 (K,): how many pixels / voxels of ``mask`` hold each class."""
  return np.bincount(np.asarray(mask, np.int64).ravel(), minlength=num_classes)[:num_classes]


def volumes_ml(counts: np.ndarray, spacing) -> np.ndarray | None:
  """counts x voxel volume (mm^3) / 1000; None without a spacing."""
  if spacing is None:
    return None
  return np.asarray(counts, np.float64) * float(np.prod(spacing)) / MM3_PER_ML


def _new_file(folder: str, base: str, ext: str) -> str:
  """``folder/base<ext>``, else the first free ``base-2<ext>``, ``base-3<ext>``... (created
  empty, so two writers never pick one name)."""
  os.makedirs(folder, exist_ok=True)
  for k in range(1, 10_000):
    path = os.path.join(folder, base + (f"-{k}" if k > 1 else "") + ext)
    try:
      with open(path, "x"):
        return path
    except FileExistsError:
      continue
  raise FileExistsError(f"{folder}: 9999 masks named {base}*{ext} already")


def _save(mask: np.ndarray, folder: str, base: str, geometry: Geometry) -> str:
  if mask.ndim == 2:
    from PIL import Image
    path = _new_file(folder, base, ".png")
    Image.fromarray(mask, mode="L").save(path, format="PNG")
    return path
  import nibabel
  path = _new_file(folder, base, ".nii.gz")
  image = nibabel.Nifti1Image(mask, geometry.affine)
  image.header.set_data_dtype(np.uint8)
  nibabel.save(image, path)
  return path


def write_mask(mask: np.ndarray, folder: str, name: str, geometry: Geometry,
               num_classes: int) -> MaskFile:
  """Writes ``mask`` ([H, W] or [D, H, W] class indices) for the input ``name`` into
  ``folder`` (see the module docstring); returns what the CSV reports of it."""
  if not 1 <= num_classes <= MAX_CLASSES:
    raise ValueError(f"num_classes={num_classes}: masks store class indices as uint8 "
                     f"(at most {MAX_CLASSES} classes)")
  mask = np.asarray(mask).astype(np.uint8)
  path = _save(mask, folder, stem(name), geometry)
  counts = class_counts(mask, num_classes)
  return MaskFile(name=name, path=path, shape=tuple(mask.shape), counts=counts,
                  spacing=geometry.spacing, volumes_ml=volumes_ml(counts, geometry.spacing),
                  notes=geometry.notes)


def csv_columns(class_names: Sequence[str], rank: int) -> tuple[str, ...]:
  """The prediction CSV's columns for a segmentation run of spatial ``rank``."""
  unit = "pixels" if rank == 2 else "voxels"
  per_class = [f"{unit}_{n}" for n in class_names]
  if rank == 3:
    per_class += [f"ml_{n}" for n in class_names]
  return ("path", "mask", "shape", "spacing_mm", *per_class, "notes", "error")


def csv_row(m: MaskFile, class_names: Sequence[str]) -> dict:
  """The CSV cells of one written mask (the columns of ``csv_columns``)."""
  unit = "pixels" if len(m.shape) == 2 else "voxels"
  row = {"path": m.name, "mask": m.path, "shape": "x".join(map(str, m.shape)),
         "spacing_mm": "" if m.spacing is None else "x".join(f"{s:g}" for s in m.spacing),
         "notes": " | ".join(m.notes), "error": ""}
  for k, n in enumerate(class_names):
    row[f"{unit}_{n}"] = int(m.counts[k])
    if len(m.shape) == 3:
      row[f"ml_{n}"] = "" if m.volumes_ml is None else f"{m.volumes_ml[k]:.3f}"
  return row


def summary(m: MaskFile, class_names: Sequence[str]) -> str:
  """One line per input: each class's share of the input (and mL where known)."""
  total = max(int(m.counts.sum()), 1)
  parts = []
  for k, n in enumerate(class_names):
    text = f"{n} {100 * m.counts[k] / total:.1f} %"
    if m.volumes_ml is not None:
      text += f" ({m.volumes_ml[k]:.1f} mL)"
    parts.append(text)
  return f"{m.name}: " + ", ".join(parts) + f" -> {m.path}"
