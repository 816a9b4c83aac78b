"""The input pipeline's public face: host-local numpy batches for training and evaluation.

    spec = pipeline.data_spec("cifar10", data_dir=...)      # or a RunSpec's .data
    feed = pipeline.Feed(spec)                               # one per run
    batches = feed.train_batches(global_batch_size=256, seed=0, start_step=s)
    for batch in feed.eval_batches(split="test", global_batch_size=1000): ...

Everything is driven by a resolved ``cnnlab.config.DataSpec``, which carries its dataset's
facts and family object. Two back ends, chosen by the family (``in_memory``): memory.py (MNIST,
Fashion-MNIST, CIFAR, series, volumes: decoded once into RAM — held by the ``Feed``, so a run
decodes each split once and nothing is cached process-wide — NumPy transforms) and streaming.py
(ImageNet, Imagenette: tf.data over TFDS records). Both guarantee:
- the training batch at step s is a pure function of (seed, s); a pipeline started at
  ``start_step=s`` yields exactly what an uninterrupted one yields from step s, without
  decoding any skipped example;
- host p of P yields a disjoint [global_batch / P]-row share; eval batches are padded (zero
  inputs, mask False) so every host yields ceil(N / global_batch) batches and the masks sum
  to the split size over all hosts;
- nothing is downloaded: a dataset missing from the data dir raises
  ``datasets.DatasetUnavailableError`` at once (unless the option ``download`` is True).

Dataset options (``cnnlab.config.DATASET_OPTIONS`` has each default; the family says which it
reads): data_dir, preprocess, image_size, eval_resize, shuffle_buffer, train_split,
eval_split, augment, crop_area_min, scale_min, scale_max, pca_lighting, prefetch,
num_parallel_calls, download, series_length, crop_shape, flip_axes.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from cnnlab import config as config_lib
from cnnlab import streams
from cnnlab.config import DataSpec
from cnnlab.data import datasets, memory, streaming


def data_spec(name: str, **options) -> DataSpec:
  """A DataSpec for dataset ``name`` with ``options`` (for notebooks and benchmarks that feed a
  model without a whole run config): describe + resolve, as a run would."""
  unknown = set(options) - set(config_lib.DATASET_OPTIONS)
  if unknown:
    raise ValueError(f"unknown dataset option(s) {sorted(unknown)}: valid options are "
                     f"{', '.join(sorted(config_lib.DATASET_OPTIONS))}")
  section = {"name": name, **options}
  return config_lib.resolve_data(section, datasets.describe(section))


def _hosts(global_batch_size, process_index, process_count) -> tuple[int, int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, {process_count})")
  g = int(global_batch_size)
  if g <= 0 or g % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"the process count {process_count}")
  return process_index, process_count, g // process_count


class Feed:
  """One run's data: the prepared dataset opened once, in-memory splits decoded on first use
  and kept by this object (evaluations every epoch reuse them)."""

  def __init__(self, spec: DataSpec):
    self.spec = spec
    self.facts = spec.facts
    self.family = spec.facts.family
    self.options = dict(spec.options)
    self._builder = None
    self._arrays: dict[str, tuple] = {}

  @property
  def builder(self):
    if self._builder is None:
      self._builder = datasets.builder(self.facts.info, self.options["data_dir"],
                                       download=bool(self.options["download"]))
    return self._builder

  def arrays(self, split: str):
    """(inputs, labels) of an in-memory split, decoded once."""
    if split not in self._arrays:
      self._arrays[split] = self.family.load(self.builder, split, self.options, self.facts)
    return self._arrays[split]

  def mean_image(self):
    """The training split's per-pixel mean (CIFAR's 'per_pixel_mean'), else None."""
    if not self.family.needs_mean_image(self.options):
      return None
    return memory.mean_image(self.arrays(self.facts.train_split)[0])

  def transform(self, *, train: bool) -> memory.Transform:
    return self.family.transform(self.options, self.facts, train=train,
                                 mean_image=self.mean_image())

  def train_batches(self, *, global_batch_size: int, seed: int, start_step: int = 0,
                    process_index: int | None = None, process_count: int | None = None,
                    background: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Infinite host-local batches {'image': float32 [B/P, ...], 'label': int32 [B/P]}; batch k
    is global step start_step + k. Raises at call time, not lazily. In-memory data is made
    ``prefetch`` batches ahead in a thread unless ``background`` is False (a caller that
    combines several seeds' batches runs one thread for all: ``in_background``)."""
    p, n_proc, bh = _hosts(global_batch_size, process_index, process_count)
    if seed < 0 or start_step < 0:
      raise ValueError(f"seed={seed} and start_step={start_step} must be >= 0")
    split = self.spec.train_split
    if self.family.in_memory:
      inputs, labels = self.arrays(split)
      it = memory.train_batches(inputs, labels, self.transform(train=True),
                                global_batch_size=bh * n_proc, seed=seed,
                                start_step=start_step, process_index=p, process_count=n_proc,
                                joint=self.facts.task == "segment")
      return self.in_background(it) if background else it
    lo, hi = streaming.host_range(streaming.split_size(self.builder, split), p, n_proc)
    train_fn, _ = self.family.example_fns(self.options, self.facts)
    return streaming.train_batches(
        self.builder, split, train_fn, lo=lo, hi=hi, host_batch=bh,
        block=int(self.options["shuffle_buffer"]), seed=seed, start_step=start_step,
        aug_key=streaming._key(seed, streams.STREAMING_AUGMENT, p, n_proc),
        parallel=int(self.options["num_parallel_calls"]))

  def in_background(self, iterator: Iterator) -> Iterator:
    """``iterator`` run ``prefetch`` items ahead in a thread (memory.background)."""
    return memory.background(iterator, int(self.options["prefetch"]))

  def eval_batches(self, *, split: str | None = None, global_batch_size: int,
                   process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Finite host-local batches {'image', 'label', 'mask' (bool [B/P])} of ``split`` (default:
    the eval split): ceil(N / B) of them on every host, padding rows zero with mask False."""
    p, n_proc, bh = _hosts(global_batch_size, process_index, process_count)
    split = split or self.spec.eval_split
    if self.family.in_memory:
      inputs, labels = self.arrays(split)
      it = memory.eval_batches(inputs, labels, self.transform(train=False),
                               global_batch_size=bh * n_proc, process_index=p,
                               process_count=n_proc)
      return memory.background(it, int(self.options["prefetch"]))
    n = streaming.split_size(self.builder, split)
    lo, hi = streaming.host_range(n, p, n_proc)
    _, eval_fn = self.family.example_fns(self.options, self.facts)
    return streaming.eval_batches(
        self.builder, split, eval_fn, n=n, lo=lo, hi=hi, global_batch=bh * n_proc,
        host_batch=bh, image_shape=self.spec.input_shape,
        parallel=int(self.options["num_parallel_calls"]))

  def whole_examples(self, split: str | None = None, *, process_index: int = 0,
                     process_count: int = 1):
    """(input, mask) of whole examples of ``split`` (segmentation: evaluation and pictures
    take images / volumes whole); host p of P takes examples p, p + P, ..."""
    inputs, masks = self.arrays(split or self.spec.eval_split)
    return self.family.whole_examples(inputs, masks, process_index, process_count)

  def examples(self, split: str | None = None, *, start: int = 0, limit: int | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of examples ``start`` .. ``start + limit`` of ``split`` as the model
    sees them in evaluation; ValueError if ``start`` is past the end."""
    split = split or self.spec.eval_split
    xs, ys, seen = [], [], 0
    end = None if limit is None else start + limit
    for batch in self.eval_batches(split=split, global_batch_size=batch_size,
                                   process_index=0, process_count=1):
      n = int(batch["mask"].sum())
      lo, hi = max(start - seen, 0), n if end is None else min(n, end - seen)
      if hi > lo:
        xs.append(np.asarray(batch["image"][lo:hi]))
        ys.append(np.asarray(batch["label"][lo:hi]))
      seen += n
      if end is not None and seen >= end:
        break
    if not xs:
      raise ValueError(f"example {start} is out of range: split {split!r} has {seen} examples")
    return np.concatenate(xs), np.concatenate(ys)

  def eval_inputs(self, raw) -> np.ndarray:
    """A user's raw examples -> the float32 batch evaluation would make of them."""
    return self.family.eval_inputs(raw, self.options, self.facts, mean_image=self.mean_image())


def train_batches(spec: DataSpec, **kw) -> Iterator[dict[str, np.ndarray]]:
  """``Feed(spec).train_batches(**kw)`` (one-off use)."""
  return Feed(spec).train_batches(**kw)


def eval_batches(spec: DataSpec, **kw) -> Iterator[dict[str, np.ndarray]]:
  """``Feed(spec).eval_batches(**kw)`` (one-off use)."""
  return Feed(spec).eval_batches(**kw)


def measure_throughput(spec: DataSpec, *, global_batch_size: int, num_batches: int = 50,
                       warmup: int = 5, train: bool = True, seed: int = 0) -> float:
  """Images per second one process gets out of the pipeline (after ``warmup`` batches,
  which absorb loading and tracing). Single-host view: process_index 0 of 1."""
  feed = Feed(spec)
  kw = dict(global_batch_size=global_batch_size, process_index=0, process_count=1)
  if train:
    it = feed.train_batches(seed=seed, **kw)
  else:
    it = _cycle(lambda: feed.eval_batches(**kw))
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  images = 0
  for _ in range(num_batches):
    images += len(next(it)["label"])
  return images / (time.perf_counter() - t0)


def _cycle(make):
  while True:
    yield from make()
