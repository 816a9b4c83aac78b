"""The segmentation datasets by name: where each is stored and which builder makes it.

| name                    | TFDS dir (under data_dir, + /1.0.0) | built by       | from        |
|-------------------------|-------------------------------------|----------------|-------------|
| ``segmentation/<name>`` | segmentation/<name>                 | seg_folders.py | a folder    |
| ``segvolumes/<name>``   | segvolumes/<name>                   | seg_volumes.py | a folder    |
| ``isbi2012_em``         | segmentation/isbi2012_em            | isbi2012.py    | ISBI files  |
| ``synthetic_phantoms``  | segvolumes/synthetic_phantoms       | phantoms.py    | nothing     |

The names and their TFDS dirs are the catalogue's (cnnlab.data.datasets.local_key). 2-D datasets
(family ``segmentation``) share one feature set, and so do 3-D ones (family ``segvolume``);
their metadata.json carries the class names and the label mapping
(seg_pairs.LabelMap.metadata), ``shape`` (None where sizes vary), ``unlabelled_splits`` and
per-class pixel / voxel counts per split. prepare.prepare dispatches these names here.
"""
from __future__ import annotations

from cnnlab.data import datasets
from cnnlab.datasets import isbi2012, phantoms, seg_folders, seg_volumes


def local_spec(name: str, source_dir: str | None, *, checksums: dict | None = None,
               verify_checksums: bool = True):
  """The LocalSpec that builds ``name`` (ValueError subclasses for bad input, one line)."""
  family, config = datasets.local_key(name)
  if name == phantoms.NAME:
    return phantoms.local_spec()
  if name == isbi2012.NAME:
    return isbi2012.local_spec(source_dir, checksums=checksums,
                               verify_checksums=verify_checksums)
  if family == seg_folders.FAMILY:
    return seg_folders.local_spec(config, source_dir)
  return seg_volumes.local_spec(config, source_dir)
