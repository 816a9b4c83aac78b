"""What ``resolve`` is told about the world, so that it need not look: the dataset's facts and
the devices'.

``DatasetFacts`` come from ONE metadata read (``cnnlab.data.describe``): class count and names,
the stored example shape, and the size of every split the config may name — slices such as
``train[:1000]`` included, computed from the split sizes, never by decoding. They also carry the
dataset's family object (``cnnlab.data.families``), which owns the family's options, their
checks and the input shape; the config layer calls it without importing it.

``Devices`` come from the entry point's process set-up (``cnnlab.platform.describe``): platform,
process and device counts, and whether the oneDNN convolution extension can be used here
(``onednn`` is "" when it can, else one line saying why not), which decides ``kernels=auto``.
Tests and notebooks build either directly.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
  name: str
  family: Any                          # the family object: resolve_options(), input_shape()
  num_classes: int
  class_names: tuple[str, ...] | None
  stored_shape: tuple | None           # one stored example; None for a variable dimension
  split_sizes: Mapping[str, int]       # split (or slice) -> examples, all hosts
  train_split: str                     # the catalogue's defaults
  eval_split: str
  task: str = "classify"               # classify | segment
  info: Any = None                     # the data layer's catalogue entry (cnnlab.data.datasets)

  def split_size(self, split: str) -> int:
    if split not in self.split_sizes:
      raise KeyError(f"no size known for split {split!r} of {self.name}; described: "
                     f"{', '.join(self.split_sizes)}")
    return int(self.split_sizes[split])


@dataclasses.dataclass(frozen=True)
class Devices:
  platform: str = "cpu"
  process_count: int = 1
  device_count: int = 1
  onednn: str = "not probed"           # "" when the oneDNN extension is usable, else why not
