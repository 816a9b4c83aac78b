"""Labelled 3-D volumes (CT / MRI / microscopy) from a folder, and a synthetic volumetric task.

    python -m experiments.prepare_data --dataset=volumes/<name> --source_dir=DIR

``DIR`` holds one sub-folder per class with its volumes, ``<class>/*.npy`` (NumPy arrays, read
without pickle), ``<class>/*.nii`` / ``*.nii.gz`` (NIfTI, read with nibabel; the voxel array
in stored index order, as float32, with the header's scaling applied) or ``<class>/<series>/``
(a DICOM series folder, read by cnnlab.data.volumes: slices in geometric order, HU). Volumes
are [D, H, W] or [D, H, W, C] and must all have the same shape (resample them beforehand; the
first file of another shape is named in the error). Splits: when ``DIR`` has ``train/`` and ``test/``
sub-folders, each with the class folders, those are the splits; otherwise every fifth file of
each class (sorted by name: the 5th, 10th, ...) is held out as ``test`` — deterministic and
stratified. Classes are the sorted class-folder names, mapped to 0..K-1 in that order (kept in
the ClassLabel feature). The build is the TFDS dataset ``<data_dir>/volumes/<name>/1.0.0`` with
features ``volume`` (float32 [D, H, W, C]), ``label`` and ``file`` (the path inside DIR).
Intensity normalisation and 3-D augmentation happen in the pipeline (families.py).

``synthetic_volumes`` is a task the project writes itself (on first use; no source files): 20^3
single-channel volumes of Gaussian noise, each holding one bright rod (8 voxels long, 2x2 in
section) lying along the depth, height or width axis — the class (3 classes, chance 1/3). The
rod lies inside the central 12^3 block, so every 16^3 crop keeps it whole; mirroring any axis
keeps its orientation. Telling the classes apart needs 3-D structure, which a small 3-D CNN
learns in a few hundred steps, while the voxel histogram alone says nothing.
"""
from __future__ import annotations

import os

import numpy as np

from cnnlab.data import datasets
from cnnlab.datasets import local
from cnnlab.data.volumes import (EXTENSIONS, VolumeError, is_volume_path, read_volume,
                                 volume_shape)

FAMILY = "volumes"
HOLDOUT_EVERY = 5

SYNTHETIC_SHAPE = (20, 20, 20)
SYNTHETIC_CLASSES = ("rod_depth", "rod_height", "rod_width")
SYNTHETIC_SIZES = {"train": 600, "test": 300}
_ROD_LENGTH, _ROD_WIDTH, _ROD_LO, _ROD_HI = 8, 2, 4, 16
_ROD_INTENSITY = 2.5


def _is_volume(path: str) -> bool:
  return is_volume_path(path)   # a .npy / NIfTI file or a DICOM series folder


def _class_files(root: str) -> dict[str, list[str]]:
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  found = {c: sorted(os.path.join(c, f) for f in os.listdir(os.path.join(root, c))
                     if _is_volume(os.path.join(root, c, f))) for c in classes}
  return {c: files for c, files in found.items() if files}


def scan(source_dir: str) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
  """(class names, {split: [(path relative to source_dir, label)]}) of a volume folder."""
  split_dirs = {s: os.path.join(source_dir, s) for s in ("train", "test")}
  if all(os.path.isdir(d) for d in split_dirs.values()):
    per_split = {s: _class_files(d) for s, d in split_dirs.items()}
    names = tuple(sorted(per_split["train"]))
    for c in per_split["test"]:
      if c not in per_split["train"]:
        raise VolumeError(f"{split_dirs['test']}/{c}: class {c!r} has no training volumes")
    splits = {s: [(os.path.join(s, f), names.index(c)) for c in names
                  for f in files.get(c, [])] for s, files in per_split.items()}
  else:
    files = _class_files(source_dir)
    names = tuple(files)
    splits = {"train": [], "test": []}
    for k, c in enumerate(names):
      for i, f in enumerate(files[c], 1):
        splits["test" if i % HOLDOUT_EVERY == 0 else "train"].append((f, k))
  if len(names) < 2:
    raise VolumeError(f"{source_dir}: found {len(names)} class folder(s) with volumes "
                      f"({', '.join(EXTENSIONS)}); need at least 2 (<class>/<file>)")
  return names, splits


def _check_name(name: str) -> str:
  family, _, config = str(name).partition("/")
  if family != FAMILY or not config:
    raise ValueError(f"dataset {name!r} is not a volume folder name: use volumes/<name>")
  return config


def local_spec(name: str, source_dir: str):
  """The LocalSpec that builds ``volumes/<name>`` from ``source_dir`` (shapes checked first)."""
  config = _check_name(name)
  names, splits = scan(source_dir)
  shape = None
  for entries in splits.values():
    for rel, _ in entries:
      got = volume_shape(os.path.join(source_dir, rel))
      if shape is None:
        shape, first = got, rel
      elif got != shape:
        raise VolumeError(f"{os.path.join(source_dir, rel)}: shape {got} differs from "
                          f"{shape} of {first}; all volumes must have one shape")

  def examples(entries):
    return lambda: ({"volume": read_volume(os.path.join(source_dir, rel)), "label": y,
                     "file": rel} for rel, y in entries)

  return local.LocalSpec(
      family=FAMILY, config=config, features=_features(shape, names),
      splits={s: examples(e) for s, e in splits.items()},
      metadata={"shape": list(shape), "class_names": list(names),
                "source_dir": os.path.abspath(source_dir),
                "split_rule": ("folders" if any(r.startswith("train" + os.sep)
                                                for r, _ in splits["train"])
                               else f"every {HOLDOUT_EVERY}th file per class is test")},
      description=f"Labelled volumes from {os.path.abspath(source_dir)}, built by cnnlab")


def _features(shape, names):
  import tensorflow_datasets as tfds
  return {"volume": tfds.features.Tensor(shape=tuple(shape), dtype=np.float32),
          "label": tfds.features.ClassLabel(names=list(names)),
          "file": tfds.features.Text()}


# ---------------------------------------------------------------------------- synthetic task

def synthetic_volume(rng: np.random.Generator, label: int) -> np.ndarray:
  """One 20^3x1 volume of N(0, 1) noise with a rod along axis ``label`` (see module doc)."""
  v = rng.standard_normal(SYNTHETIC_SHAPE).astype(np.float32)
  start = [int(rng.integers(_ROD_LO, _ROD_HI - _ROD_WIDTH + 1)) for _ in range(3)]
  start[label] = int(rng.integers(_ROD_LO, _ROD_HI - _ROD_LENGTH + 1))
  size = [_ROD_WIDTH] * 3
  size[label] = _ROD_LENGTH
  v[tuple(slice(s, s + n) for s, n in zip(start, size))] += _ROD_INTENSITY
  return v[..., None]


def synthetic_examples(split: str, seed: int = 0):
  """The examples of the synthetic split, a pure function of (split, seed); balanced."""
  n = SYNTHETIC_SIZES[split]
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  for i in range(n):
    label = i % len(SYNTHETIC_CLASSES)
    yield {"volume": synthetic_volume(rng, label), "label": label,
           "file": f"{split}/{SYNTHETIC_CLASSES[label]}/{i:04d}"}


def synthetic_spec():
  return local.LocalSpec(
      family=FAMILY, config=datasets.SYNTHETIC_VOLUMES,
      features=_features((*SYNTHETIC_SHAPE, 1), SYNTHETIC_CLASSES),
      splits={s: (lambda s=s: synthetic_examples(s)) for s in SYNTHETIC_SIZES},
      metadata={"shape": [*SYNTHETIC_SHAPE, 1], "class_names": list(SYNTHETIC_CLASSES),
                "generator": "cnnlab.datasets.volumes.synthetic_examples, seed 0"},
      description="Synthetic volumes: the orientation of a bright rod in noise (cnnlab)")
