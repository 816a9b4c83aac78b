"""Per-family inputs of the in-memory back end: the arrays a split becomes, the per-batch
transform, and the shape of what the pipeline yields — for images (MNIST, CIFAR), series and
volumes alike, so pipeline.py need not know the families.

    arrays = load_arrays(info, builder, split, opts)       # (inputs, int32 labels)
    fn = transform(info, opts, train=True, builder=b)      # memory.Transform
    shape = input_shape(info, opts)                        # (H, W, C) | (L, C) | (D, H, W, C)

``opts`` are the pipeline's resolved dataset options (pipeline.DEFAULTS plus the keys below).
Series (``ucr/<Name>``): the split is held as float32 [N, L, C] with L = ``series_length`` or
the dataset's longest series (unequal lengths resampled linearly; see ucr.py), z-normalised per
series and channel with preprocess 'znorm', only when univariate with 'znorm_univariate'
(the default, the published protocol), not at all with 'raw'; no
augmentation (the published protocol uses none). Volumes (``volumes/<name>``,
``synthetic_volumes``): float32 [N, D, H, W, C], intensity z-scored per volume with 'zscore'
(default; 'raw' keeps them) when loaded; training batches are randomly cropped to
``crop_shape`` (default: the stored shape, i.e. no crop) and flipped along each axis in
``flip_axes`` (default (0, 1, 2)) with probability 1/2; eval batches are centre-cropped. The
random draws are made for the whole global batch from the step's generator and sliced per host,
so a host's rows do not depend on the host count (memory.py).
"""
from __future__ import annotations

import numpy as np

from cnnlab.data import datasets, memory, preprocess

# Options of the new families (None: decided by the dataset), beside pipeline.DEFAULTS.
DEFAULTS = dict(series_length=None, crop_shape=None, flip_axes=(0, 1, 2))


def _opt(opts, key):
  value = opts.get(key, None)
  return DEFAULTS[key] if value is None else value


def _preprocess(info, opts) -> str:
  """The preprocess option; unset means the catalogue's default for the family."""
  return datasets.check_preprocess(info, opts.get("preprocess"))


def _znorm(info, opts) -> bool:
  """Whether series are z-normalised (see datasets.SERIES_PREPROCESS)."""
  mode = _preprocess(info, opts)
  return mode == "znorm" or (mode == "znorm_univariate"
                             and int(described(info, opts).input_shape[-1]) == 1)


def described(info, opts) -> datasets.DatasetInfo:
  """``info`` with its prepared metadata (local datasets; others are returned as they are)."""
  if info.local and not info.metadata:
    return datasets.describe(info.name, opts.get("data_dir", None))
  return info


def series_length(info, opts) -> int:
  info = described(info, opts)
  length = _opt(opts, "series_length")
  if length is None:
    return int(info.input_shape[0])
  if int(length) < 1:
    raise ValueError(f"series_length={length!r} must be a positive integer (or None for the "
                     f"dataset's longest series, {info.input_shape[0]})")
  return int(length)


def crop_shape(info, opts) -> tuple[int, int, int]:
  info = described(info, opts)
  stored = tuple(info.input_shape[:3])
  crop = _opt(opts, "crop_shape")
  if crop is None:
    return stored
  crop = tuple(int(c) for c in crop)
  if len(crop) != 3 or not all(0 < c <= s for c, s in zip(crop, stored)):
    raise ValueError(f"crop_shape={crop!r} must be 3 positive sizes no larger than the "
                     f"stored volume {stored}")
  return crop


def flip_axes(opts) -> tuple[int, ...]:
  axes = tuple(int(a) for a in _opt(opts, "flip_axes"))
  if not set(axes) <= {0, 1, 2}:
    raise ValueError(f"flip_axes={axes!r} must name spatial axes among 0, 1, 2 (D, H, W)")
  return axes


def input_shape(info, opts) -> tuple:
  """The shape of one input the pipeline yields for these options."""
  if info.family == "series":
    return (series_length(info, opts), int(described(info, opts).input_shape[-1]))
  if info.family == "volume":
    return (*crop_shape(info, opts), int(described(info, opts).input_shape[-1]))
  size = int(opts["image_size"])
  return (size, size, info.channels)


def load_arrays(info, builder, split: str, opts, *, cache: bool = True):
  """(inputs, int32 labels) of ``split`` held in memory, in the stored order."""
  if info.family == "series":
    length = series_length(info, opts)
    znorm = _znorm(info, opts)
    key = ("series", builder.name, str(builder.data_dir), split, length, znorm)
    raw, labels = memory.load_split(builder, split, cache=cache, feature="series")
    return memory.cached(key, cache, lambda: (
        preprocess.series_batch(raw, length=length, znorm=znorm), labels))
  if info.family == "volume":
    mode = _preprocess(info, opts)
    key = ("volume", builder.name, str(builder.data_dir), split, mode)
    raw, labels = memory.load_split(builder, split, cache=cache, feature="volume")
    return memory.cached(key, cache, lambda: (preprocess.volume_intensity(raw, mode), labels))
  return memory.load_split(builder, split, cache=cache)


def _volume_transform(info, opts, train: bool) -> memory.Transform:
  stored = tuple(described(info, opts).input_shape[:3])
  crop, axes = crop_shape(info, opts), flip_axes(opts)
  center = preprocess.volume_center(stored, crop)
  if not (train and opts["augment"]):
    if crop == stored:
      return lambda x, rng, sl, g: x
    return lambda x, rng, sl, g: preprocess.volume_crop_flip(
        x, np.broadcast_to(center, (len(x), 3)), np.zeros((len(x), 3), bool), crop)

  def augment(x, rng, sl, g):
    corners, flips = preprocess.volume_crop_flip_params(rng, g, stored, crop, axes)
    return preprocess.volume_crop_flip(x, corners[sl], flips[sl], crop)
  return augment


def _image_transform(info, opts, train: bool, builder, cache: bool) -> memory.Transform:
  pre, mean, std = opts["preprocess"], info.mean, info.std
  if info.family == "mnist":
    if pre == "lenet1998":
      return lambda x, rng, sl, g: preprocess.mnist_lenet1998(x)
    return lambda x, rng, sl, g: preprocess.mnist_standard(x, mean, std)
  if pre == "per_pixel_mean":
    pixel_mean = memory.mean_image(builder, info.train_split, cache=cache)
    normalize = lambda x: preprocess.subtract_pixel_mean(x, pixel_mean)  # noqa: E731
  else:
    normalize = lambda x: preprocess.normalize_channels(x, mean, std)  # noqa: E731
  if not (train and opts["augment"]):
    return lambda x, rng, sl, g: normalize(x)

  def augment(x, rng, sl, g):
    dy, dx, flip = preprocess.cifar_crop_flip_params(rng, g)
    return normalize(preprocess.cifar_crop_flip(x, dy[sl], dx[sl], flip[sl]))
  return augment


def transform(info, opts, *, train: bool, builder=None, cache: bool = True) -> memory.Transform:
  """The per-batch transform of the in-memory back end for ``info``'s family (``builder`` is
  needed only for CIFAR's 'per_pixel_mean', which averages the training split)."""
  if info.family == "series":
    return lambda x, rng, sl, g: x
  if info.family == "volume":
    return _volume_transform(info, opts, train)
  return _image_transform(info, opts, train, builder, cache)


def _stack(raw, want, what: str) -> np.ndarray:
  arrays = [np.asarray(x) for x in raw]
  for i, x in enumerate(arrays):
    if x.shape != tuple(want):
      raise ValueError(f"input {i} has shape {x.shape}; {what} takes {tuple(want)}")
  return np.stack(arrays) if arrays else np.zeros((0, *want), np.float32)


def eval_inputs(info, opts, raw, *, builder=None) -> np.ndarray:
  """Raw examples -> the float32 batch the eval pipeline would make of them (for predicting
  on a user's own files). ``raw``: uint8 [H, W, C] images (MNIST / CIFAR shapes), encoded
  JPEG / PNG bytes (ImageNet family), float [L, C] series (any L; C as the dataset), or float
  [D, H, W(, C)] volumes of the stored shape. ValueError (one line) on a wrong shape."""
  info = described(info, opts)
  if info.family == "series":
    channels = int(info.input_shape[-1])
    for i, x in enumerate(raw):
      if np.ndim(x) != 2 or np.shape(x)[1] != channels or len(x) < 1:
        raise ValueError(f"series {i} has shape {np.shape(x)}; {info.name} takes (length, "
                         f"{channels})")
    return preprocess.series_batch([np.asarray(x, np.float32) for x in raw],
                                   length=series_length(info, opts),
                                   znorm=_znorm(info, opts))
  if info.family == "volume":
    raw = [x if np.ndim(x) == 4 else np.asarray(x)[..., None] for x in raw]
    x = preprocess.volume_intensity(_stack(raw, info.input_shape, info.name),
                                    _preprocess(info, opts))
    return transform(info, opts, train=False)(x, None, slice(0, len(x)), len(x))
  if info.family == "imagenet":
    import tensorflow as tf
    kw = dict(image_size=opts["image_size"], eval_resize=opts["eval_resize"],
              mean=info.mean, std=info.std)
    return np.stack([preprocess.imagenet_eval(tf.constant(b), **kw).numpy() for b in raw])
  x = _stack(raw, info.input_shape, info.name).astype(np.uint8)
  fn = transform(info, opts, train=False, builder=builder)
  return fn(x, None, slice(0, len(x)), len(x))
