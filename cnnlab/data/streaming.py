"""The streaming back end: tf.data over TFDS records for ImageNet-sized datasets.

Host p of P reads only its own contiguous range of the split, [N*p//P, N*(p+1)//P) (disjoint,
complete, sizes differing by at most one), as TFDS absolute-slice read instructions, with
images left encoded (``SkipDecoding``) until after shuffling and skipping.

Training order, per host and epoch e (steps_per_epoch = n_host // B_host, remainder dropped):
- the host range is cut into blocks of ``shuffle_buffer`` examples on a circular grid whose
  origin is a random shift; the blocks are visited in a random order; the examples inside a
  block are permuted with ``tf.random.experimental.stateless_shuffle``. Shift, block order and
  block seeds come from ``np.random.SeedSequence([seed, e, ...])`` — nothing depends on TF's
  global seed or on TF's shuffle implementation, and block membership changes every epoch.
- augmentation for the example at host-local position q is seeded by the stateless pair
  (key(seed, p, P), q), so it is a pure function of position (preprocess.imagenet_train).
- restart at step s: epoch e = s // steps_per_epoch and offset o; blocks before the one
  holding o are never read (TFDS slicing skips them), and the < shuffle_buffer records before
  o inside that block are read (not decoded) and dropped after its permutation.
Each epoch is its own tf.data pipeline (decode + augment in a deterministic parallel map,
batch, prefetch); the Python generator chains them, building the next epoch's pipeline in a
side thread. Memory: up to three blocks of encoded images (ImageNet averages ~110 kB per
JPEG: ~3.3 GB at the default shuffle_buffer of 10,000; lower it on small hosts).

Eval: the host range in stored order, decoded and centre-cropped, padded with zero images
(mask False) to exactly ceil(N / global_batch) batches on every host.
"""
from __future__ import annotations

import functools
import itertools
import math
import threading
from typing import Callable, Iterator

import numpy as np

from cnnlab import streams


def host_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  return n * process_index // process_count, n * (process_index + 1) // process_count


def split_size(builder, split: str) -> int:
  """Examples in ``split`` from the prepared metadata; the dataset's cardinality otherwise
  (tfds.testing.mock_data has no split metadata)."""
  try:
    n = int(builder.info.splits[split].num_examples)
    if n > 0:
      return n
  except (KeyError, ValueError):
    pass
  return int(builder.as_dataset(split=split).cardinality())


def _key(*ints: int) -> int:
  """A 63-bit integer mixed from ``ints`` (SeedSequence), usable as a TF int64 seed."""
  a, b = np.random.SeedSequence([int(i) for i in ints]).generate_state(2, np.uint32)
  return int((int(a) << 31) ^ int(b)) & ((1 << 63) - 1)


def _read(builder, split: str, ranges: list[tuple[int, int]]):
  """Records of ``split`` in the given absolute ranges (dicts), image still JPEG-encoded."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  ri = None
  for lo, hi in ranges:
    r = tfds.core.ReadInstruction(split, from_=lo, to=hi, unit="abs")
    ri = r if ri is None else ri + r
  options = tf.data.Options()
  options.deterministic = True
  return builder.as_dataset(split=ri, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(options=options, try_autocache=False))


def epoch_plan(n: int, block: int, seed: int, epoch: int):
  """[(ranges, block_seed, size)] in visiting order: a shifted circular grid of
  ``block``-sized blocks over [0, n), visited in a random order. Pure function of its args."""
  rng = np.random.default_rng([seed, streams.DATA_ORDER, epoch])
  shift = int(rng.integers(n))
  nb = math.ceil(n / block)
  plan = []
  for j in rng.permutation(nb):
    lo, hi = shift + j * block, shift + min((j + 1) * block, n)
    ranges = [(lo, min(hi, n))] if lo < n else []
    if hi > n:
      ranges.append((max(lo, n) - n, hi - n))
    plan.append((ranges, _key(seed, streams.DATA_AUGMENT, epoch, j), hi - lo))
  return plan


def _shuffled_block(builder, split, ranges, block_seed, drop, block):
  import tensorflow as tf

  def permute(ex):
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(tf.shape(ex["label"])[0]), seed=tf.constant([block_seed, 0], tf.int64))[drop:]
    return tf.gather(ex["image"], perm), tf.cast(tf.gather(ex["label"], perm), tf.int32)

  return _read(builder, split, ranges).batch(block).map(permute)


def train_batches(builder, split: str, example_fn: Callable, *, lo: int, hi: int,
                  host_batch: int, block: int, seed: int, start_step: int, aug_key: int,
                  parallel: int) -> Iterator[dict[str, np.ndarray]]:
  """Infinite host-local batches for host range [lo, hi) of ``split``, from ``start_step``.

  ``example_fn(encoded, label, seed2)`` -> (float32 image, int32 label), seed2 int64 [2].
  """
  import tensorflow as tf
  n = hi - lo
  spe = n // host_batch
  if spe < 1:
    raise ValueError(f"host batch size {host_batch} is larger than this host's share of "
                     f"{split!r} ({n} examples)")
  first_epoch, first_offset = divmod(start_step, spe)

  def build(epoch: int, offset: int):
    blocks, seen = [], 0
    for ranges, block_seed, size in epoch_plan(n, block, seed, epoch):
      if seen + size <= offset:       # wholly before the restart point: never read
        seen += size
        continue
      drop = max(0, offset - seen)
      seen += size
      shifted = [(a + lo, b + lo) for a, b in ranges]
      blocks.append(_shuffled_block(builder, split, shifted, block_seed, drop, block))
    ds = functools.reduce(lambda a, b: a.concatenate(b), blocks).prefetch(1).unbatch()
    ds = ds.take(spe * host_batch - offset)
    ds = ds.enumerate(start=epoch * spe * host_batch + offset)

    def augment(q, item):
      image, label = item
      x, y = example_fn(image, label, tf.stack([tf.constant(aug_key, tf.int64), q]))
      return {"image": x, "label": y}

    ds = ds.map(augment, num_parallel_calls=parallel, deterministic=True)
    return ds.batch(host_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def batches():
    # The next epoch's pipeline (one TFDS reader per block: ~0.1 s each) is built in a side
    # thread while this one is consumed. Closing the generator waits for a build in flight,
    # so no TFDS call outlives the consumer (it matters under tfds.testing.mock_data).
    upcoming = _in_thread(build, first_epoch, first_offset * host_batch)
    try:
      for epoch in itertools.count(first_epoch):
        ds = upcoming()
        upcoming = _in_thread(build, epoch + 1, 0)
        yield from ds.as_numpy_iterator()
    finally:
      upcoming.join()

  return batches()


def _in_thread(fn, *args) -> Callable:
  """Starts fn(*args) in a thread; the returned function waits for its result."""
  out: dict = {}

  def run():
    try:
      out["value"] = fn(*args)
    except BaseException as e:  # re-raised in the caller
      out["error"] = e

  # Not a daemon: at interpreter exit Python waits for a build in flight (seconds) instead
  # of tearing TF down under it.
  thread = threading.Thread(target=run, daemon=False, name="cnnlab-epoch")
  thread.start()

  def result():
    thread.join()
    if "error" in out:
      raise out["error"]
    return out["value"]
  result.join = thread.join
  return result


def eval_batches(builder, split: str, example_fn: Callable, *, n: int, lo: int, hi: int,
                 global_batch: int, host_batch: int, image_shape, parallel: int):
  """ceil(n / global_batch) batches of host range [lo, hi), zero-padded with mask False."""
  import tensorflow as tf
  total = math.ceil(n / global_batch) * host_batch
  pad = tf.data.Dataset.from_tensors({
      "image": tf.zeros(image_shape, tf.float32), "label": tf.constant(0, tf.int32),
      "mask": tf.constant(False)}).repeat()
  if hi > lo:
    ds = _read(builder, split, [(lo, hi)])

    def prep(ex):
      return {"image": example_fn(ex["image"]), "label": tf.cast(ex["label"], tf.int32),
              "mask": tf.constant(True)}

    ds = ds.map(prep, num_parallel_calls=parallel, deterministic=True).concatenate(pad)
  else:
    ds = pad
  ds = ds.take(total).batch(host_batch).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()
