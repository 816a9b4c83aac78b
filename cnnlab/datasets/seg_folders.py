"""Image + mask folders -> a TFDS segmentation dataset (``segmentation/<name>``).

    python -m experiments.prepare_data --dataset=segmentation/<name> --source_dir=DIR

``DIR/<split>/image/*.png|tif|tiff|jpg`` with their masks in ``DIR/<split>/label/*.png|tif|
tiff|bmp|npy``, matched by file stem; the label mapping from ``DIR/labels.json`` or the train
masks' values (seg_pairs.py has the rules). Images are 8-bit: grey (stored as 1 channel), RGB
or RGBA as stored (palette and CMYK images become RGB); 16-bit and float images are refused
(convert them to 8-bit first), as are multi-page TIFFs (one file per slice). All images of a
dataset have one channel count; their sizes may differ, since a segmentation network infers
on any size. A mask is a single-channel image (or a 2-D integer .npy) of its image's size;
JPEG masks are refused (lossy compression invents values along edges).

Each example: ``image`` uint8 [H, W, C] (PNG-encoded), ``mask`` uint8 [H, W] of class indices
(IGNORE_INDEX = 255 for ignored values and for every pixel of an unlabelled split), ``file``
(the image's path inside DIR). Everything is checked before anything is written: a mask of
another size than its image, a value outside the mapping, an image without a mask or a mask
without an image is a one-line error naming the file.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from cnnlab.datasets import local, seg_pairs

FAMILY = "segmentation"
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".npy")
_LOSSY = (".jpg", ".jpeg")
_CHANNELS = {"1": 1, "L": 1, "RGB": 3, "RGBA": 4}
_TO_RGB = ("P", "CMYK", "YCbCr")


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _open(path: str):
  from PIL import Image
  try:
    image = Image.open(path)
  except Exception as e:  # pylint: disable=broad-except  # a bad file: name it
    raise seg_pairs.SegmentationDataError(f"{path}: cannot read the image "
                                          f"({type(e).__name__})") from None
  if getattr(image, "n_frames", 1) > 1:
    raise seg_pairs.SegmentationDataError(f"{path}: a multi-page file ({image.n_frames} "
                                          "pages); store one file per slice")
  return image


def _image_mode(path: str, image) -> tuple[str, int]:
  """(mode to convert to, channels) of an image, or an error for a non-8-bit one."""
  mode = "RGB" if image.mode in _TO_RGB else image.mode
  if mode not in _CHANNELS:
    raise seg_pairs.SegmentationDataError(f"{path}: image mode {image.mode} (16-bit, float or "
                                          "grey+alpha); convert it to 8-bit grey, RGB or RGBA")
  return mode, _CHANNELS[mode]


def image_header(path: str) -> tuple[int, int, int]:
  """(H, W, C) of an image from its header (no pixels decoded)."""
  image = _open(path)
  _, channels = _image_mode(path, image)
  return image.height, image.width, channels


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, C] (grey: C = 1)."""
  image = _open(path)
  mode, _ = _image_mode(path, image)
  if mode == "1":
    mode = "L"
  x = np.asarray(image.convert(mode) if image.mode != mode else image, np.uint8)
  return x[..., None] if x.ndim == 2 else x


def read_mask(path: str) -> np.ndarray:
  """The stored values of a mask, int64 [H, W] (a palette PNG: its indices)."""
  if path.lower().endswith(_LOSSY):
    raise seg_pairs.SegmentationDataError(f"{path}: a JPEG mask (lossy: values bleed along "
                                          "edges); store masks as PNG, TIFF or .npy")
  if path.lower().endswith(".npy"):
    try:
      m = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
      raise seg_pairs.SegmentationDataError(f"{path}: cannot read the mask "
                                            f"({type(e).__name__})") from None
  else:
    m = np.asarray(_open(path))
  if m.ndim == 3 and m.shape[-1] in (3, 4) and (m[..., :3] == m[..., :1]).all():
    m = m[..., 0]   # grey saved as RGB
  if m.ndim != 2:
    raise seg_pairs.SegmentationDataError(f"{path}: mask of shape {m.shape}; store one class "
                                          "value per pixel in a single-channel image")
  return seg_pairs.integer_values(m, path)


def _accept_label(path: str) -> bool:
  return os.path.isfile(path) and path.lower().endswith(MASK_EXTENSIONS + _LOSSY)


def scan(root: str) -> dict[str, list[seg_pairs.Pair]]:
  return seg_pairs.scan(
      root, stem=_stem, accept_label=_accept_label,
      accept_image=lambda p: os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))


def _check(root: str, pairs: Mapping[str, list]) -> tuple[dict, dict, int]:
  """Pre-pass: ({pair: {stored value: count}}, {split: set of (H, W)}, channels)."""
  counts, sizes, first = {}, {}, None
  for split, entries in pairs.items():
    sizes[split] = set()
    for pair in entries:
      path = os.path.join(root, pair.image)
      h, w, c = image_header(path)
      first = first or (c, path)
      if c != first[0]:
        raise seg_pairs.SegmentationDataError(f"{path}: {c} channel(s) where {first[1]} has "
                                              f"{first[0]}; all images need one channel count")
      sizes[split].add((h, w))
      if pair.label is not None:
        mask = read_mask(os.path.join(root, pair.label))
        if mask.shape != (h, w):
          raise seg_pairs.SegmentationDataError(
              f"{os.path.join(root, pair.label)}: mask size {mask.shape[0]}x{mask.shape[1]} "
              f"differs from its image {pair.image} ({h}x{w})")
        values, n = np.unique(mask, return_counts=True)
        counts[pair] = dict(zip(values.tolist(), n.tolist()))
  return counts, sizes, first[0]


def features(channels: int) -> dict:
  import tensorflow_datasets as tfds
  return {"image": tfds.features.Image(shape=(None, None, channels), dtype=np.uint8),
          "mask": tfds.features.Tensor(shape=(None, None), dtype=np.uint8,
                                       encoding=tfds.features.Encoding.ZLIB),
          "file": tfds.features.Text()}


def _examples(root: str, entries: list, mapping: seg_pairs.LabelMap):
  for pair in entries:
    image = read_image(os.path.join(root, pair.image))
    if pair.label is None:
      mask = np.full(image.shape[:2], seg_pairs.IGNORE_INDEX, np.uint8)
    else:
      label_path = os.path.join(root, pair.label)
      mask = mapping.apply(read_mask(label_path), label_path)
    yield {"image": image, "mask": mask, "file": pair.image}


def spec_from_pairs(config: str, root: str, pairs: Mapping[str, list], *,
                    label_map: seg_pairs.LabelMap | None = None, metadata: Mapping = (),
                    description: str = ""):
  """The LocalSpec of ``segmentation/<config>`` from scanned pairs (all checked first)."""
  counts, sizes, channels = _check(root, pairs)
  mapping = seg_pairs.resolve_map(root, label_map, {p: v.keys() for p, v in counts.items()})
  every = set().union(*sizes.values())
  h, w = next(iter(every)) if len(every) == 1 else (None, None)   # None: sizes vary
  meta = {"task": "segmentation", "ndim": 2, "shape": [h, w, channels], "channels": channels,
          **mapping.metadata(),
          "unlabelled_splits": [s for s, e in pairs.items() if e[0].label is None],
          "class_pixels": seg_pairs.class_counts(counts, mapping),
          "min_size": [min(x[0] for x in every), min(x[1] for x in every)],
          "max_size": [max(x[0] for x in every), max(x[1] for x in every)],
          "source_dir": os.path.abspath(root), **dict(metadata)}
  return local.LocalSpec(
      family=FAMILY, config=config, features=features(channels),
      splits={s: (lambda e=e: _examples(root, e, mapping)) for s, e in pairs.items()},
      metadata=meta,
      description=description or f"Images and masks from {os.path.abspath(root)}, by cnnlab")


def local_spec(config: str, source_dir: str, *, label_map: seg_pairs.LabelMap | None = None):
  """The LocalSpec that builds ``segmentation/<config>`` from the folder ``source_dir``."""
  return spec_from_pairs(config, source_dir, scan(source_dir), label_map=label_map)
