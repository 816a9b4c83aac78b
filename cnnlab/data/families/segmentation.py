"""Segmentation pairs: images + masks (``segmentation/<name>``, ``isbi2012_em``) and volumes +
label volumes (``segvolumes/<name>``, ``synthetic_phantoms``), held in memory as one array per
example (sizes may differ between examples).

Masks hold class indices; 255 marks a pixel without a label (it counts in no loss or metric).
Preprocess — images: 'unit' (x / 255, default) or 'zscore' (per image and channel); volumes:
'zscore' (default), 'window' (a CT window, ``dataset.window``: a preset name such as
'soft_tissue' or 'level,width' in HU, mapped to [0, 1]; cnnlab/data/windowing.py) or 'raw'.

Training batches: each example augmented with image and mask together (cnnlab/data/spatial.py):
flips along ``flip_axes`` (default: every spatial axis), random 90-degree turns in the first two
spatial axes' plane (``rot90``), zoom (``scale_range``), the U-Net paper's elastic deformation
(``elastic_prob``, ``elastic_grid``, ``elastic_sigma``) and a random ``crop_shape`` window (biased
to foreground with ``crop_foreground_prob``); with ``border_w0`` > 0 the U-Net paper's border
weight map (w0, ``border_sigma``; cnnlab/data/border_weights.py) is computed once per training
mask and travels through the same warp as a ``weight`` per pixel. Each example's augmentation
draws from its own generator, derived from the step's and its row in the global batch, so a
host's rows do not depend on the host count.

Evaluation and prediction take whole images / volumes (``whole_examples``), predicted by tiles
of ``tile_shape`` (default: ``crop_shape``) with ``tile_overlap`` and ``tile_blend``
(cnnlab/training/segmentation.py).
"""
from __future__ import annotations

import numpy as np

from cnnlab.config import DATASET_OPTIONS, fail
from cnnlab.data import border_weights, spatial, windowing
from cnnlab.data.families.base import Family

IGNORE_LABEL = 255
BLENDS = ("constant", "gaussian")
AUGMENT_OPTIONS = frozenset({"crop_shape", "flip_axes", "rot90", "scale_range", "elastic_prob",
                             "elastic_grid", "elastic_sigma", "crop_foreground_prob",
                             "border_w0", "border_sigma"})
TILE_OPTIONS = frozenset({"tile_shape", "tile_overlap", "tile_blend", "tile_batch"})


class Segmentation(Family):
  name = "segmentation"
  task = "segment"
  rank = 2
  preprocess_options = ("unit", "zscore")
  reads = AUGMENT_OPTIONS | TILE_OPTIONS
  feature = "image"

  def stored_shape(self, metadata):
    shape = metadata.get("shape") or [None] * self.rank + [metadata["channels"]]
    return tuple(None if d is None else int(d) for d in shape)

  # ------------------------------------------------------------------------------ options
  def check(self, opts, facts):
    opts = dict(opts)
    opts["crop_shape"] = self._shape(opts, facts, "crop_shape", facts.stored_shape[:-1])
    opts["tile_shape"] = self._shape(opts, facts, "tile_shape", opts["crop_shape"])
    flip = tuple(int(a) for a in opts["flip_axes"])
    if flip == DATASET_OPTIONS["flip_axes"]:
      flip = tuple(range(self.rank))
    if not set(flip) <= set(range(self.rank)):
      fail("dataset.flip_axes", flip, f"must name spatial axes among 0..{self.rank - 1}")
    opts["flip_axes"] = flip
    self._check_numbers(opts)
    return opts

  def _shape(self, opts, facts, key: str, default) -> tuple[int, ...]:
    value = opts[key] if opts[key] is not None else default
    if value is None or None in tuple(value):
      fail(f"dataset.{key}", opts[key], f"{facts.name}'s examples differ in size: give "
           f"{self.rank} sizes")
    value = tuple(int(v) for v in value)
    if len(value) != self.rank or min(value) < 1:
      fail(f"dataset.{key}", value, f"must be {self.rank} positive sizes")
    return value

  def _check_numbers(self, opts) -> None:
    if opts["scale_range"] is not None:
      lo, hi = (float(v) for v in opts["scale_range"])
      if not 0 < lo <= hi:
        fail("dataset.scale_range", opts["scale_range"], "must be (lo, hi) with 0 < lo <= hi")
    for key in ("elastic_prob", "crop_foreground_prob"):
      if not 0.0 <= float(opts[key]) <= 1.0:
        fail(f"dataset.{key}", opts[key], "must be a probability in [0, 1]")
    if float(opts["border_w0"]) < 0 or float(opts["border_sigma"]) <= 0:
      fail("dataset.border_w0", opts["border_w0"], "needs border_w0 >= 0, border_sigma > 0")
    if not 0.0 <= float(opts["tile_overlap"]) < 1.0:
      fail("dataset.tile_overlap", opts["tile_overlap"], "must be a fraction in [0, 1)")
    if opts["tile_blend"] not in BLENDS:
      fail("dataset.tile_blend", opts["tile_blend"], f"one of {', '.join(BLENDS)}")
    if int(opts["tile_batch"]) < 1:
      fail("dataset.tile_batch", opts["tile_batch"], "must be a positive integer")

  def input_shape(self, opts, facts):
    return (*opts["crop_shape"], int(facts.stored_shape[-1]))

  # ------------------------------------------------------------------------------ feeding
  def normalize(self, image, opts) -> np.ndarray:
    """One stored image -> float32 model units (see the module docstring)."""
    x = np.asarray(image, np.float32)
    if opts["preprocess"] == "unit":
      return x / 255.0
    axes = tuple(range(x.ndim - 1))
    mean, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
    return (x - mean) / np.where(std > 1e-8, std, 1.0)

  def load(self, builder, split, opts, facts):
    """(object array of normalised images — with the weight map as a last channel when
    border weights are on and the split is the training one —, object array of masks)."""
    import tensorflow_datasets as tfds
    ds = builder.as_dataset(split=split, shuffle_files=False)
    images, masks = [], []
    for ex in tfds.as_numpy(ds):
      images.append(self.normalize(ex["image"], opts))
      masks.append(np.asarray(ex["mask"], np.uint8))
    if float(opts["border_w0"]) > 0 and split == facts.train_split and masks:
      images = self._with_weights(images, masks, opts, facts)
    return _objects(images), _objects(masks)

  def _with_weights(self, images, masks, opts, facts):
    k = int(facts.num_classes)
    counts = np.zeros(k, np.float64)
    for m in masks:
      counts += np.bincount(m[m != IGNORE_LABEL].ravel(), minlength=k)[:k]
    wc = border_weights.balanced_class_weights(counts)
    out = []
    for image, mask in zip(images, masks):
      w = border_weights.border_weight_map(
          mask, float(opts["border_w0"]), float(opts["border_sigma"]), num_classes=k,
          class_weights=wc, ignore_label=IGNORE_LABEL)
      out.append(np.concatenate([image, w[..., None].astype(np.float32)], axis=-1))
    return out

  def augment_options(self, opts, *, train: bool) -> spatial.SpatialAugment:
    if not (train and opts["augment"]):
      return spatial.SpatialAugment(crop_size=tuple(opts["crop_shape"]),
                                    ignore_label=IGNORE_LABEL)
    return spatial.SpatialAugment(
        flip_axes=tuple(opts["flip_axes"]),
        rot90_planes=((0, 1),) if opts["rot90"] else (),
        scale_range=None if opts["scale_range"] is None else tuple(opts["scale_range"]),
        elastic_prob=float(opts["elastic_prob"]), elastic_grid=int(opts["elastic_grid"]),
        elastic_sigma=float(opts["elastic_sigma"]), crop_size=tuple(opts["crop_shape"]),
        crop_foreground_prob=float(opts["crop_foreground_prob"]), ignore_label=IGNORE_LABEL)

  def transform(self, opts, facts, *, train, mean_image=None):
    """Joint transform (memory.train_batches(joint=True)): a batch dict from the rows."""
    augment = self.augment_options(opts, train=train)
    channels = int(facts.stored_shape[-1])

    def batch(images, masks, rng, host, global_batch):
      seeds = rng.integers(0, 2 ** 63 - 1, size=global_batch)[host]
      rows = [spatial.augment_pair(x, m, np.random.default_rng(int(s)), augment)
              for x, m, s in zip(images, masks, seeds)]
      image = np.stack([x for x, _ in rows]).astype(np.float32)
      out = {"image": image[..., :channels],
             "label": np.stack([m for _, m in rows]).astype(np.int32)}
      if image.shape[-1] > channels:
        out["weight"] = image[..., channels]
      return out
    return batch

  def whole_examples(self, images, masks, process_index: int, process_count: int):
    """(image [*S, C], mask [*S]) of every example this host evaluates: p, p + P, ..."""
    for i in range(process_index, len(images), process_count):
      yield np.asarray(images[i], np.float32), np.asarray(masks[i], np.int64)

  def eval_inputs(self, raw, opts, facts, *, mean_image=None):
    """A user's images / volumes, normalised (whole; tiling does the rest)."""
    channels = int(facts.stored_shape[-1])
    out = []
    for i, x in enumerate(raw):
      x = np.asarray(x)
      x = x[..., None] if x.ndim == self.rank else x
      if x.ndim != self.rank + 1 or x.shape[-1] != channels:
        raise ValueError(f"input {i} has shape {x.shape}; {facts.name} takes "
                         f"{self.rank}-D inputs with {channels} channel(s)")
      out.append(self.normalize(x, opts))
    return out


class SegmentationVolumes(Segmentation):
  name = "segvolume"
  rank = 3
  preprocess_options = ("zscore", "window", "raw")
  reads = Segmentation.reads | {"window"}

  def check(self, opts, facts):
    opts = super().check(opts, facts)
    if opts["preprocess"] == "window":
      try:
        windowing.window_bounds(_window(opts["window"]))
      except ValueError as e:
        fail("dataset.window", opts["window"], str(e).splitlines()[0])
    elif opts["window"] is not None:
      fail("dataset.window", opts["window"], "is read only with preprocess='window'")
    return opts

  def normalize(self, image, opts) -> np.ndarray:
    if opts["preprocess"] == "window":
      return windowing.window(np.asarray(image, np.float32), _window(opts["window"]))
    if opts["preprocess"] == "raw":
      return np.asarray(image, np.float32)
    return super().normalize(image, {**opts, "preprocess": "zscore"})


def _window(value):
  """``dataset.window``: a preset name, or 'level,width' in HU."""
  if isinstance(value, str) and "," in value:
    return tuple(float(v) for v in value.split(","))
  return value


def _objects(arrays) -> np.ndarray:
  out = np.empty(len(arrays), dtype=object)
  for i, a in enumerate(arrays):
    out[i] = a
  return out
