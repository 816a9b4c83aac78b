"""Where prepared datasets live, and what their metadata says — read without decoding.

Two kinds of prepared datasets sit in a TFDS data dir: those TFDS's own catalogue builders made
(``<data_dir>/mnist/3.0.1/...``) and those cnnlab built from local files with its own builder
(``<data_dir>/<family>/<config>/1.0.0/...``, cnnlab.datasets.local). Both carry TFDS's
``dataset_info.json``; this module finds them, opens them read-only and reads split sizes and
class names from that metadata. Nothing here downloads or builds.

The data dir: an explicit one wins; else TFDS's default (``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``, which TFDS itself reads).
"""
from __future__ import annotations

import json
import os

LOCAL_VERSION = "1.0.0"


def resolve_data_dir(data_dir: str | None) -> str:
  if data_dir:
    return os.path.expanduser(str(data_dir))
  from tensorflow_datasets.core import constants
  return os.path.expanduser(constants.get_default_data_dir())


def local_dir(family: str, config: str, data_dir: str) -> str:
  """The directory of a cnnlab-built dataset ``<family>/<config>``."""
  return os.path.join(data_dir, family, config, LOCAL_VERSION)


def local_is_prepared(family: str, config: str, data_dir: str) -> bool:
  return os.path.isfile(os.path.join(local_dir(family, config, data_dir), "dataset_info.json"))


def read_local(family: str, config: str, data_dir: str) -> dict:
  """{'splits': {name: n}, 'class_names': [...], 'metadata': {...}} of a cnnlab-built dataset,
  from dataset_info.json, label.labels.txt and metadata.json (no TensorFlow imported)."""
  root = local_dir(family, config, data_dir)
  with open(os.path.join(root, "dataset_info.json")) as f:
    info = json.load(f)
  splits = {s["name"]: int(sum(int(x) for x in s.get("shardLengths", [])))
            for s in info.get("splits", [])}
  return {"splits": splits, "class_names": _lines(os.path.join(root, "label.labels.txt")),
          "metadata": _json(os.path.join(root, "metadata.json"))}


def _lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def _json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def open_local(family: str, config: str, data_dir: str):
  """A cnnlab-built dataset as a read-only TFDS builder (``as_dataset``, ``info``)."""
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(local_dir(family, config, data_dir))


def catalogue_builder(tfds_name: str, data_dir: str):
  """TFDS's builder for a catalogue dataset in ``data_dir`` (metadata only until read)."""
  import tensorflow_datasets as tfds
  return tfds.builder(tfds_name, data_dir=data_dir)


def builder_split_sizes(builder) -> dict[str, int]:
  """Split name -> examples, from the builder's metadata."""
  return {name: int(split.num_examples) for name, split in builder.info.splits.items()}


def builder_class_names(builder, feature: str = "label") -> list[str]:
  """The ClassLabel names of ``feature`` in the builder's metadata ([] when it has none)."""
  features = builder.info.features
  try:
    names = features[feature].names
  except (KeyError, AttributeError):
    return []
  return list(names)


def slice_size(split: str, sizes: dict[str, int]) -> int | None:
  """Examples in ``split`` — a split name or TFDS slicing such as ``train[:1000]``,
  ``train[10%:]`` or ``train[:50%]+test`` — computed from the full splits' sizes with TFDS's own
  slicing rules; None when it names an unknown split or does not parse."""
  if split in sizes:
    return int(sizes[split])
  import tensorflow_datasets as tfds
  try:
    instruction = tfds.core.ReadInstruction.from_spec(split)
    parts = instruction.to_absolute({k: _SplitLength(v) for k, v in sizes.items()})
  except (ValueError, KeyError, AssertionError, AttributeError):
    return None
  total = 0
  for part in parts:
    n = sizes[part.splitname]
    lo = 0 if part.from_ is None else part.from_
    hi = n if part.to is None else part.to
    total += max(0, hi - lo)
  return total


class _SplitLength:
  """The part of TFDS's SplitInfo that its slicing arithmetic reads."""

  def __init__(self, n: int):
    self.num_examples = int(n)
    self.num_shards = 1
    self.shard_lengths = [int(n)]
