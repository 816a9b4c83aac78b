"""Segmentation pairs: images matched with their masks by name, and what mask values mean.

    <root>/<split>/image/<stem>.<ext>     an image (2-D file, or a volume / DICOM series folder)
    <root>/<split>/label/<stem>.<ext>     its mask: one stored value per pixel / voxel
    <root>/labels.json                    optional: the label mapping (below)

Every sub-folder of ``<root>`` with an ``image/`` folder is a split, named after the folder
(train, validation, test, ...). A split without a ``label/`` folder is unlabelled (inference
only; its masks are all IGNORE_INDEX). In a labelled split every image needs a mask with the
same stem and every mask an image; either one alone is an error naming the file.

Label mapping: the values a mask stores (0 and 255 for ISBI's membrane / cell interior) map to
class indices 0..K-1 in the order of ``values``: value ``values[k]`` is class k. ``labels.json``
declares it — ``{"values": [0, 255], "class_names": ["membrane", "cell_interior"],
"ignore_values": [128]}`` or ``{"num_classes": 3}`` (masks already hold 0..2) — and without
it the mapping is the sorted distinct values found in the ``train`` masks (class names
``value_<v>``). Values listed in ``ignore_values`` become IGNORE_INDEX (255): pixels that no
loss or metric counts. A mask value outside the mapping is an error naming the file, the
value and the values allowed. Class indices are stored as uint8, so K <= 255.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterable, Mapping

import numpy as np

IGNORE_INDEX = 255
LABELS_FILE = "labels.json"
TRAIN = "train"


class SegmentationDataError(ValueError):
  """A segmentation folder that cannot be used; one line naming the file and the reason."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One example: paths relative to the dataset root (``label`` None: unlabelled split)."""
  split: str
  stem: str
  image: str
  label: str | None


def _entries(folder: str, accept: Callable[[str], bool], stem: Callable[[str], str],
             root: str) -> dict[str, str]:
  """{stem: path relative to root} of the accepted entries of ``folder``; two entries with one
  stem are an error."""
  found: dict[str, str] = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name.startswith(".") or not accept(path):
      continue
    key = stem(path)
    if key in found:
      raise SegmentationDataError(f"{path}: {os.path.join(root, found[key])} has the same "
                                  f"name {key!r}; each image and mask needs a unique stem")
    found[key] = os.path.relpath(path, root)
  return found


def split_names(root: str) -> list[str]:
  """The split folders of ``root`` (those with an image/ folder), sorted."""
  if not os.path.isdir(root):
    raise SegmentationDataError(f"{root} is not a directory")
  splits = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "image")))
  if not splits:
    raise SegmentationDataError(f"{root}: no <split>/image/ folders; expected "
                                "<root>/<split>/image/* with masks in <root>/<split>/label/*")
  return splits


def scan(root: str, *, accept_image: Callable[[str], bool], accept_label: Callable[[str], bool],
         stem: Callable[[str], str]) -> dict[str, list[Pair]]:
  """{split: [Pair]} of ``root`` (see the module doc), pairs sorted by stem."""
  out = {}
  for split in split_names(root):
    images = _entries(os.path.join(root, split, "image"), accept_image, stem, root)
    label_dir = os.path.join(root, split, "label")
    if not images:
      raise SegmentationDataError(f"{os.path.join(root, split, 'image')}: no images")
    if not os.path.isdir(label_dir):
      out[split] = [Pair(split, k, images[k], None) for k in sorted(images)]
      continue
    labels = _entries(label_dir, accept_label, stem, root)
    alone = sorted(set(images) - set(labels))
    if alone:
      raise SegmentationDataError(f"{os.path.join(root, images[alone[0]])}: image without a "
                                  f"mask (no {split}/label/{alone[0]}.*)")
    alone = sorted(set(labels) - set(images))
    if alone:
      raise SegmentationDataError(f"{os.path.join(root, labels[alone[0]])}: mask without an "
                                  f"image (no {split}/image/{alone[0]}.*)")
    out[split] = [Pair(split, k, images[k], labels[k]) for k in sorted(images)]
  return out


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Stored mask value -> class index (see the module doc); ``source`` says where it came from."""
  values: tuple[int, ...]
  class_names: tuple[str, ...]
  ignore_values: tuple[int, ...] = ()
  source: str = "declared"

  def __post_init__(self):
    if len(self.values) < 2 or len(self.values) > IGNORE_INDEX:
      raise SegmentationDataError(f"label mapping with {len(self.values)} class(es) "
                                  f"{list(self.values)}: need 2..{IGNORE_INDEX} classes")
    if len(self.class_names) != len(self.values):
      raise SegmentationDataError(f"{len(self.class_names)} class names for "
                                  f"{len(self.values)} label values {list(self.values)}")
    both = sorted(set(self.values) & set(self.ignore_values))
    if len(set(self.values)) != len(self.values) or both:
      raise SegmentationDataError(f"label values {list(self.values)} (ignore "
                                  f"{list(self.ignore_values)}): each value once")

  @property
  def num_classes(self) -> int:
    return len(self.values)

  def allowed(self) -> list[int]:
    return sorted(self.values + self.ignore_values)

  def apply(self, stored: np.ndarray, where: str) -> np.ndarray:
    """Class indices (uint8, IGNORE_INDEX for ignored values) of a mask's stored values."""
    keys = np.asarray(self.values + self.ignore_values, np.int64)
    targets = np.array([*range(len(self.values))] + [IGNORE_INDEX] * len(self.ignore_values),
                       np.uint8)
    order = np.argsort(keys)
    flat = stored.astype(np.int64, copy=False)
    pos = np.clip(np.searchsorted(keys[order], flat), 0, len(keys) - 1)
    bad = keys[order][pos] != flat
    if bad.any():
      found = sorted(np.unique(flat[bad]).tolist())
      raise SegmentationDataError(f"{where}: label value(s) {found[:5]} outside the label "
                                  f"mapping (allowed: {self.allowed()}, {self.source})")
    return targets[order][pos]

  def metadata(self) -> dict:
    return {"class_names": list(self.class_names), "num_classes": self.num_classes,
            "label_values": list(self.values), "ignore_values": list(self.ignore_values),
            "ignore_index": IGNORE_INDEX, "label_mapping_source": self.source}


def integer_values(stored: np.ndarray, where: str) -> np.ndarray:
  """A mask's stored values as int64; non-integral values (a float NIfTI with 0.5) are an
  error naming the file."""
  if np.issubdtype(stored.dtype, np.integer) or stored.dtype == bool:
    return stored.astype(np.int64)
  rounded = np.rint(stored)
  if not np.all(np.abs(stored - rounded) <= 1e-3):
    raise SegmentationDataError(f"{where}: mask values are not integers (e.g. "
                                f"{stored[np.abs(stored - rounded) > 1e-3].flat[0]:g})")
  return rounded.astype(np.int64)


def declared_map(root: str) -> LabelMap | None:
  """The mapping of ``<root>/labels.json``, or None when there is none."""
  path = os.path.join(root, LABELS_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      spec = json.load(f)
    if "values" in spec:
      values = tuple(int(v) for v in spec["values"])
    else:
      values = tuple(range(int(spec["num_classes"])))
    names = tuple(str(n) for n in spec.get("class_names", [f"class_{k}" for k in
                                                           range(len(values))]))
    ignore = tuple(int(v) for v in spec.get("ignore_values", ()))
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise SegmentationDataError(f"{path}: not a label mapping ({type(e).__name__}: {e}); "
                                'expected {"values": [...], "class_names": [...]} or '
                                '{"num_classes": K}') from None
  return LabelMap(values, names, ignore, source=LABELS_FILE)


def found_map(values_in_train: Iterable[int], root: str) -> LabelMap:
  """The default mapping: the sorted distinct values of the training masks."""
  values = tuple(sorted(set(int(v) for v in values_in_train)))
  if len(values) < 2:
    raise SegmentationDataError(f"{root}: the {TRAIN} masks hold {len(values)} distinct "
                                f"value(s) {list(values)}; need at least 2, or declare the "
                                f"classes in {LABELS_FILE}")
  return LabelMap(values, tuple(f"value_{v}" for v in values),
                  source=f"distinct values of the {TRAIN} masks")


def resolve_map(root: str, declared: LabelMap | None,
                values_per_file: Mapping[Pair, Iterable[int]]) -> LabelMap:
  """``declared`` (else labels.json, else the train masks' distinct values), checked against
  the values found in every mask: a value outside it is an error naming the mask file."""
  mapping = declared or declared_map(root)
  if mapping is None:
    train = [v for pair, vals in values_per_file.items() if pair.split == TRAIN for v in vals]
    if not train:
      raise SegmentationDataError(f"{root}: no labelled {TRAIN}/ split to take the label "
                                  f"values from; declare them in {LABELS_FILE}")
    mapping = found_map(train, root)
  allowed = set(mapping.allowed())
  for pair, vals in values_per_file.items():
    outside = sorted(set(int(v) for v in vals) - allowed)
    if outside:
      raise SegmentationDataError(f"{os.path.join(root, pair.label)}: label value(s) "
                                  f"{outside[:5]} outside the label mapping (allowed: "
                                  f"{sorted(allowed)}, {mapping.source})")
  return mapping


def class_counts(counts: Mapping[Pair, Mapping[int, int]],
                 mapping: LabelMap) -> dict[str, list[int]]:
  """{split: pixels / voxels per class} from {pair: {stored value: count}} (ignored values
  not counted)."""
  out: dict[str, list[int]] = {}
  for pair, per_value in counts.items():
    row = out.setdefault(pair.split, [0] * mapping.num_classes)
    for v, n in per_value.items():
      if v in mapping.values:
        row[mapping.values.index(v)] += int(n)
  return out
