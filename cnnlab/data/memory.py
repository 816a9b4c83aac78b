"""The in-memory back end: small datasets (MNIST, Fashion-MNIST, CIFAR) as decoded uint8 arrays.

Each host decodes the whole split once (CIFAR-10: 154 MB train + 31 MB test; kept by the run's
``pipeline.Feed``) and then never touches TFDS again. Every host holds the same arrays, so the *global*
batch sequence is defined once for all hosts and each host cuts out its own disjoint slice
(rather than each host reading a disjoint share of the files: at this size, holding it all
costs little and makes the batches independent of the host count):

- epoch e = step // steps_per_epoch with steps_per_epoch = N // global_batch; the order is
  ``np.random.default_rng([seed, DATA_ORDER, e]).permutation(N)`` (cnnlab/streams.py); global
  batch i of the epoch is positions [i*G, (i+1)*G) of it (the N mod G examples left over
  differ every epoch);
- augmentation randomness for step s comes from ``default_rng([seed, DATA_AUGMENT, s])``,
  drawn for the whole global batch and sliced per host.

So batch s is a pure function of (seed, s) — a restart at any step costs nothing — and the
global batch does not depend on how many hosts share it. Transforms are vectorised NumPy
(preprocess.py); a background thread keeps a few batches ready while the train step runs.
"""
from __future__ import annotations

import itertools
import math
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from cnnlab import streams

# transform(images_uint8 [b, H, W, C], rng or None, host_slice, global_batch) -> float32
# [b, H', W', C]; a random transform draws its parameters for the whole global batch from rng
# and applies the host_slice rows of them, so a host's rows do not depend on the host count.
Transform = Callable[[np.ndarray, "np.random.Generator | None", slice, int], np.ndarray]


def load_split(builder, split: str, *,
               feature: str = "image") -> tuple[np.ndarray | list, np.ndarray]:
  """All of ``split`` decoded to (inputs, int32 [N]) in the stored order: inputs an array
  [N, *shape] (uint8 images as stored), or a list of arrays when ``feature`` has a variable
  dimension (unequal-length series). The caller keeps it (cnnlab.data.pipeline.Feed)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  options = tf.data.Options()
  options.deterministic = True
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(options=options, try_autocache=False))
  ds = ds.map(lambda ex: (ex[feature], tf.cast(ex["label"], tf.int32)))
  ragged = None in tuple(builder.info.features[feature].shape)
  inputs, labels = [], []
  for x, y in tfds.as_numpy(ds.prefetch(64) if ragged else ds.batch(4096).prefetch(2)):
    inputs.append(x)
    labels.append(y)
  if ragged:
    return inputs, np.asarray(labels, np.int32)
  if not inputs:
    shape = tuple(builder.info.features[feature].shape)
    return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int32)
  return np.concatenate(inputs), np.concatenate(labels)


def mean_image(images: np.ndarray) -> np.ndarray:
  """Per-pixel mean of uint8 images in [0, 1] units, float32 [H, W, C]."""
  return (images.mean(axis=0, dtype=np.float64) / 255.0).astype(np.float32)


def steps_per_epoch(n: int, global_batch_size: int) -> int:
  spe = n // global_batch_size
  if spe < 1:
    raise ValueError(f"global batch size {global_batch_size} is larger than the split "
                     f"({n} examples)")
  return spe


def train_batches(images: np.ndarray, labels: np.ndarray, transform: Transform, *,
                  global_batch_size: int, seed: int, start_step: int, process_index: int,
                  process_count: int, joint: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Infinite host-local training batches starting at ``start_step``. With ``joint`` the
  transform takes (inputs, labels, rng, host_slice, global_batch) and returns the whole batch
  dict (segmentation: image and mask transformed together)."""
  n, g = len(labels), global_batch_size
  spe = steps_per_epoch(n, g)
  bh = g // process_count
  host = slice(process_index * bh, (process_index + 1) * bh)

  def batches():
    epoch, perm = -1, None
    for step in itertools.count(start_step):
      e, i = divmod(step, spe)
      if e != epoch:
        epoch, perm = e, np.random.default_rng([seed, streams.DATA_ORDER, e]).permutation(n)
      idx = perm[i * g + host.start:i * g + host.stop]
      rng = np.random.default_rng([seed, streams.DATA_AUGMENT, step])
      if joint:
        yield transform(images[idx], labels[idx], rng, host, g)
      else:
        yield {"image": transform(images[idx], rng, host, g), "label": labels[idx]}

  return batches()


def eval_batches(images: np.ndarray, labels: np.ndarray, transform: Transform, *,
                 global_batch_size: int, process_index: int,
                 process_count: int) -> Iterator[dict[str, np.ndarray]]:
  """ceil(N / G) batches on every host; host p gets rows [p*Bh, (p+1)*Bh) of each global
  batch; rows past the end of the split are zeros with mask False."""
  n, g = len(labels), global_batch_size
  bh = g // process_count
  for b in range(math.ceil(n / g)):
    idx = b * g + process_index * bh + np.arange(bh)
    mask = idx < n
    safe = np.where(mask, idx, 0)
    image = transform(images[safe], None, slice(0, bh), bh)
    label = np.where(mask, labels[safe], 0).astype(np.int32)
    if not mask.all():
      image[~mask] = 0
    yield {"image": image, "label": label, "mask": mask}


def background(iterator: Iterator, size: int) -> Iterator:
  """Runs ``iterator`` in a daemon thread, ``size`` items ahead; exceptions are re-raised.

  NumPy releases the GIL for the big copies, so batches are built while the consumer (the
  jitted train step) runs. Closing or dropping the returned generator stops the thread.
  """
  if size <= 0:
    yield from iterator
    return
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  end = object()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def work():
    try:
      for item in iterator:
        if not put(item):
          return
      put(end)
    except BaseException as e:  # handed to the consumer
      put(_Raised(e))

  thread = threading.Thread(target=work, daemon=True, name="cnnlab-data")
  thread.start()
  try:
    while True:
      item = q.get()
      if item is end:
        return
      if isinstance(item, _Raised):
        raise item.error
      yield item
  finally:
    stop.set()


class _Raised:
  def __init__(self, error: BaseException):
    self.error = error
