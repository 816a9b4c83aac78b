"""Per-family input transforms: MNIST and CIFAR in NumPy, ImageNet in TensorFlow, volumes in NumPy
(series: cnnlab/data/series_prep.py).

Every random transform takes its randomness explicitly (a NumPy Generator or a TF stateless
seed), so the pipeline can make augmentation a pure function of (seed, step / position).

MNIST (28x28x1 uint8):
- 'standard': (x/255 - mean) / std at 28x28.
- 'lenet1998': the input of LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to
  document recognition", §II.B and §III.A): the 28x28 digit centred in a 32x32 field, and
  pixel values scaled so the background is -0.1 and the foreground (ink, x = 255) is 1.175,
  which makes the mean roughly 0 and the variance roughly 1. MNIST stores ink as 255 on a 0
  background, so y = -0.1 + 1.275 * x/255, and the 2-px border is background (-0.1).
No augmentation for either.

CIFAR (32x32x3 uint8):
- train: zero-pad 4 px on each side, random 32x32 crop, random horizontal flip (He et al.
  2016, "Deep residual learning", §4.2), then normalise.
- 'standard' normalisation: per-channel mean/std (catalogue constants).
- 'per_pixel_mean': subtract the per-pixel mean image of the training split, no scaling —
  what §4.2 of the ResNet paper literally says ("with the per-pixel mean subtracted").
- eval: normalisation only.

ImageNet family (encoded JPEG bytes -> float32 [S, S, 3]):
- 'inception' train (Szegedy et al. 2015, "Going deeper with convolutions", §6): a crop
  covering 8-100% of the image area with aspect ratio in [3/4, 4/3], sampled by
  ``tf.image.stateless_sample_distorted_bounding_box`` (10 attempts; the whole image when all
  fail) and decoded straight from the JPEG crop window (``decode_and_crop_jpeg``), resized to
  S x S, random flip.
- 'vgg' train (Simonyan & Zisserman 2015, §3.1 multi-scale training): shorter side rescaled
  to S_scale ~ U[scale_min, scale_max] = U[256, 512], random S x S crop, flip.
- 'alexnet' train (Krizhevsky et al. 2012, §2 and §4.1): shorter side to 256, the central
  256x256 square, random S x S crop (S = 227: the paper's "224" does not fit its own conv1
  arithmetic), flip; optional PCA colour ("lighting") noise with std ``pca_lighting`` (the
  paper uses 0.1), using the ImageNet RGB eigen-decomposition published with fb.resnet.torch.
- eval (all options): the centre crop that "resize the shorter side to eval_resize (256), then
  centre crop S (224)" keeps — computed as a centre square of side shorter*S/eval_resize
  decoded straight from the JPEG window, then resized to S x S (same pixels up to resampling).
All resizes are bilinear with antialiasing (like PIL, which torchvision's pretrained weights saw).
Non-JPEG bytes (none in TFDS's ImageNet, which re-encodes its one PNG and CMYK files) are
decoded whole and cropped instead.
Then (x - 255*mean) / (255*std).

"""
from __future__ import annotations

import numpy as np

LENET_BACKGROUND = -0.1
LENET_FOREGROUND = 1.175
CIFAR_PAD = 4

# RGB eigenvalues / eigenvectors (columns) of ImageNet pixel covariance, pixels in [0, 1];
# the values used by fb.resnet.torch's Lighting transform for AlexNet-style PCA noise.
_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
               (-0.5808, -0.0045, -0.8140),
               (-0.5836, -0.6948, 0.4203))


# ------------------------------------------------------------------------------- NumPy side

def channel_affine(mean, std) -> tuple[np.ndarray, np.ndarray]:
  """(scale, bias) with x_uint8 * scale + bias == (x/255 - mean) / std, per channel."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def mnist_standard(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 [B, 28, 28, 1] -> float32 [B, 28, 28, 1]; a 256-entry lookup table does the math."""
  scale, bias = channel_affine(mean, std)
  lut = np.arange(256, dtype=np.float32) * scale[0] + bias[0]
  return lut[images]


def mnist_lenet1998(images: np.ndarray) -> np.ndarray:
  """uint8 [B, 28, 28, 1] -> float32 [B, 32, 32, 1] with LeNet-5's padding and scaling."""
  lut = (LENET_BACKGROUND + (LENET_FOREGROUND - LENET_BACKGROUND)
         * np.arange(256, dtype=np.float32) / 255.0).astype(np.float32)
  out = np.full((images.shape[0], 32, 32, images.shape[-1]), LENET_BACKGROUND, np.float32)
  out[:, 2:30, 2:30, :] = lut[images]
  return out


def cifar_crop_flip_params(rng: np.random.Generator, n: int):
  """Per-example (dy, dx, flip) for the pad-4 random crop, drawn for n examples at once."""
  offsets = rng.integers(0, 2 * CIFAR_PAD + 1, size=(n, 2))
  flips = rng.random(n) < 0.5
  return offsets[:, 0], offsets[:, 1], flips


def cifar_crop_flip(images: np.ndarray, dy, dx, flips) -> np.ndarray:
  """Zero-pad 4 px, crop 32x32 at (dy, dx) of the padded image, mirror where ``flips``.

  Done per image without materialising the padded batch: crop (dy, dx) of the padded image
  is the image shifted by (dy - 4, dx - 4) with zeros shifted in, and mirroring the crop
  equals cropping the mirrored image at the mirrored shift. uint8 in, uint8 out.
  """
  b, h, w, _ = images.shape
  out = np.zeros_like(images)
  for i in range(b):
    oy, ox = int(dy[i]) - CIFAR_PAD, int(dx[i]) - CIFAR_PAD
    src = images[i]
    if flips[i]:
      src, ox = src[:, ::-1], -ox
    y0, y1, x0, x1 = max(0, -oy), min(h, h - oy), max(0, -ox), min(w, w - ox)
    out[i, y0:y1, x0:x1] = src[y0 + oy:y1 + oy, x0 + ox:x1 + ox]
  return out


def normalize_channels(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 [B, H, W, C] -> float32 (x/255 - mean) / std; the per-channel constants are tiled
  over a whole row (W*C) so NumPy's inner loop is long (6x faster than broadcasting over C)."""
  b, h, w, c = images.shape
  scale, bias = channel_affine(mean, std)
  out = images.reshape(b, h, w * c).astype(np.float32)
  out *= np.tile(scale, w)
  out += np.tile(bias, w)
  return out.reshape(images.shape)


def subtract_pixel_mean(images: np.ndarray, pixel_mean: np.ndarray) -> np.ndarray:
  """'per_pixel_mean': x/255 - mean_image (mean_image in [0, 1] units, float32 [H, W, C])."""
  out = np.multiply(images, np.float32(1.0 / 255.0), dtype=np.float32)
  out -= pixel_mean
  return out


# ---------------------------------------------------------------------------- TensorFlow side

def _tf():
  import tensorflow as tf
  return tf


def _normalize_tf(image, mean, std):
  tf = _tf()
  mean = tf.constant([255.0 * m for m in mean], tf.float32)
  std = tf.constant([255.0 * s for s in std], tf.float32)
  return (tf.cast(image, tf.float32) - mean) / std


def _resize(image, size):
  tf = _tf()
  return tf.image.resize(image, size, method="bilinear", antialias=True)


def _resize_shorter(image, shorter):
  tf = _tf()
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.cast(shorter, tf.float32) / tf.reduce_min(shape)
  new = tf.cast(tf.round(shape * scale), tf.int32)
  return _resize(image, tf.maximum(new, shorter))


def _image_shape(encoded):
  """[H, W, C] from the JPEG header (no decode); other formats are decoded to find out."""
  tf = _tf()
  return tf.cond(tf.io.is_jpeg(encoded), lambda: tf.image.extract_jpeg_shape(encoded),
                 lambda: tf.shape(_decode(encoded)))


def _decode(encoded):
  tf = _tf()
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _decode_window(encoded, window):
  """Decodes only ``window`` = [y, x, h, w] of a JPEG; other formats whole, then cropped."""
  tf = _tf()
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3),
      lambda: tf.image.crop_to_bounding_box(_decode(encoded), window[0], window[1],
                                            window[2], window[3]))


def _center_square_window(shape, fraction):
  """[y, x, h, w] of the centred square of side fraction * shorter side."""
  tf = _tf()
  h, w = shape[0], shape[1]
  side = tf.cast(fraction * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])


def imagenet_eval(encoded, *, image_size: int, eval_resize: int, mean, std):
  """Centre crop as 'resize shorter to eval_resize, centre crop image_size'; float32 [S, S, 3]."""
  tf = _tf()
  window = _center_square_window(_image_shape(encoded), image_size / eval_resize)
  image = _resize(_decode_window(encoded, window), [image_size, image_size])
  return _normalize_tf(image, mean, std)


def _inception_crop(encoded, seed, image_size, area_range, aspect_range):
  tf = _tf()
  shape = _image_shape(encoded)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=area_range[0], aspect_ratio_range=aspect_range,
      area_range=area_range, max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  return _resize(_decode_window(encoded, window), [image_size, image_size])


def _vgg_crop(encoded, seed, image_size, scale_range):
  tf = _tf()
  s_seed, c_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shorter = tf.random.stateless_uniform([], s_seed, minval=scale_range[0],
                                        maxval=scale_range[1] + 1, dtype=tf.int32)
  image = _resize_shorter(_decode(encoded), shorter)
  return tf.image.stateless_random_crop(image, [image_size, image_size, 3], c_seed)


def _alexnet_crop(encoded, seed, image_size, resize):
  tf = _tf()
  window = _center_square_window(_image_shape(encoded), 1.0)
  image = _resize(_decode_window(encoded, window), [resize, resize])
  return tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed)


def _pca_lighting(image, seed, std):
  """AlexNet §4.1: add eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, std)."""
  tf = _tf()
  alpha = tf.random.stateless_normal([3], seed, stddev=std)
  rgb = tf.linalg.matvec(tf.constant(_PCA_EIGVEC), alpha * tf.constant(_PCA_EIGVAL))
  return image + 255.0 * rgb


def imagenet_train(encoded, seed, *, preprocess: str, image_size: int, eval_resize: int,
                   mean, std, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3),
                   scale_range=(256, 512), pca_lighting: float = 0.0):
  """One augmented training image; a pure function of (encoded, seed) with seed int64 [2]."""
  tf = _tf()
  crop_seed, flip_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if preprocess == "inception":
    image = _inception_crop(encoded, crop_seed, image_size, area_range, aspect_range)
  elif preprocess == "vgg":
    image = _vgg_crop(encoded, crop_seed, image_size, scale_range)
  elif preprocess == "alexnet":
    image = _alexnet_crop(encoded, crop_seed, image_size, eval_resize)
  else:
    raise ValueError(f"unknown ImageNet preprocess {preprocess!r}: valid options are "
                     "inception, vgg, alexnet")
  image = tf.image.stateless_random_flip_left_right(tf.cast(image, tf.float32), flip_seed)
  if pca_lighting:
    image = _pca_lighting(image, light_seed, pca_lighting)
  return _normalize_tf(image, mean, std)


# ------------------------------------------------------------------------ volumes (NumPy)

def volume_intensity(volumes: np.ndarray, mode: str) -> np.ndarray:
  """float [N, D, H, W, C]: 'zscore' = (v - mean) / std per volume and channel (a constant
  volume becomes 0), 'raw' = unchanged. Done once when the split is loaded."""
  v = np.asarray(volumes, np.float32)
  if mode == "raw":
    return v
  if mode != "zscore":
    raise ValueError(f"unknown volume preprocess {mode!r}: valid options are zscore, raw")
  axes = tuple(range(1, v.ndim - 1))
  mean = v.mean(axis=axes, keepdims=True, dtype=np.float64)
  std = v.std(axis=axes, keepdims=True, dtype=np.float64)
  return ((v - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def volume_crop_flip_params(rng: np.random.Generator, n: int, stored, crop, flip_axes):
  """Per-example crop corners (int [n, 3]) and flips (bool [n, 3]) for n volumes at once."""
  slack = np.asarray(stored, np.int64) - np.asarray(crop, np.int64)
  corners = rng.integers(0, slack + 1, size=(n, 3))
  flips = (rng.random((n, 3)) < 0.5) & np.isin(np.arange(3), list(flip_axes))[None]
  return corners, flips


def volume_crop_flip(volumes: np.ndarray, corners, flips, crop) -> np.ndarray:
  """Crops each [D, H, W, C] volume to ``crop`` at its corner and mirrors the flagged axes."""
  out = np.empty((len(volumes), *crop, volumes.shape[-1]), np.float32)
  for i, v in enumerate(volumes):
    (d, h, w), flip = corners[i], flips[i]
    v = v[d:d + crop[0], h:h + crop[1], w:w + crop[2]]
    out[i] = v[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
  return out


def volume_center(stored, crop) -> np.ndarray:
  """The corner of the centred crop (eval)."""
  return (np.asarray(stored, np.int64) - np.asarray(crop, np.int64)) // 2
