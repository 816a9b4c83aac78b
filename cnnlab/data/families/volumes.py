"""Labelled 3-D volumes (``volumes/<name>``, ``synthetic_volumes``), held in memory as float32
[N, D, H, W, C].

Preprocess 'zscore' (default: intensity z-scored per volume and channel when loaded) or 'raw'.
Training batches are randomly cropped to ``crop_shape`` (default: the stored shape, i.e. no
crop) and flipped along each axis in ``flip_axes`` (default (0, 1, 2)) with probability 1/2;
evaluation centre-crops. The random draws are made for the whole global batch from the step's
generator and sliced per host (memory.py), so a host's rows do not depend on the host count.
"""
from __future__ import annotations

import numpy as np

from cnnlab.config import fail
from cnnlab.data import memory, preprocess
from cnnlab.data.families.base import Family, apply_eval, identity, stack

PREPROCESS = ("zscore", "raw")


class Volumes(Family):
  name = "volume"
  preprocess_options = PREPROCESS
  reads = frozenset({"crop_shape", "flip_axes"})
  feature = "volume"

  def check(self, opts, facts):
    stored = tuple(facts.stored_shape[:3])
    crop = opts["crop_shape"]
    crop = stored if crop is None else tuple(int(c) for c in crop)
    if len(crop) != 3 or not all(0 < c <= s for c, s in zip(crop, stored)):
      fail("dataset.crop_shape", crop, f"must be 3 positive sizes no larger than the stored "
           f"volume {stored}")
    axes = tuple(int(a) for a in opts["flip_axes"])
    if not set(axes) <= {0, 1, 2}:
      fail("dataset.flip_axes", axes, "must name spatial axes among 0, 1, 2 (D, H, W)")
    return {**opts, "crop_shape": crop, "flip_axes": axes}

  def input_shape(self, opts, facts):
    return (*opts["crop_shape"], int(facts.stored_shape[-1]))

  def load(self, builder, split, opts, facts):
    raw, labels = memory.load_split(builder, split, feature=self.feature)
    return preprocess.volume_intensity(raw, opts["preprocess"]), labels

  def transform(self, opts, facts, *, train, mean_image=None):
    stored, crop = tuple(facts.stored_shape[:3]), tuple(opts["crop_shape"])
    center = preprocess.volume_center(stored, crop)
    if not (train and opts["augment"]):
      if crop == stored:
        return identity
      return lambda x, rng, sl, g: preprocess.volume_crop_flip(
          x, np.broadcast_to(center, (len(x), 3)), np.zeros((len(x), 3), bool), crop)

    def augment(x, rng, sl, g):
      corners, flips = preprocess.volume_crop_flip_params(rng, g, stored, crop,
                                                          opts["flip_axes"])
      return preprocess.volume_crop_flip(x, corners[sl], flips[sl], crop)
    return augment

  def eval_inputs(self, raw, opts, facts, *, mean_image=None):
    raw = [x if np.ndim(x) == 4 else np.asarray(x)[..., None] for x in raw]
    x = preprocess.volume_intensity(stack(raw, facts.stored_shape, facts.name),
                                    opts["preprocess"])
    return apply_eval(self.transform(opts, facts, train=False), x)
