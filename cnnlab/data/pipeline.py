"""The input pipeline's public face: host-local numpy batches for training and evaluation.

    batches = train_batches(ds_cfg, global_batch_size=256, seed=0, start_step=s)
    for batch in eval_batches(ds_cfg, split="test", global_batch_size=1000): ...

Two back ends behind one API, chosen by the catalogue's ``in_memory`` flag: memory.py (MNIST,
Fashion-MNIST, CIFAR: decoded once into RAM, NumPy transforms) and streaming.py (ImageNet,
Imagenette: tf.data over TFDS records). Both guarantee:
- the training batch at step s is a pure function of (seed, s); a pipeline started at
  ``start_step=s`` yields exactly what an uninterrupted one yields from step s, without
  decoding any skipped example;
- host p of P yields a disjoint [global_batch / P]-row share; eval batches are padded (zero
  images, mask False) so every host yields ceil(N / global_batch) batches and the masks sum
  to the split size over all hosts;
- nothing is downloaded: a dataset missing from the data dir raises
  ``datasets.DatasetUnavailableError`` at once (unless ``download=True``).

``ds_cfg``: a resolved ``cnnlab.config.DataSpec`` (what the trainer passes: options resolved
once), or an ml_collections ConfigDict / dict (``make_config`` fills every key), resolved on
each call:
  name             catalogue name (datasets.names()).
  data_dir         TFDS data dir; None -> $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  preprocess       family option (catalogue ``preprocess_options``; first is the default).
  image_size       output side; fixed by the family for MNIST (28, or 32 with 'lenet1998')
                   and CIFAR (32); ImageNet default 224 (227 with 'alexnet').
  eval_resize      ImageNet: the shorter side before the centre crop (default 256).
  shuffle_buffer   streaming: examples per shuffled block (default 10000).
  train_split, eval_split   default from the catalogue.
  augment          False -> training batches get the eval transform (default True).
  crop_area_min    'inception': smallest crop area fraction (default 0.08).
  scale_min, scale_max      'vgg': shorter-side range (default 256, 512).
  pca_lighting     'alexnet': std of PCA colour noise (default 0 = off; paper 0.1).
  prefetch         in-memory: batches a background thread keeps ready (default 2; the
                   streaming back end prefetches inside tf.data).
  num_parallel_calls        streaming map parallelism (default -1 = AUTOTUNE).
  download         let TFDS download when not prepared (default False).
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np

from cnnlab import streams
from cnnlab.data import datasets, families, memory, streaming

# Every optional ds_cfg key with its default (None: decided by the dataset), the series /
# volume options of families.py included; cnnlab.config.defaults() builds the config's dataset
# section from this table, typed by OPTION_TYPES where the default is None.
DEFAULTS = dict(data_dir=None, preprocess=None, image_size=None, eval_resize=256,
                shuffle_buffer=10_000, train_split=None, eval_split=None, augment=True,
                crop_area_min=0.08, scale_min=256, scale_max=512, pca_lighting=0.0,
                prefetch=2, num_parallel_calls=-1, download=False, **families.DEFAULTS)
OPTION_TYPES = {"image_size": int, "series_length": int, "crop_shape": tuple}


def make_config(name: str, **overrides):
  """A ConfigDict with every documented key (None where the dataset decides)."""
  import ml_collections
  datasets.get(name)
  unknown = set(overrides) - set(DEFAULTS)
  if unknown:
    raise ValueError(f"unknown dataset option(s) {sorted(unknown)}: valid options are "
                     f"{', '.join(sorted(DEFAULTS))}")
  return ml_collections.ConfigDict({"name": name, **DEFAULTS, **overrides})


def resolve_options(ds_cfg) -> dict[str, Any]:
  """Every option of ``ds_cfg`` (a DataSpec, ConfigDict or dict) resolved to a concrete value
  and checked: the catalogue's defaults filled in, splits named, ``image_size`` fixed. A
  DataSpec (cnnlab.config) is already resolved and passes through."""
  if _is_spec(ds_cfg):
    return dict(ds_cfg.options)
  info = datasets.describe(ds_cfg.get("name", None), ds_cfg.get("data_dir", None))
  opts = {k: ds_cfg.get(k, None) for k in DEFAULTS}
  opts = {k: (DEFAULTS[k] if v is None else v) for k, v in opts.items()}
  opts["preprocess"] = datasets.check_preprocess(info, opts["preprocess"])
  opts["image_size"] = _image_size(info, opts["preprocess"], ds_cfg.get("image_size", None))
  for which in ("train", "eval"):
    split = opts[f"{which}_split"] or getattr(info, f"{which}_split")
    opts[f"{which}_split"] = datasets.check_split(info, split)
  return opts


def _is_spec(ds) -> bool:
  return hasattr(ds, "options") and hasattr(ds, "train_examples")


def _options(ds_cfg) -> tuple[datasets.DatasetInfo, dict[str, Any]]:
  name = ds_cfg.name if _is_spec(ds_cfg) else ds_cfg.get("name", None)
  opts = resolve_options(ds_cfg)
  return datasets.describe(name, opts["data_dir"]), opts


def _image_size(info, pre, requested) -> int | None:
  if info.family == "mnist":
    fixed = 32 if pre == "lenet1998" else 28
  elif info.family == "cifar":
    fixed = 32
  elif info.family == "imagenet":
    return int(requested or (227 if pre == "alexnet" else 224))
  else:   # a family whose examples keep their stored shape (series, volumes)
    return requested
  if requested not in (None, fixed):
    raise ValueError(f"image_size={requested!r} is not available for {info.name} with "
                     f"preprocess {pre!r}: it gives {fixed}x{fixed} inputs")
  return fixed


def input_shape(info, opts) -> tuple[int, ...]:
  """One example's shape as the pipeline yields it: (H, W, C) images, (L, C) series,
  (D, H, W, C) volumes (families.input_shape)."""
  return tuple(int(d) for d in families.input_shape(info, opts))


def output_shape(ds_cfg) -> tuple[int, ...]:
  """The shape of one example the pipeline yields for ``ds_cfg``."""
  info, opts = _options(ds_cfg)
  return input_shape(info, opts)


def _builder(info, opts):
  return datasets.builder(info, opts["data_dir"], download=bool(opts["download"]))


def _split(info, opts, split, which) -> str:
  return datasets.check_split(info, split or opts[f"{which}_split"])


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


def _arrays(info, opts, split):
  return families.load_arrays(info, _builder(info, opts), split, opts)


def num_examples(ds_cfg, split: str | None = None) -> int:
  """Examples in the whole ``split`` (all hosts) as the data holds them: the in-memory back
  end counts the decoded split (kept for the run that follows), streaming reads the split's
  metadata."""
  info, opts = _options(ds_cfg)
  split = _split(info, opts, split, "train")
  if info.in_memory:
    return len(_arrays(info, opts, split)[1])
  return streaming.split_size(_builder(info, opts), split)


def _memory_transform(info, opts, *, train: bool) -> memory.Transform:
  builder = _builder(info, opts) if opts["preprocess"] == "per_pixel_mean" else None
  return families.transform(info, opts, train=train, builder=builder)


def train_batches(ds_cfg, *, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Infinite host-local batches {'image': float32 [B/P, H, W, C], 'label': int32 [B/P]}.

  B = global_batch_size, P = process_count (default: jax's); batch k of the iterator is global
  step start_step + k. Raises DatasetUnavailableError / ValueError at call time, not lazily.
  """
  info, opts = _options(ds_cfg)
  p, n_proc, bh = _hosts(global_batch_size, process_index, process_count)
  if seed < 0 or start_step < 0:
    raise ValueError(f"seed={seed} and start_step={start_step} must be >= 0")
  split = _split(info, opts, None, "train")
  if info.in_memory:
    images, labels = _arrays(info, opts, split)
    it = memory.train_batches(images, labels, _memory_transform(info, opts, train=True),
                              global_batch_size=bh * n_proc, seed=seed,
                              start_step=start_step, process_index=p, process_count=n_proc)
    return memory.background(it, int(opts["prefetch"]))
  b = _builder(info, opts)
  lo, hi = streaming.host_range(streaming.split_size(b, split), p, n_proc)
  train_fn, _ = streaming.imagenet_fns(info, opts)
  return streaming.train_batches(
      b, split, train_fn, lo=lo, hi=hi, host_batch=bh, block=int(opts["shuffle_buffer"]),
      seed=seed, start_step=start_step,
      aug_key=streaming._key(seed, streams.STREAMING_AUGMENT, p, n_proc),
      parallel=int(opts["num_parallel_calls"]))


def eval_batches(ds_cfg, *, split: str | None = None, global_batch_size: int,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Finite host-local batches {'image', 'label', 'mask' (bool [B/P])} of ``split`` (default:
  the eval split): ceil(N / B) of them on every host, padding rows zero with mask False."""
  info, opts = _options(ds_cfg)
  p, n_proc, bh = _hosts(global_batch_size, process_index, process_count)
  split = _split(info, opts, split, "eval")
  if info.in_memory:
    images, labels = _arrays(info, opts, split)
    it = memory.eval_batches(images, labels, _memory_transform(info, opts, train=False),
                             global_batch_size=bh * n_proc, process_index=p,
                             process_count=n_proc)
    return memory.background(it, int(opts["prefetch"]))
  b = _builder(info, opts)
  n = streaming.split_size(b, split)
  lo, hi = streaming.host_range(n, p, n_proc)
  _, eval_fn = streaming.imagenet_fns(info, opts)
  return streaming.eval_batches(
      b, split, eval_fn, n=n, lo=lo, hi=hi, global_batch=bh * n_proc, host_batch=bh,
      image_shape=input_shape(info, opts), parallel=int(opts["num_parallel_calls"]))


def measure_throughput(ds_cfg, *, global_batch_size: int, num_batches: int = 50,
                       warmup: int = 5, train: bool = True, seed: int = 0) -> float:
  """Images per second one process gets out of the pipeline (after ``warmup`` batches,
  which absorb loading and tracing). Single-host view: process_index 0 of 1."""
  kw = dict(global_batch_size=global_batch_size, process_index=0, process_count=1)
  if train:
    it = train_batches(ds_cfg, seed=seed, **kw)
  else:
    it = _cycle(lambda: eval_batches(ds_cfg, **kw))
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
