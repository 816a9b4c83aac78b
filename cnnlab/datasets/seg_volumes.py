"""Volume + label folders -> a TFDS segmentation dataset of volumes (``segvolumes/<name>``).

    python -m experiments.prepare_data --dataset=segvolumes/<name> --source_dir=DIR

``DIR/<split>/image/`` holds the scans — ``.npy``, NIfTI (``.nii``, ``.nii.gz``) files or DICOM
series folders (one folder per series) — and ``DIR/<split>/label/`` their label volumes
(``.npy`` or NIfTI), matched by stem (``case7.nii.gz`` and the folder ``case7/`` both have the
stem ``case7``); the label mapping from ``DIR/labels.json`` or the train labels' values
(seg_pairs.py has the rules). Volumes are read with cnnlab.data.volumes (DICOM: slices in
geometric order, Hounsfield units), so a label must hold one class value per voxel of the
scan's [D, H, W] grid in that same axis order; its shape must equal the scan's, and where both
files state a voxel spacing, the spacings must agree (within 0.1 %) — a label resampled to
another grid is an error naming it. Scans may differ in size; all have one channel count.

Each example: ``image`` float32 [D, H, W, C] (as read: HU for CT), ``mask`` uint8 [D, H, W]
(class indices; IGNORE_INDEX = 255 for ignored values and in unlabelled splits), ``spacing``
float32 (z, y, x) mm, ``affine`` float64 4x4 voxel (d, h, w) -> RAS mm (cnnlab.data.volumes'
convention; NaN where the file does not say, i.e. ``.npy``), ``file`` (the scan's path inside
DIR). Each volume is stored zlib-compressed in one TFRecord example (under 2 GiB each: crop
or resample whole-body scans beforehand).
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from cnnlab.data import volumes
from cnnlab.datasets import local, seg_pairs

FAMILY = "segvolumes"
_UNKNOWN_SPACING = (float("nan"),) * 3
_SPACING_RTOL = 1e-3


def scan(root: str) -> dict[str, list[seg_pairs.Pair]]:
  return seg_pairs.scan(root, stem=volumes.volume_stem, accept_image=volumes.is_volume_path,
                        accept_label=lambda p: os.path.isdir(p) or volumes.is_volume_path(p))


def read_label(path: str) -> np.ndarray:
  """A label volume's stored values, int64 [D, H, W]."""
  if os.path.isdir(path):
    raise seg_pairs.SegmentationDataError(f"{path}: a folder as a label volume; labels are "
                                          ".npy or NIfTI files")
  try:
    v = volumes.read_volume(path)
  except volumes.VolumeError as e:
    raise seg_pairs.SegmentationDataError(str(e)) from None
  if v.shape[-1] != 1:
    raise seg_pairs.SegmentationDataError(f"{path}: label volume with {v.shape[-1]} channels; "
                                          "store one class value per voxel")
  return seg_pairs.integer_values(v[..., 0], path)


def _geometry(path: str) -> volumes.Geometry:
  try:
    return volumes.geometry(path)
  except volumes.VolumeError as e:
    raise seg_pairs.SegmentationDataError(str(e)) from None


def _check_pair(root: str, pair: seg_pairs.Pair, geo: volumes.Geometry) -> dict:
  """{stored value: voxel count} of the pair's label, after the shape / spacing checks."""
  path = os.path.join(root, pair.label)
  label = read_label(path)
  if label.shape != geo.shape[:3]:
    raise seg_pairs.SegmentationDataError(f"{path}: label shape {label.shape} differs from "
                                          f"its scan {pair.image} {geo.shape[:3]}")
  spacing = volumes.voxel_spacing(path)
  if spacing is not None and geo.spacing is not None and not np.allclose(
      spacing, geo.spacing, rtol=_SPACING_RTOL):
    raise seg_pairs.SegmentationDataError(
        f"{path}: voxel spacing {tuple(round(s, 4) for s in spacing)} mm differs from its "
        f"scan {pair.image} {tuple(round(s, 4) for s in geo.spacing)} mm")
  values, n = np.unique(label, return_counts=True)
  return dict(zip(values.tolist(), n.tolist()))


def _check(root: str, pairs: Mapping[str, list]) -> tuple[dict, list, int]:
  """Pre-pass: ({pair: {value: count}}, [scan shapes], channels)."""
  counts, shapes, first = {}, [], None
  for entries in pairs.values():
    for pair in entries:
      geo = _geometry(os.path.join(root, pair.image))
      if first is None:
        first = (geo.shape[3], pair.image)
      elif geo.shape[3] != first[0]:
        raise seg_pairs.SegmentationDataError(
            f"{os.path.join(root, pair.image)}: {geo.shape[3]} channel(s) where {first[1]} "
            f"has {first[0]}; all scans need one channel count")
      shapes.append(geo.shape)
      if pair.label is not None:
        counts[pair] = _check_pair(root, pair, geo)
  return counts, shapes, first[0]


def features(channels: int) -> dict:
  import tensorflow_datasets as tfds
  zlib = tfds.features.Encoding.ZLIB
  return {"image": tfds.features.Tensor(shape=(None, None, None, channels), dtype=np.float32,
                                        encoding=zlib),
          "mask": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8,
                                       encoding=zlib),
          "spacing": tfds.features.Tensor(shape=(3,), dtype=np.float32),
          "affine": tfds.features.Tensor(shape=(4, 4), dtype=np.float64),
          "file": tfds.features.Text()}


def _example(root: str, pair: seg_pairs.Pair, mapping: seg_pairs.LabelMap) -> dict:
  vol = volumes.load(os.path.join(root, pair.image))
  if pair.label is None:
    mask = np.full(vol.voxels.shape[:3], seg_pairs.IGNORE_INDEX, np.uint8)
  else:
    path = os.path.join(root, pair.label)
    mask = mapping.apply(read_label(path), path)
  return {"image": vol.voxels, "mask": mask,
          "spacing": np.asarray(vol.spacing or _UNKNOWN_SPACING, np.float32),
          "affine": (np.full((4, 4), np.nan) if vol.affine is None else vol.affine),
          "file": pair.image}


def local_spec(config: str, source_dir: str, *,
               label_map: seg_pairs.LabelMap | None = None):
  """The LocalSpec that builds ``segvolumes/<config>`` from ``source_dir`` (checked first)."""
  pairs = scan(source_dir)
  counts, shapes, channels = _check(source_dir, pairs)
  mapping = seg_pairs.resolve_map(source_dir, label_map,
                                  {p: v.keys() for p, v in counts.items()})
  same = len(set(shapes)) == 1
  meta = {"task": "segmentation", "ndim": 3, "channels": channels,
          "shape": list(shapes[0]) if same else [None, None, None, channels],
          **mapping.metadata(),
          "unlabelled_splits": [s for s, e in pairs.items() if e[0].label is None],
          "class_voxels": seg_pairs.class_counts(counts, mapping),
          "min_size": [min(s[i] for s in shapes) for i in range(3)],
          "max_size": [max(s[i] for s in shapes) for i in range(3)],
          "spacing_unit": "mm", "affine_frame": "RAS", "source_dir": os.path.abspath(source_dir)}
  return local.LocalSpec(
      family=FAMILY, config=config, features=features(channels),
      splits={s: (lambda e=e: (_example(source_dir, p, mapping) for p in e))
              for s, e in pairs.items()},
      metadata=meta,
      description=f"Volumes and label volumes from {os.path.abspath(source_dir)}, by cnnlab")
