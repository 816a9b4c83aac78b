"""Small image datasets held decoded in memory: MNIST-like digits and CIFAR-like photos.

MNIST family (mnist, fashion_mnist; 28x28x1 uint8): preprocess 'standard' ((x/255 - mean) /
std at 28x28) or 'lenet1998' (LeNet-5's 32x32 input, cnnlab/data/preprocess.py); no
augmentation. ``image_size`` is fixed by the preprocess (28, or 32 for 'lenet1998').

CIFAR family (cifar10, cifar100; 32x32x3): training batches get the pad-4 random crop and flip
(He et al. 2016, §4.2), then 'standard' per-channel normalisation or 'per_pixel_mean' (the
training split's mean image subtracted, which the feed computes and hands to ``transform``).
``image_size`` is fixed at 32.
"""
from __future__ import annotations

import numpy as np

from cnnlab.config import fail
from cnnlab.data import preprocess
from cnnlab.data.families.base import Family, apply_eval, stack


class _SmallImages(Family):
  reads = frozenset({"image_size"})

  def fixed_size(self, preprocess_name: str) -> int:
    raise NotImplementedError

  def check(self, opts, facts):
    fixed = self.fixed_size(opts["preprocess"])
    if opts["image_size"] not in (None, fixed):
      fail("dataset.image_size", opts["image_size"], f"{facts.name} with preprocess "
           f"{opts['preprocess']!r} gives {fixed}x{fixed} inputs")
    return {**opts, "image_size": fixed}

  def input_shape(self, opts, facts):
    return (int(opts["image_size"]),) * 2 + (int(facts.stored_shape[-1]),)

  def eval_inputs(self, raw, opts, facts, *, mean_image=None):
    x = stack(raw, facts.stored_shape, facts.name).astype(np.uint8)
    return apply_eval(self.transform(opts, facts, train=False, mean_image=mean_image), x)


class Mnist(_SmallImages):
  name = "mnist"
  preprocess_options = ("standard", "lenet1998")

  def fixed_size(self, preprocess_name):
    return 32 if preprocess_name == "lenet1998" else 28

  def transform(self, opts, facts, *, train, mean_image=None):
    if opts["preprocess"] == "lenet1998":
      return lambda x, rng, sl, g: preprocess.mnist_lenet1998(x)
    mean, std = facts.info.mean, facts.info.std
    return lambda x, rng, sl, g: preprocess.mnist_standard(x, mean, std)


class Cifar(_SmallImages):
  name = "cifar"
  preprocess_options = ("standard", "per_pixel_mean")

  def fixed_size(self, preprocess_name):
    return 32

  def needs_mean_image(self, opts) -> bool:
    return opts["preprocess"] == "per_pixel_mean"

  def transform(self, opts, facts, *, train, mean_image=None):
    if self.needs_mean_image(opts):
      if mean_image is None:
        raise ValueError("preprocess 'per_pixel_mean' needs the training split's mean image")
      normalize = lambda x: preprocess.subtract_pixel_mean(x, mean_image)  # noqa: E731
    else:
      mean, std = facts.info.mean, facts.info.std
      normalize = lambda x: preprocess.normalize_channels(x, mean, std)  # noqa: E731
    if not (train and opts["augment"]):
      return lambda x, rng, sl, g: normalize(x)

    def augment(x, rng, sl, g):
      dy, dx, flip = preprocess.cifar_crop_flip_params(rng, g)
      return normalize(preprocess.cifar_crop_flip(x, dy[sl], dx[sl], flip[sl]))
    return augment
