"""Small synthetic raw files in each dataset's ORIGINAL format, for tests and benchmarks.

No CIFAR or ImageNet files can be had on the machines this project is built on, so the tests
write look-alikes and push them through the real path (prepare -> TFDS -> pipeline):
MNIST idx-ubyte.gz, CIFAR python or binary tarballs, ImageNet's ILSVRC2012 train tar (one
inner tar per class) and val tar, Imagenette's .tgz. Every writer returns {file name: md5},
ready for ``prepare.prepare(..., checksums=...)``.

Example identity: ``id_color(i)`` is a colour that survives JPEG, resizing and cropping of a
flat image, so a test can tell which examples an eval pass yielded (``solid=True``).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np


def _md5(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.md5(f.read()).hexdigest()


def mnist_images(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic, compressible 28x28 images (a bright square that moves with the index)
  and labels i % 10."""
  i = np.arange(offset, offset + n)
  images = np.zeros((n, 28, 28), np.uint8)
  r, c = i % 20, (i // 20) % 20
  for dr in range(8):
    for dc in range(8):
      images[np.arange(n), r + dr, c + dc] = 55 + (i % 200)
  return images, (i % 10).astype(np.uint8)


def write_mnist(directory: str, n_train: int = 60_000, n_test: int = 10_000) -> dict[str, str]:
  """The four idx-ubyte.gz files. TFDS's MNIST builder reads exactly 60,000 / 10,000 images,
  so keep the defaults for it (use prepare's max_examples_per_split to build fewer)."""
  os.makedirs(directory, exist_ok=True)
  out = {}
  for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, n_train)):
    images, labels = mnist_images(n, offset)
    header_img = np.array([2051, n, 28, 28], ">i4").tobytes()
    header_lbl = np.array([2049, n], ">i4").tobytes()
    for kind, payload in (("images-idx3", header_img + images.tobytes()),
                          ("labels-idx1", header_lbl + labels.tobytes())):
      path = os.path.join(directory, f"{prefix}-{kind}-ubyte.gz")
      with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(payload)
      out[os.path.basename(path)] = _md5(path)
  return out


def _pickle(obj) -> bytes:
  """Protocol 2, as the original (Python 2 era) CIFAR batches."""
  return pickle.dumps(obj, protocol=2)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def write_cifar(directory: str, name: str = "cifar10", n_train: int = 50, n_test: int = 20,
                fmt: str = "python", seed: int = 0) -> dict[str, str]:
  """A CIFAR-10/100 tarball ('python' pickles or 'binary' records) with random images."""
  rng = np.random.default_rng(seed)
  classes = 10 if name == "cifar10" else 100
  splits = {}
  for split, n in (("train", n_train), ("test", n_test)):
    splits[split] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     rng.integers(0, classes, n), rng.integers(0, 20, n))
  os.makedirs(directory, exist_ok=True)
  stem = "cifar-10" if name == "cifar10" else "cifar-100"
  path = os.path.join(directory, f"{stem}-{fmt}.tar.gz")
  with tarfile.open(path, "w:gz") as tar:
    if name == "cifar10":
      tr, te = splits["train"], splits["test"]
      chunks = np.array_split(np.arange(n_train), 5)
      batches = {f"data_batch_{k + 1}": (tr[0][c], tr[1][c]) for k, c in enumerate(chunks)}
      batches["test_batch"] = te[:2]
      names = [f"class{k}" for k in range(10)]
      if fmt == "python":
        for b, (data, labels) in batches.items():
          _add(tar, f"cifar-10-batches-py/{b}",
               _pickle({b"data": data, b"labels": [int(x) for x in labels]}))
        _add(tar, "cifar-10-batches-py/batches.meta",
             _pickle({b"label_names": [s.encode() for s in names]}))
      else:
        for b, (data, labels) in batches.items():
          rec = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
          _add(tar, f"cifar-10-batches-bin/{b}.bin", rec.tobytes())
        _add(tar, "cifar-10-batches-bin/batches.meta.txt", "\n".join(names).encode() + b"\n")
    else:
      fine = [f"fine{k}" for k in range(100)]
      coarse = [f"coarse{k}" for k in range(20)]
      for split, (data, labels, coarse_labels) in splits.items():
        if fmt == "python":
          _add(tar, f"cifar-100-python/{split}", _pickle({
              b"data": data, b"fine_labels": [int(x) for x in labels],
              b"coarse_labels": [int(x) for x in coarse_labels]}))
        else:
          rec = np.concatenate([coarse_labels.astype(np.uint8)[:, None],
                                labels.astype(np.uint8)[:, None], data], axis=1)
          _add(tar, f"cifar-100-binary/{split}.bin", rec.tobytes())
      if fmt == "python":
        _add(tar, "cifar-100-python/meta", _pickle({
            b"fine_label_names": [s.encode() for s in fine],
            b"coarse_label_names": [s.encode() for s in coarse]}))
      else:
        _add(tar, "cifar-100-binary/fine_label_names.txt", "\n".join(fine).encode() + b"\n")
        _add(tar, "cifar-100-binary/coarse_label_names.txt", "\n".join(coarse).encode() + b"\n")
  return {os.path.basename(path): _md5(path)}


def id_color(i: int) -> tuple[int, int, int]:
  """A colour on a 16-level grid per channel, unique for i < 4096."""
  return (16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 16 * (i // 256) + 8)


def color_id(rgb) -> int:
  """Inverse of ``id_color`` for a (possibly slightly perturbed) colour in [0, 255]."""
  r, g, b = (int(np.clip(np.round((v - 8) / 16), 0, 15)) for v in rgb)
  return r + 16 * g + 256 * b


def jpeg(i: int, height: int, width: int, *, solid: bool, seed: int = 0) -> bytes:
  """A JPEG: flat ``id_color(i)`` if ``solid``, else smooth random content (photo-like size)."""
  import tensorflow as tf
  if solid:
    image = np.broadcast_to(np.array(id_color(i), np.uint8), (height, width, 3))
  else:
    rng = np.random.default_rng([seed, i])
    low = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    image = tf.image.resize(low[None], (height, width), method="bicubic")[0]
    image = np.clip(image.numpy() + rng.normal(0, 12, (height, width, 3)), 0, 255)
  return tf.io.encode_jpeg(np.ascontiguousarray(image, np.uint8), quality=90).numpy()


def _sizes(rng, n, size_range):
  lo, hi = size_range
  return rng.integers(lo, hi + 1, (n, 2))


def _wnids(path_in_tfds: str, k: int) -> list[str]:
  import tensorflow_datasets as tfds
  with open(tfds.core.tfds_path(path_in_tfds)) as f:
    return f.read().split()[:k]


def write_imagenet(directory: str, classes: int = 3, per_class: int = 4, n_val: int = 6, *,
                   size_range=(40, 72), solid: bool = True, seed: int = 0) -> dict[str, str]:
  """ILSVRC2012_img_train.tar (inner <wnid>.tar per class) and ILSVRC2012_img_val.tar.

  TFDS labels the val images by their sorted position in validation_labels.txt, so the val
  labels are whatever the real first ``n_val`` validation images have."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  wnids = _wnids("datasets/imagenet2012/labels.txt", classes)
  sizes = iter(_sizes(rng, classes * per_class + n_val, size_range))
  train = os.path.join(directory, "ILSVRC2012_img_train.tar")
  with tarfile.open(train, "w") as outer:
    for c, wnid in enumerate(wnids):
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for k in range(per_class):
          h, w = next(sizes)
          _add(inner, f"{wnid}_{k}.JPEG", jpeg(c * per_class + k, h, w, solid=solid))
      _add(outer, f"{wnid}.tar", buf.getvalue())
  val = os.path.join(directory, "ILSVRC2012_img_val.tar")
  with tarfile.open(val, "w") as tar:
    for k in range(n_val):
      h, w = next(sizes)
      _add(tar, f"ILSVRC2012_val_{k + 1:08d}.JPEG", jpeg(k, h, w, solid=solid))
  return {os.path.basename(p): _md5(p) for p in (train, val)}


def write_imagenette(directory: str, dirname: str = "imagenette2", classes: int = 3,
                     per_class: int = 5, val_per_class: int = 3, *, size_range=(40, 72),
                     solid: bool = True, seed: int = 0) -> dict[str, str]:
  """<dirname>.tgz with <dirname>/{train,val}/<wnid>/*.JPEG. Example ids (``id_color``) run
  over train then val in writing order."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  wnids = _wnids("image_classification/imagenette_labels.txt", classes)
  path = os.path.join(directory, f"{dirname}.tgz")
  i = 0
  with tarfile.open(path, "w:gz") as tar:
    for split, n in (("train", per_class), ("val", val_per_class)):
      for wnid in wnids:
        for k in range(n):
          h, w = _sizes(rng, 1, size_range)[0]
          _add(tar, f"{dirname}/{split}/{wnid}/{wnid}_{i}.JPEG", jpeg(i, h, w, solid=solid))
          i += 1
  return {os.path.basename(path): _md5(path)}
