"""The ISBI 2012 EM segmentation data (the U-Net paper's dataset) -> TFDS ``isbi2012_em``.

    prepare.prepare("isbi2012_em", source_dir="../shared/datasets/isbi2012_em")

Serial-section TEM of the Drosophila first-instar larva ventral nerve cord (Cardona et al.
2010), as released for the ISBI 2012 challenge "Segmentation of neuronal structures in EM
stacks" (Arganda-Carreras et al. 2015) and used by Ronneberger, Fischer & Brox 2015 (U-Net,
Table 1). The source folder (its README) holds ``train/image/00.png`` .. ``24.png`` (512 x 512
8-bit grey slices 0-24 of the challenge's training stack, 4 x 4 x 50 nm voxels), their masks
``train/label/*.png`` (0 = membrane, 255 = cell interior), the challenge's 30 test slices
``test/image/00.png`` .. ``29.png`` (labels never published) and ``SHA256SUMS``.

Checksums, like MNIST's: the sha256 of SHA256SUMS is pinned here (``SUMS_SHA256``) and every
file it lists is verified against it before anything is built.

Splits (named in the metadata as ``split_rule``):
- ``train``: slices 00-19 (20 slices);
- ``validation``: slices 20-24 (5 slices), contiguous at the end of the stack, so only one
  pair of neighbouring sections (19 / 20, 50 nm apart) straddles the split;
- ``test``: the 30 challenge test slices, unlabelled (masks all IGNORE_INDEX; for predict /
  visualize only). The paper's pixel error 0.0611 was measured on these slices' hidden labels.
Classes: 0 = membrane (stored 0), 1 = cell_interior (stored 255). Features as every
``segmentation/<name>`` dataset (seg_folders.py): image uint8 [512, 512, 1], mask uint8
[512, 512], file.
"""
from __future__ import annotations

import hashlib
import os

from cnnlab.datasets import seg_folders, seg_pairs

NAME = "isbi2012_em"
SUMS_FILE = "SHA256SUMS"
SUMS_SHA256 = "941b71cf28c0a0277d785dc19704bc3683cd19e02dca0337c5c658c161297459"
TRAIN_SLICES = range(0, 20)
VALIDATION_SLICES = range(20, 25)
TEST_SLICES = range(0, 30)
LABELS = seg_pairs.LabelMap(values=(0, 255), class_names=("membrane", "cell_interior"),
                            source="ISBI 2012: 0 = membrane, 255 = cell interior")
SPLIT_RULE = ("train: train/image slices 00-19; validation: slices 20-24; test: the 30 "
              "unlabelled challenge test slices")
PAPER = {"pixel_error": 0.0611, "source": "Ronneberger et al. 2015, Table 1 (challenge's "
         "hidden test labels)"}


class ChecksumError(ValueError):
  """A missing or altered ISBI file; one line naming it."""


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def verify(source_dir: str, sums_sha256: str | None = SUMS_SHA256) -> None:
  """Checks SHA256SUMS against ``sums_sha256`` (None: trust it) and every file against it."""
  sums = os.path.join(source_dir, SUMS_FILE)
  if not os.path.isfile(sums):
    raise ChecksumError(f"{source_dir} has no {SUMS_FILE}; not the isbi2012_em folder")
  if sums_sha256 is not None and _sha256(sums) != sums_sha256.lower():
    raise ChecksumError(f"{sums}: sha256 {_sha256(sums)} does not match the expected "
                        f"{sums_sha256} (different or altered release)")
  with open(sums) as f:
    for line in f:
      if not line.strip():
        continue
      want, rel = line.split(maxsplit=1)
      path = os.path.join(source_dir, rel.strip().lstrip("*"))
      if not os.path.isfile(path):
        raise ChecksumError(f"{path}: listed in {SUMS_FILE} but missing")
      if _sha256(path) != want.lower():
        raise ChecksumError(f"{path}: sha256 does not match {SUMS_FILE} (corrupt file)")


def _pair(split: str, folder: str, k: int, labelled: bool) -> seg_pairs.Pair:
  stem = f"{k:02d}"
  label = os.path.join(folder, "label", f"{stem}.png") if labelled else None
  return seg_pairs.Pair(split, stem, os.path.join(folder, "image", f"{stem}.png"), label)


def pairs() -> dict[str, list[seg_pairs.Pair]]:
  """The fixed split of the module doc."""
  return {"train": [_pair("train", "train", k, True) for k in TRAIN_SLICES],
          "validation": [_pair("validation", "train", k, True) for k in VALIDATION_SLICES],
          "test": [_pair("test", "test", k, False) for k in TEST_SLICES]}


def local_spec(source_dir: str, *, checksums: dict | None = None,
               verify_checksums: bool = True):
  """The LocalSpec of ``isbi2012_em`` (files verified first). ``checksums={'SHA256SUMS':
  sha256}`` replaces the pinned hash (for look-alike files a test writes)."""
  if verify_checksums:
    verify(source_dir, (checksums or {}).get(SUMS_FILE, SUMS_SHA256))
  return seg_folders.spec_from_pairs(
      NAME, source_dir, pairs(), label_map=LABELS,
      metadata={"split_rule": SPLIT_RULE, "voxel_size_nm": [50, 4, 4], "paper": PAPER,
                "checksums": "verified against SHA256SUMS" if verify_checksums
                else "not verified"},
      description="ISBI 2012 EM segmentation (Drosophila VNC ssTEM), prepared by cnnlab")
