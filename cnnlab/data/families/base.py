"""What every dataset family object does, and the parts they share.

A family (MNIST-like digits, CIFAR-like small images, ImageNet-style JPEGs, series, volumes,
segmentation pairs) owns everything that differs between kinds of data:

- its options: which dataset options it reads, their checks and family-decided values
  (``resolve_options``, called by ``cnnlab.config.resolve`` through the dataset's facts), and
  the shape of one input the pipeline yields (``input_shape``);
- feeding: how a split is loaded into memory (``load``) or streamed (``streaming``), the
  per-batch transform for training and evaluation (``transform``), and how a user's own raw
  examples become model inputs exactly as evaluation prepares them (``eval_inputs``).

Options every family reads: data_dir, preprocess, train_split, eval_split, augment, prefetch,
download. An option outside a family's ``reads`` that a config changes from its default is
refused (a setting either takes effect or is rejected with a reason).
"""
from __future__ import annotations

import numpy as np

from cnnlab.config import DATASET_OPTIONS, fail
from cnnlab.data import memory

COMMON = frozenset({"data_dir", "preprocess", "train_split", "eval_split", "augment",
                    "prefetch", "download"})


class Family:
  name = ""
  task = "classify"                         # classify | segment
  in_memory = True                          # decoded once into host memory (memory.py)
  preprocess_options: tuple[str, ...] = ()  # the first is the default
  reads: frozenset = frozenset()            # options beyond COMMON that this family uses
  feature = "image"                         # the TFDS feature holding the input

  def resolve_options(self, opts: dict, facts) -> dict:
    """Every option concrete and checked (ConfigError naming the key otherwise)."""
    opts = dict(opts)
    for key, value in opts.items():
      if key not in COMMON and key not in self.reads and value != DATASET_OPTIONS[key]:
        fail(f"dataset.{key}", value, f"{facts.name} ({self.name} data) does not use it; its "
             f"options are {', '.join(sorted(COMMON | self.reads))}")
    pre = opts["preprocess"] or self.preprocess_options[0]
    if pre not in self.preprocess_options:
      fail("dataset.preprocess", pre, f"{facts.name} allows "
           f"{', '.join(self.preprocess_options)}")
    opts["preprocess"] = pre
    return self.check(opts, facts)

  def check(self, opts: dict, facts) -> dict:
    """The family's own option checks and decided values (override)."""
    return opts

  def input_shape(self, opts: dict, facts) -> tuple:
    raise NotImplementedError

  def stored_shape(self, metadata: dict) -> tuple:
    """A local dataset's stored example shape, from its metadata.json."""
    return tuple(int(d) for d in metadata["shape"])

  def needs_mean_image(self, opts: dict) -> bool:
    """Whether ``transform`` needs the training split's per-pixel mean (CIFAR's option)."""
    return False

  # ----------------------------------------------------------------------------- feeding
  def load(self, builder, split: str, opts: dict, facts):
    """(inputs, int32 labels) of ``split`` held in memory, in the stored order."""
    return memory.load_split(builder, split, feature=self.feature)

  def transform(self, opts: dict, facts, *, train: bool, mean_image=None):
    """The in-memory back end's per-batch transform (memory.Transform)."""
    raise NotImplementedError

  def eval_inputs(self, raw, opts: dict, facts, *, mean_image=None) -> np.ndarray:
    """A user's raw examples -> the float32 batch evaluation would make of them."""
    raise NotImplementedError


def identity(x, rng, host, global_batch):
  return x


def stack(raw, want, what: str) -> np.ndarray:
  """The raw examples as one array, each of shape ``want`` (ValueError naming the first that
  is not)."""
  arrays = [np.asarray(x) for x in raw]
  for i, x in enumerate(arrays):
    if x.shape != tuple(want):
      raise ValueError(f"input {i} has shape {x.shape}; {what} takes {tuple(want)}")
  return np.stack(arrays) if arrays else np.zeros((0, *want), np.float32)


def apply_eval(transform, x: np.ndarray) -> np.ndarray:
  return transform(x, None, slice(0, len(x)), len(x))
