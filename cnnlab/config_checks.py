"""The rules ``cnnlab.config.resolve`` applies, key by key. Each failure is one ``ConfigError``
line: the key, the bad value and what is allowed (entry points print it and exit 2).

The config reaching these functions is complete (``config.complete``): every key is present.
"""
from __future__ import annotations

import math

LOSSES = ("cross_entropy", "lenet_map")
OPTIMIZERS = ("sgd", "adamw", "lars", "sdlm")
SCHEDULES = ("constant", "step", "piecewise", "cosine", "plateau")
SCHEDULE_UNITS = ("epochs", "steps")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
DTYPES = ("float32", "bfloat16", "float16")
BEST_MODES = ("auto", "max", "min")
BEST_METRICS = ("eval_accuracy", "eval_top5", "eval_loss", "train_loss")


class ConfigError(ValueError):
  """A bad config value; the message is one line."""


def fail(key: str, value, allowed: str):
  raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive(c, key: str, *, integer: bool, allow_minus_one: bool = False) -> None:
  value = c
  for part in key.split("."):
    value = value[part]
  if allow_minus_one and value == -1:
    return
  ok = _number(value) and value > 0 and (not integer or float(value).is_integer())
  if not ok:
    fail(key, value, f"must be a positive {'integer' if integer else 'number'}"
         + (" (or -1)" if allow_minus_one else ""))


def in_range(key: str, value, lo: float, hi: float, text: str) -> None:
  if not _number(value) or not lo <= value < hi:
    fail(key, value, text)


def one_of(key: str, value, allowed) -> None:
  if value not in allowed:
    fail(key, value, f"one of {', '.join(allowed)}")


def kernel_names() -> tuple[str, ...]:
  """The model formulations one can ask for by name (cnnlab.models.kernels.NAMES)."""
  try:
    from cnnlab.models import kernels
  except ImportError:
    return ()
  return tuple(getattr(kernels, "NAMES", ()))


def check_keys(c, *, device_count: int, process_count: int) -> None:
  """Everything that needs neither the dataset nor the model. Raises the first problem."""
  from cnnlab import models
  if c.model.name not in models.names():
    fail("model.name", c.model.name, f"valid models: {', '.join(models.names())}")
  one_of("model.dtype", c.model.dtype, DTYPES)
  if c.model.kernels != "auto":
    one_of("model.kernels", c.model.kernels, ("auto", *kernel_names()))
  if c.batch_size != -1:
    positive(c, "batch_size", integer=True)
  if c.eval_batch_size:
    positive(c, "eval_batch_size", integer=True)
  for key in ("batch_size", "eval_batch_size"):
    b = c[key]
    if b > 0 and (b % device_count or b % process_count):
      fail(key, b, f"must be a multiple of the device count {device_count} "
           f"(and process count {process_count})")
  if c.num_train_steps == -1:
    positive(c, "num_epochs", integer=False)
  else:
    positive(c, "num_train_steps", integer=True)
  if not isinstance(c.seed, int) or isinstance(c.seed, bool) or c.seed < 0:
    fail("seed", c.seed, "must be a non-negative integer")
  for key in ("log_every_steps", "checkpoint_every_steps", "eval_every_steps"):
    value = c[key]
    if not isinstance(value, int) or value < -1 or (value == 0 and key != "eval_every_steps"):
      fail(key, value, "must be a positive integer or -1 (once per epoch)"
           + (", or 0 (only at the end)" if key == "eval_every_steps" else ""))
  positive(c, "keep_checkpoints", integer=True)
  _check_training(c, device_count)
  check_optimization(c)
  check_transfer(c)


def check_optimization(c) -> None:
  """The optimizer and schedule keys (needing neither data nor devices)."""
  one_of("loss", c.loss, LOSSES)
  _check_optimizer(c)
  _check_schedule(c)


def _check_training(c, device_count: int) -> None:
  accum = c.grad_accum_steps
  per_device = c.batch_size // device_count if c.batch_size > 0 else None
  if not isinstance(accum, int) or accum < 1 or (per_device and per_device % accum):
    fail("grad_accum_steps", accum, "must be >= 1 and divide the per-device batch "
         f"{per_device if per_device else '(auto)'}")
  one_of("loss", c.loss, LOSSES)
  in_range("label_smoothing", c.label_smoothing, 0.0, 1.0, "must be in [0, 1)")
  in_range("ema_decay", c.ema_decay, 0.0, 1.0, "must be in [0, 1) (0 disables the EMA)")
  if c.aux_loss_weight < 0:
    fail("aux_loss_weight", c.aux_loss_weight, "must be >= 0")
  if c.best_metric not in BEST_METRICS:
    fail("best_metric", c.best_metric, f"one of {', '.join(BEST_METRICS)}")
  one_of("best_mode", c.best_mode, BEST_MODES)


def _check_optimizer(c) -> None:
  o = c.optimizer
  one_of("optimizer.name", o.name, OPTIMIZERS)
  positive(c, "optimizer.learning_rate", integer=False)
  if o.weight_decay < 0:
    fail("optimizer.weight_decay", o.weight_decay, "must be >= 0")
  one_of("optimizer.weight_decay_mode", o.weight_decay_mode, WEIGHT_DECAY_MODES)
  in_range("optimizer.momentum", o.momentum, 0.0, 1.0, "must be in [0, 1)")
  if o.base_batch_size < 0:
    fail("optimizer.base_batch_size", o.base_batch_size, "must be >= 0 (0: no scaling)")
  if o.name == "sdlm":
    positive(c, "optimizer.sdlm_mu", integer=False)
    positive(c, "optimizer.sdlm_hessian_samples", integer=True)
    if not c.online_updates:
      fail("optimizer.name", o.name, "sdlm re-estimates its curvature once per pass and "
           "steps one example at a time: set online_updates=True")
    one_of("optimizer.sdlm_curvature", o.sdlm_curvature, ("gauss_newton", "paper"))
    if o.sdlm_curvature == "paper" and (c.model.name != "lenet5_1998" or c.loss != "lenet_map"):
      fail("optimizer.sdlm_curvature", o.sdlm_curvature, "'paper' (LeCun et al. 1998, App. C) "
           "is implemented for model lenet5_1998 with loss lenet_map only")
  _check_online(c)


def _check_online(c) -> None:
  """Online updates: one example at a time inside the step (cnnlab/training/online.py)."""
  if not isinstance(c.online_updates, bool):
    fail("online_updates", c.online_updates, "must be True or False")
  if not c.online_updates:
    return
  if c.schedule.name == "plateau":
    fail("schedule.name", c.schedule.name, "plateau is not available with online_updates")
  if c.grad_accum_steps != 1:
    fail("grad_accum_steps", c.grad_accum_steps, "must be 1 with online_updates")
  if c.ema_decay:
    fail("ema_decay", c.ema_decay, "must be 0 with online_updates")
  if c.optimizer.weight_decay:
    fail("optimizer.weight_decay", c.optimizer.weight_decay,
         "must be 0 with online_updates (not implemented there)")


def check_lr_groups(value) -> tuple:
  """'regex=multiplier,...' -> ((regex, multiplier), ...), one line on a bad item."""
  from cnnlab.training import transfer
  try:
    groups = transfer.parse_lr_groups(value or "")
    transfer.compile_patterns([p for p, _ in groups], "lr_groups")
    return groups
  except transfer.TransferError as e:
    raise ConfigError(f"config.lr_groups={value!r} is invalid: {e}") from None


def check_transfer(c) -> None:
  from cnnlab.training import transfer
  for key in ("init_from", "freeze", "lr_groups"):
    if not isinstance(c[key], str):
      fail(key, c[key], "must be a string")
  # init_from's file or workdir is read (and checked) only when a run starts fresh, before any
  # compile: a fine-tuned run must still resume, evaluate and predict once its source is gone.
  try:
    transfer.compile_patterns([p.strip() for p in c.freeze.split(",") if p.strip()], "freeze")
  except transfer.TransferError as e:
    raise ConfigError(str(e)) from None   # lr_groups: parsed and checked once, by resolve()


def _check_schedule(c) -> None:
  s = c.schedule
  one_of("schedule.name", s.name, SCHEDULES)
  one_of("schedule.unit", s.unit, SCHEDULE_UNITS)
  if s.warmup_epochs < 0:
    fail("schedule.warmup_epochs", s.warmup_epochs, "must be >= 0")
  bounds = list(s.boundaries or [])
  if bounds != sorted(bounds) or any(b <= 0 for b in bounds):
    fail("schedule.boundaries", bounds, f"must be positive {s.unit} in increasing order")
  if s.name == "piecewise" and len(s.rates or []) != len(bounds) + 1:
    fail("schedule.rates", list(s.rates or []),
         f"piecewise needs len(boundaries)+1 = {len(bounds) + 1} learning rates")
  if s.name == "piecewise" and any(not _number(r) or r <= 0 for r in s.rates):
    fail("schedule.rates", list(s.rates), "must be positive learning rates")
  if s.name == "step" and not (_number(s.decay_factor) and 0 < s.decay_factor <= 1):
    fail("schedule.decay_factor", s.decay_factor, "must be in (0, 1]")
  if s.name == "plateau":
    if not (_number(s.plateau_factor) and 0 < s.plateau_factor < 1):
      fail("schedule.plateau_factor", s.plateau_factor, "must be in (0, 1)")
    if not isinstance(s.plateau_patience, int) or s.plateau_patience < 1:
      fail("schedule.plateau_patience", s.plateau_patience, "must be a positive integer")
    if s.plateau_every_steps != -1:
      positive(c, "schedule.plateau_every_steps", integer=True, allow_minus_one=True)
    if not (_number(s.plateau_min_lr) and 0 <= s.plateau_min_lr <= c.optimizer.learning_rate):
      fail("schedule.plateau_min_lr", s.plateau_min_lr,
           f"must be in [0, optimizer.learning_rate={c.optimizer.learning_rate}]")
    if s.warmup_epochs:
      fail("schedule.warmup_epochs", s.warmup_epochs, "plateau has no warm-up (use 0)")


def check_data(c):
  """(catalogue entry, resolved pipeline options, input shape); ConfigError otherwise."""
  from cnnlab.data import datasets, pipeline
  ds = c.dataset
  try:   # the catalogue entry, with a local dataset's prepared metadata (classes, shape)
    info = datasets.describe(ds.name, ds.data_dir)
  except ValueError as e:
    fail("dataset.name", ds.name, "valid datasets: " + str(e).split("valid datasets are ")[-1])
  for key in ("train_split", "eval_split"):
    if ds[key] is not None:
      try:
        datasets.check_split(info, ds[key])
      except ValueError:
        fail(f"dataset.{key}", ds[key], f"{info.name} has splits {', '.join(info.splits)} "
             "(optionally sliced, e.g. train[:1000])")
  if ds.preprocess is not None and ds.preprocess not in info.preprocess_options:
    fail("dataset.preprocess", ds.preprocess,
         f"{info.name} allows {', '.join(info.preprocess_options)}")
  try:
    opts = pipeline.resolve_options(ds)
    shape = pipeline.input_shape(info, opts)
  except ValueError as e:  # the pipeline's own option checks (image_size, ...)
    raise ConfigError(f"config.dataset.{e}") from None
  return info, opts, shape


def check_num_classes(c, info) -> int:
  n = c.model.num_classes
  if n is None:
    return info.num_classes
  if n == 0:
    fail("model.num_classes", n, "0 builds a features-only model (no classifier head), "
         f"which cannot be trained; leave it unset for {info.name}'s {info.num_classes} classes")
  if n != info.num_classes:
    fail("model.num_classes", n, f"{info.name} has {info.num_classes} classes")
  return int(n)


def check_batch(c, train_examples: int, device_count: int, process_count: int) -> int:
  """The global batch: as configured, or the auto rule min(auto_batch_max, N //
  auto_batch_divisor) rounded down to a multiple of the device and process counts."""
  batch = c.batch_size
  if batch == -1:
    positive(c, "auto_batch_max", integer=True)
    positive(c, "auto_batch_divisor", integer=True)
    unit = math.lcm(device_count, process_count)
    batch = min(c.auto_batch_max, train_examples // c.auto_batch_divisor)
    batch = max(unit, batch // unit * unit)
    accum = c.grad_accum_steps
    if (batch // device_count) % accum:
      fail("grad_accum_steps", accum, f"must divide the per-device batch "
           f"{batch // device_count} (auto batch {batch})")
  if batch > train_examples:
    fail("batch_size", batch, f"larger than the train split ({train_examples} examples)")
  return int(batch)


def check_model_input(model_spec, c) -> None:
  """Builds the model and traces (does not compile) it on one example of the input shape."""
  import jax
  import jax.numpy as jnp
  from cnnlab import models
  from cnnlab.training import builders
  try:
    model = builders.model(model_spec)
  except TypeError as e:
    fail("model.kwargs", dict(model_spec.kwargs), f"not accepted by {model_spec.name}: {e}")
  shape = model_spec.input_shape
  err = None
  try:
    out = jax.eval_shape(
        lambda x: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                             x, train=False), jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    bad = any(0 in leaf.shape for leaf in jax.tree.leaves(out))
  except Exception as e:  # shape errors surface as various exception types
    bad, err = True, e
  if bad:
    size = c.dataset.image_size or shape[0]
    expects = "x".join(map(str, models.info(model_spec.name).input_shape))
    raise ConfigError(
        f"config.dataset.image_size={size!r} ({'x'.join(map(str, shape))} inputs) is too "
        f"small for model {model_spec.name!r}, which expects about {expects}"
        + (f" ({type(err).__name__})" if err else ""))
