"""ImageNet-style datasets (imagenet2012, imagenette, imagenette_320): JPEGs of any size,
streamed with tf.data (cnnlab/data/streaming.py), decoded and augmented per example.

Preprocess 'inception' (default), 'vgg' or 'alexnet' training crops and the shared centre-crop
evaluation (cnnlab/data/preprocess.py documents each with its paper section). Options read:
image_size (default 224; 227 for 'alexnet', whose conv1 arithmetic needs it), eval_resize,
crop_area_min ('inception'), scale_min / scale_max ('vgg'), pca_lighting ('alexnet'),
shuffle_buffer and num_parallel_calls (the stream).
"""
from __future__ import annotations

import numpy as np

from cnnlab.config import fail
from cnnlab.data import preprocess
from cnnlab.data.families.base import Family


class Imagenet(Family):
  name = "imagenet"
  in_memory = False
  preprocess_options = ("inception", "vgg", "alexnet")
  reads = frozenset({"image_size", "eval_resize", "crop_area_min", "scale_min", "scale_max",
                     "pca_lighting", "shuffle_buffer", "num_parallel_calls"})

  def check(self, opts, facts):
    size = opts["image_size"] or (227 if opts["preprocess"] == "alexnet" else 224)
    if int(size) < 1:
      fail("dataset.image_size", size, "must be a positive integer")
    if not 0 < opts["crop_area_min"] <= 1:
      fail("dataset.crop_area_min", opts["crop_area_min"], "must be in (0, 1]")
    if not 0 < opts["scale_min"] <= opts["scale_max"]:
      fail("dataset.scale_min", opts["scale_min"], f"must be in (0, scale_max="
           f"{opts['scale_max']}]")
    return {**opts, "image_size": int(size)}

  def input_shape(self, opts, facts):
    return (int(opts["image_size"]),) * 2 + (3,)

  def example_fns(self, opts, facts):
    """(train example_fn(encoded, label, seed2), eval example_fn(encoded)) for the stream."""
    info = facts.info
    kw = dict(image_size=opts["image_size"], eval_resize=opts["eval_resize"],
              mean=info.mean, std=info.std)

    def train_fn(encoded, label, seed2):
      if not opts["augment"]:
        return preprocess.imagenet_eval(encoded, **kw), label
      return preprocess.imagenet_train(
          encoded, seed2, preprocess=opts["preprocess"],
          area_range=(opts["crop_area_min"], 1.0),
          scale_range=(opts["scale_min"], opts["scale_max"]),
          pca_lighting=opts["pca_lighting"], **kw), label

    def eval_fn(encoded):
      return preprocess.imagenet_eval(encoded, **kw)

    return train_fn, eval_fn

  def eval_inputs(self, raw, opts, facts, *, mean_image=None):
    import tensorflow as tf
    _, eval_fn = self.example_fns(opts, facts)
    return np.stack([eval_fn(tf.constant(b)).numpy() for b in raw])
