"""One object per dataset family; ``get(name)`` is what the catalogue's ``family`` names.

    family = families.get("mnist")
    opts = family.resolve_options(opts, facts)       # through cnnlab.config.resolve
    shape = family.input_shape(opts, facts)

Families: mnist and cifar (images.py), imagenet (imagenet.py), series (series.py), volume
(volumes.py), segmentation and segvolume (segmentation.py: images / volumes with masks).
base.py holds what they share and documents the contract.
"""
from __future__ import annotations

from cnnlab.data.families.base import Family
from cnnlab.data.families.imagenet import Imagenet
from cnnlab.data.families.images import Cifar, Mnist
from cnnlab.data.families.segmentation import Segmentation, SegmentationVolumes
from cnnlab.data.families.series import Series
from cnnlab.data.families.volumes import Volumes

_FAMILIES: dict[str, Family] = {f.name: f for f in (
    Mnist(), Cifar(), Imagenet(), Series(), Volumes(), Segmentation(), SegmentationVolumes())}


def get(name: str) -> Family:
  if name not in _FAMILIES:
    raise ValueError(f"unknown dataset family {name!r}: one of {', '.join(_FAMILIES)}")
  return _FAMILIES[name]


def names() -> tuple[str, ...]:
  return tuple(_FAMILIES)


__all__ = ["Family", "get", "names"]
