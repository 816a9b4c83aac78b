"""Config validation: every mistake found before anything is compiled or loaded, reported as
one ``ConfigError`` line naming the key, the bad value and what is allowed.

experiments/train.py turns a ConfigError into that one line on stderr and exit status 2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnlab import models
from cnnlab.data import datasets, pipeline
from cnnlab.training import optim

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ConfigError(ValueError):
  """A bad config value; the message is one line."""


def _fail(key: str, value, allowed: str):
  raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}")


def _positive(config, key: str, *, integer: bool, allow_minus_one: bool = False):
  node, _, leaf = key.rpartition(".")
  holder = config
  for part in filter(None, node.split(".")):
    holder = holder[part]
  value = holder.get(leaf, None)
  if allow_minus_one and value == -1:
    return
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
  if integer:
    ok = ok and float(value).is_integer()
  if not ok:
    _fail(key, value, f"must be a positive {'integer' if integer else 'number'}"
          + (" (or -1)" if allow_minus_one else ""))


def dataset_info(config):
  name = config.dataset.get("name", None)
  if name not in datasets.names():
    _fail("dataset.name", name, f"valid datasets: {', '.join(datasets.names())}")
  return datasets.get(name)


def train_split(config) -> str:
  return config.dataset.get("train_split", None) or dataset_info(config).train_split


def eval_split(config) -> str:
  return config.dataset.get("eval_split", None) or dataset_info(config).eval_split


def eval_batch_size(config, mesh=None) -> int:
  return int(config.get("eval_batch_size", 0) or config.batch_size)


def image_shape(config) -> tuple[int, int, int]:
  return tuple(pipeline.output_shape(config.dataset))


def num_classes(config) -> int:
  return int(config.model.get("num_classes", 0) or dataset_info(config).num_classes)


def build_model(config):
  kwargs = dict(config.model.get("kwargs", {}) or {})
  dtype = config.model.get("dtype", "float32")
  try:
    return models.create(config.model.name, num_classes=num_classes(config),
                         dtype=DTYPES[dtype], **kwargs)
  except TypeError as e:
    _fail("model.kwargs", kwargs, f"not accepted by {config.model.name}: {e}")


def validate(config, device_count: int | None = None) -> None:
  """Raises ConfigError for the first problem found. Cheap: no data read, nothing compiled."""
  name = config.model.get("name", None)
  if name not in models.names():
    _fail("model.name", name, f"valid models: {', '.join(models.names())}")
  info = dataset_info(config)
  for key in ("train_split", "eval_split"):
    split = config.dataset.get(key, None)
    if split is not None and split not in info.splits:
      _fail(f"dataset.{key}", split, f"{info.name} has splits {', '.join(info.splits)}")
  pre = config.dataset.get("preprocess", None)
  if pre is not None and pre not in info.preprocess_options:
    _fail("dataset.preprocess", pre, f"{info.name} allows {', '.join(info.preprocess_options)}")
  try:
    pipeline.output_shape(config.dataset)
  except ValueError as e:  # the pipeline's own option checks (image_size, preprocess, ...)
    raise ConfigError(f"config.dataset.{e}") from None
  dtype = config.model.get("dtype", "float32")
  if dtype not in DTYPES:
    _fail("model.dtype", dtype, f"one of {', '.join(DTYPES)}")
  if config.model.get("num_classes", 0) and config.model.num_classes != info.num_classes:
    _fail("model.num_classes", config.model.num_classes,
          f"{info.name} has {info.num_classes} classes")

  _positive(config, "batch_size", integer=True)
  if config.get("eval_batch_size", 0):
    _positive(config, "eval_batch_size", integer=True)
  n_dev = device_count or jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    b = config.get(key, 0)
    if b and (b % n_dev or b % jax.process_count()):
      _fail(key, b, f"must be a multiple of the device count {n_dev} "
            f"(and process count {jax.process_count()})")
  if int(config.get("num_train_steps", -1)) == -1:
    _positive(config, "num_epochs", integer=False)
  else:
    _positive(config, "num_train_steps", integer=True)
  seed = config.get("seed", None)
  if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
    _fail("seed", seed, "must be a non-negative integer")
  for key in ("log_every_steps", "checkpoint_every_steps", "eval_every_steps"):
    value = config.get(key, -1)
    if not isinstance(value, int) or (value < -1) or (value == 0 and key != "eval_every_steps"):
      _fail(key, value, "must be a positive integer or -1 (once per epoch)"
            + (", or 0 (only at the end)" if key == "eval_every_steps" else ""))
  accum = int(config.get("grad_accum_steps", 1))
  if accum < 1 or (config.batch_size // n_dev) % accum:
    _fail("grad_accum_steps", accum, f"must be >= 1 and divide the per-device batch "
          f"{config.batch_size // n_dev}")
  from cnnlab.training import steps
  if config.get("loss", "cross_entropy") not in steps.LOSSES:
    _fail("loss", config.loss, f"one of {', '.join(steps.LOSSES)}")
  ls = config.get("label_smoothing", 0.0)
  if not 0.0 <= ls < 1.0:
    _fail("label_smoothing", ls, "must be in [0, 1)")
  ema = config.get("ema_decay", 0.0)
  if not 0.0 <= ema < 1.0:
    _fail("ema_decay", ema, "must be in [0, 1) (0 disables the EMA)")

  opt = config.optimizer
  if opt.get("name", None) not in optim.OPTIMIZERS:
    _fail("optimizer.name", opt.get("name", None), f"one of {', '.join(optim.OPTIMIZERS)}")
  _positive(config, "optimizer.learning_rate", integer=False)
  if opt.get("weight_decay", 0.0) < 0:
    _fail("optimizer.weight_decay", opt.weight_decay, "must be >= 0")
  if opt.get("weight_decay_mode", "l2") not in optim.WEIGHT_DECAY_MODES:
    _fail("optimizer.weight_decay_mode", opt.weight_decay_mode,
          f"one of {', '.join(optim.WEIGHT_DECAY_MODES)}")
  if not 0.0 <= opt.get("momentum", 0.0) < 1.0:
    _fail("optimizer.momentum", opt.momentum, "must be in [0, 1)")
  sched = config.schedule
  if sched.get("name", None) not in optim.SCHEDULES:
    _fail("schedule.name", sched.get("name", None), f"one of {', '.join(optim.SCHEDULES)}")
  if sched.get("warmup_epochs", 0) < 0:
    _fail("schedule.warmup_epochs", sched.warmup_epochs, "must be >= 0")
  bounds = list(sched.get("boundaries", []) or [])
  if bounds != sorted(bounds) or any(b <= 0 for b in bounds):
    _fail("schedule.boundaries", bounds, "must be positive epochs in increasing order")
  if sched.name == "piecewise" and len(sched.get("rates", []) or []) != len(bounds) + 1:
    _fail("schedule.rates", list(sched.get("rates", []) or []),
          f"piecewise needs len(boundaries)+1 = {len(bounds) + 1} learning rates")
  if sched.name == "step" and not 0 < sched.get("decay_factor", 0.1) <= 1:
    _fail("schedule.decay_factor", sched.decay_factor, "must be in (0, 1]")

  check_model_input(config)


def check_model_input(config) -> None:
  """Traces (does not compile) the model on the dataset's image shape."""
  model = build_model(config)
  shape = image_shape(config)
  try:
    out = jax.eval_shape(
        lambda x: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                             x, train=False), jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    bad = any(0 in leaf.shape for leaf in jax.tree.leaves(out))
  except Exception as e:  # shape errors surface as various exception types
    bad, err = True, e
  else:
    err = None
  if bad:
    size = config.dataset.get("image_size", None) or shape[0]
    minimum = models.info(config.model.name).input_shape
    raise ConfigError(
        f"config.dataset.image_size={size!r} ({shape[0]}x{shape[1]}x{shape[2]} inputs) is too "
        f"small for model {config.model.name!r}, which expects about "
        f"{minimum[0]}x{minimum[1]}x{minimum[2]}" + (f" ({type(err).__name__})" if err else ""))
