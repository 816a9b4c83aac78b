"""The rules ``cnnlab.config.resolve`` applies, key by key. Each failure is one ``ConfigError``
line: the key, the bad value and what is allowed (entry points print it and exit 2).

The config reaching these functions is complete (``schema.complete``): every key is present.
Names of pluggable parts (models, kernel sets, losses, optimizers, step kinds) are checked
against what the layers above registered (``registry``); the dataset's options against its
family, which the facts carry. Nothing here reads a file or builds a model.
"""
from __future__ import annotations

import math
import re

from cnnlab.config import registry
from cnnlab.config.errors import ConfigError, fail

SCHEDULES = ("constant", "step", "piecewise", "cosine", "plateau")
SCHEDULE_UNITS = ("epochs", "steps")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
DTYPES = ("float32", "bfloat16", "float16")
BEST_MODES = ("auto", "max", "min")
BEST_METRICS = ("eval_accuracy", "eval_top5", "eval_loss", "train_loss", "eval_mean_dice",
                "eval_mean_iou", "eval_pixel_error")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def value_at(c, key: str):
  for part in key.split("."):
    c = c[part]
  return c


def positive(c, key: str, *, integer: bool, allow_minus_one: bool = False) -> None:
  value = value_at(c, key)
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
    fail(key, value, f"one of {', '.join(map(str, allowed))}")


def registered(c, key: str, kind: str, label: str | None = None) -> None:
  """``config.<key>`` names a registered ``kind``; then that name's own rule, if any."""
  name = value_at(c, key)
  if not registry.known(kind, name):
    valid = ", ".join(registry.names(kind))
    fail(key, name, f"valid {label}: {valid}" if label else f"one of {valid}")
  rule = registry.rule(kind, name)
  if rule is not None:
    rule(c)


def check_keys(c, *, device_count: int, process_count: int) -> None:
  """Everything that needs neither the dataset nor the model. Raises the first problem."""
  registered(c, "model.name", "model", "models")
  one_of("model.dtype", c.model.dtype, DTYPES)
  if c.model.kernels != "auto":
    one_of("model.kernels", c.model.kernels, ("auto", *registry.names("kernels")))
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
  """The loss, optimizer and schedule keys (needing neither data nor devices)."""
  registered(c, "loss", "loss")
  _check_optimizer(c)
  _check_schedule(c)
  if not isinstance(c.online_updates, bool):
    fail("online_updates", c.online_updates, "must be True or False")
  if c.online_updates:
    if not registry.known("step", "online"):
      fail("online_updates", True, "no 'online' step kind is registered (it comes with "
           "cnnlab.proj.lecun1998)")
    rule = registry.rule("step", "online")
    if rule is not None:
      rule(c)


def _check_training(c, device_count: int) -> None:
  accum = c.grad_accum_steps
  per_device = c.batch_size // device_count if c.batch_size > 0 else None
  if not isinstance(accum, int) or accum < 1 or (per_device and per_device % accum):
    fail("grad_accum_steps", accum, "must be >= 1 and divide the per-device batch "
         f"{per_device if per_device else '(auto)'}")
  in_range("label_smoothing", c.label_smoothing, 0.0, 1.0, "must be in [0, 1)")
  in_range("ema_decay", c.ema_decay, 0.0, 1.0, "must be in [0, 1) (0 disables the EMA)")
  if c.aux_loss_weight < 0:
    fail("aux_loss_weight", c.aux_loss_weight, "must be >= 0")
  one_of("best_metric", c.best_metric, BEST_METRICS)
  one_of("best_mode", c.best_mode, BEST_MODES)


def _check_optimizer(c) -> None:
  o = c.optimizer
  registered(c, "optimizer.name", "optimizer")
  positive(c, "optimizer.learning_rate", integer=False)
  if o.weight_decay < 0:
    fail("optimizer.weight_decay", o.weight_decay, "must be >= 0")
  one_of("optimizer.weight_decay_mode", o.weight_decay_mode, WEIGHT_DECAY_MODES)
  in_range("optimizer.momentum", o.momentum, 0.0, 1.0, "must be in [0, 1)")
  if o.base_batch_size < 0:
    fail("optimizer.base_batch_size", o.base_batch_size, "must be >= 0 (0: no scaling)")


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
    _check_plateau(c)


def _check_plateau(c) -> None:
  s = c.schedule
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


# ------------------------------------------------------------------------------- transfer
def compile_patterns(patterns, what: str) -> list[re.Pattern]:
  """Regular expressions, or a one-line ConfigError naming the one that does not compile."""
  out = []
  for pattern in patterns:
    try:
      out.append(re.compile(pattern))
    except re.error as e:
      raise ConfigError(f"{what} pattern {pattern!r} is not a regular expression: {e}")
  return out


def parse_lr_groups(spec) -> tuple[tuple[str, float], ...]:
  """'regex=mult,regex=mult' (or pairs) -> ((regex, mult), ...); mult must be >= 0."""
  if isinstance(spec, str):
    pairs = []
    for item in (x.strip() for x in spec.split(",")):
      if not item:
        continue
      pattern, sep, mult = item.rpartition("=")
      if not sep or not pattern:
        raise ConfigError(f"lr_groups item {item!r} is not REGEX=MULTIPLIER")
      pairs.append((pattern, mult))
  else:
    pairs = list(spec)
  out = []
  for pattern, mult in pairs:
    try:
      m = float(mult)
    except ValueError:
      m = -1.0
    if not m >= 0:
      raise ConfigError(f"lr_groups multiplier {mult!r} for {pattern!r} must be a number >= 0")
    out.append((str(pattern), m))
  return tuple(out)


def check_lr_groups(value) -> tuple:
  """'regex=multiplier,...' -> ((regex, multiplier), ...), one line on a bad item."""
  try:
    groups = parse_lr_groups(value or "")
    compile_patterns([p for p, _ in groups], "lr_groups")
    return groups
  except ConfigError as e:
    raise ConfigError(f"config.lr_groups={value!r} is invalid: {e}") from None


def freeze_patterns(value: str) -> tuple[str, ...]:
  return tuple(p.strip() for p in str(value).split(",") if p.strip())


def check_transfer(c) -> None:
  for key in ("init_from", "freeze", "lr_groups"):
    if not isinstance(c[key], str):
      fail(key, c[key], "must be a string")
  # init_from's file or workdir is read (and checked) only when a run starts fresh, before any
  # compile: a fine-tuned run must still resume, evaluate and predict once its source is gone.
  compile_patterns(freeze_patterns(c.freeze), "freeze")
  if not isinstance(c.keep_head, bool):
    fail("keep_head", c.keep_head, "must be True or False")


# ------------------------------------------------------------------------- data and batch
def check_num_classes(c, facts) -> int:
  n = c.model.num_classes
  if n is None:
    return facts.num_classes
  if n == 0:
    fail("model.num_classes", n, "0 builds a features-only model (no classifier head), "
         f"which cannot be trained; leave it unset for {facts.name}'s {facts.num_classes} "
         "classes")
  if n != facts.num_classes:
    fail("model.num_classes", n, f"{facts.name} has {facts.num_classes} classes")
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
