"""One config, read once: ``resolve(config) -> RunSpec``.

ml_collections stays the user-facing format (recipe files, ``--config.x=y`` overrides). An
entry point resolves it ONCE into a frozen tree of dataclasses; every module then receives its
typed part and never reads the raw config again.

- Every key has exactly one default, in ``defaults()`` (experiments/configs/base.py hands it
  to the recipes); the input pipeline's options keep theirs in ``cnnlab.data.pipeline.DEFAULTS``.
  A config missing keys (an older ``config.json``) is completed from these; a key that is not
  in them is rejected, so every setting either takes effect or is refused with a reason.
- Every derived number is computed here, once: steps per epoch, per-host and per-device batch,
  total steps, warm-up and learning-rate boundaries in steps, the peak learning rate after
  linear scaling, the class count and the input shape.
- Every check is here (cnnlab/config_checks.py holds the key-by-key rules): a bad value is
  one ``ConfigError`` line naming the key, the value and what is allowed, before any data is
  decoded or anything compiled.

``schedule.unit`` says what ``schedule.boundaries`` count: ``"epochs"`` (default;
they follow ``--config.batch_size`` overrides) or ``"steps"``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections

from cnnlab import config_checks as checks
from cnnlab.config_checks import ConfigError

__all__ = ["ConfigError", "RunSpec", "ModelSpec", "DataSpec", "OptimSpec", "ScheduleSpec",
           "TrainSpec", "LoopSpec", "TransferSpec", "defaults", "resolve", "complete"]


# ------------------------------------------------------------------------------ the specs
@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  kwargs: Mapping[str, Any]
  dtype: str                        # float32 | bfloat16 | float16 (compute dtype)
  num_classes: int                  # resolved: the dataset's count unless set
  input_shape: tuple[int, ...]      # one example as the pipeline yields it: (H, W, C), (L, C)...
  kernels: str = "auto"             # auto (models.create chooses) | a cnnlab.models.kernels name


@dataclasses.dataclass(frozen=True)
class DataSpec:
  name: str
  options: Mapping[str, Any]        # every pipeline option, resolved (pipeline.DEFAULTS)
  train_split: str
  eval_split: str
  input_shape: tuple[int, ...]
  num_classes: int
  train_examples: int               # in the prepared train split (all hosts)


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  name: str                         # sgd | adamw | lars
  learning_rate: float              # peak, after the linear scaling rule
  momentum: float
  nesterov: bool
  b1: float
  b2: float
  eps: float
  weight_decay: float
  weight_decay_mode: str            # l2 (in the loss) | decoupled
  exclude_norm_and_bias: bool
  sdlm_mu: float = 0.02             # sdlm: eps_k = eta / (mu + h_kk) (LeCun et al. 1998, App. C)
  sdlm_hessian_samples: int = 500   # sdlm: examples the curvature is estimated on, per pass
  sdlm_curvature: str = "gauss_newton"   # sdlm: gauss_newton (exact diagonal) | paper (App. C)


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  name: str                         # constant | step | piecewise | cosine | plateau
  peak: float                       # = OptimSpec.learning_rate
  warmup_steps: int
  boundaries: tuple[int, ...]       # in steps
  values: tuple[float, ...]         # learning rate from each boundary on (len = boundaries+1)
  total_steps: int
  # plateau (optax.contrib.reduce_on_plateau on the train loss)
  plateau_factor: float
  plateau_patience: int             # measurements without improvement
  plateau_every_steps: int          # steps averaged into one measurement
  plateau_min_lr: float
  plateau_rtol: float
  plateau_cooldown: int


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  loss: str                         # cross_entropy | lenet_map
  loss_rubbish_j: float
  label_smoothing: float
  aux_loss_weight: float
  grad_accum_steps: int
  ema_decay: float                  # 0: no EMA
  online_updates: bool = False      # each step's batch as successive one-example updates


@dataclasses.dataclass(frozen=True)
class TransferSpec:
  """Starting from pretrained weights (cnnlab/training/transfer.py)."""
  init_from: str = ""               # torchvision .pth/.safetensors, or WORKDIR[:best|:latest|:STEP]
  freeze: tuple[str, ...] = ()      # regexes over parameter paths: not trained
  lr_groups: tuple[tuple[str, float], ...] = ()   # (regex, learning-rate multiplier)
  freeze_batch_stats: bool = False  # frozen modules' BatchNorm statistics kept as loaded
  linear_probe: bool = False        # train the classifier only (everything else frozen)


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  global_batch: int
  eval_batch: int
  process_count: int
  device_count: int
  host_batch: int
  device_batch: int
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int                   # 0: only at the end
  checkpoint_every: int
  keep_checkpoints: int
  checkpoint_best_only: bool        # scheduled saves only when best_metric improves
  best_metric: str                  # what ranks checkpoints ("best")
  best_mode: str                    # max | min
  report_best: bool                 # final_metrics.json from the best checkpoint's eval
  compilation_cache_dir: str | None  # the entry point applies it (None: next to the workdir)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  model: ModelSpec
  data: DataSpec
  optim: OptimSpec
  schedule: ScheduleSpec
  train: TrainSpec
  loop: LoopSpec
  seed: int
  config: Mapping[str, Any]         # the completed user config, as plain data (config.json)
  transfer: TransferSpec = TransferSpec()

  def to_config(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(_thaw(self.config))


# ------------------------------------------------------------------------------- defaults
def defaults() -> ml_collections.ConfigDict:
  """Every key with its one default. Typed ``None`` fields mean "decided by the dataset"."""
  from cnnlab.data import pipeline
  ref = ml_collections.FieldReference
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      name="", kwargs={}, dtype="float32", kernels="auto",
      num_classes=ref(None, field_type=int)))   # None: the dataset's; 0 (features) refused
  fields = {"name": ""}
  for key, default in pipeline.DEFAULTS.items():
    kind = pipeline.OPTION_TYPES.get(key, str) if default is None else type(default)
    fields[key] = ref(None, field_type=kind)
  c.dataset = ml_collections.ConfigDict(fields)
  c.batch_size = 128                # global; -1: auto (min(auto_batch_max, N // auto_batch_divisor))
  c.auto_batch_max = 16
  c.auto_batch_divisor = 10
  c.eval_batch_size = 0             # 0: batch_size
  c.num_epochs = 1.0
  c.num_train_steps = -1            # -1: from num_epochs
  c.seed = 0
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, base_batch_size=0, momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, weight_decay_mode="l2",
      exclude_norm_and_bias=True, sdlm_mu=0.02, sdlm_hessian_samples=500,
      sdlm_curvature="gauss_newton"))
  c.schedule = ml_collections.ConfigDict(dict(
      name="constant", unit="epochs", warmup_epochs=0.0, boundaries=(), decay_factor=0.1,
      rates=(), plateau_factor=0.5, plateau_patience=10, plateau_every_steps=-1,
      plateau_min_lr=0.0, plateau_rtol=1e-4, plateau_cooldown=0))
  c.loss = "cross_entropy"          # or "lenet_map" (LeCun et al. 1998, eq. 9)
  c.loss_rubbish_j = 1.0            # lenet_map's constant j
  c.label_smoothing = 0.0
  c.aux_loss_weight = 0.0
  c.grad_accum_steps = 1
  c.ema_decay = 0.0
  c.online_updates = False          # True: a step's batch = that many one-example updates
  c.init_from = ""                  # pretrained weights: a .pth/.safetensors file or WORKDIR[:best|:STEP]
  c.freeze = ""                     # comma-separated regexes over parameter paths
  c.lr_groups = ""                  # "regex=multiplier,..." learning-rate multipliers
  c.freeze_batch_stats = False      # keep frozen modules' BatchNorm statistics as loaded
  c.linear_probe = False            # train only the classifier (all else frozen, statistics too)
  c.eval_every_steps = -1           # -1: once per epoch; 0: only at the end
  c.checkpoint_every_steps = -1     # -1: once per epoch
  c.log_every_steps = 100           # -1: once per epoch
  c.keep_checkpoints = 3
  c.checkpoint_best_only = False    # True: a scheduled save only when best_metric improved
  c.best_metric = "eval_accuracy"   # ranks the "best" checkpoint; or train_loss, eval_loss...
  c.best_mode = "auto"              # auto: min for *loss metrics, else max
  c.report_best = False             # final metrics from the best checkpoint, not the last
  c.compilation_cache_dir = ref(None, field_type=str)   # None: <workdir>/../.jax_cache; "": off
  return c


def complete(config) -> ml_collections.ConfigDict:
  """``config`` over ``defaults()``: missing keys take their default, unknown keys are a
  ConfigError. Works on a ConfigDict or plain dict (e.g. a workdir's config.json)."""
  user = _thaw(config.to_dict() if hasattr(config, "to_dict") else dict(config))
  out = defaults()
  _merge(out, user, "")
  return out


def _merge(into: ml_collections.ConfigDict, user: Mapping, prefix: str) -> None:
  for key, value in user.items():
    path = f"{prefix}{key}"
    if key not in into:
      raise ConfigError(f"config.{path} is not a known key; valid keys here: "
                        f"{', '.join(sorted(into.keys()))}")
    if isinstance(into[key], ml_collections.ConfigDict) and path != "model.kwargs":
      if not isinstance(value, Mapping):
        raise ConfigError(f"config.{path}={value!r} is invalid: must be a section")
      _merge(into[key], value, path + ".")
    else:
      try:
        into[key] = value
      except TypeError:     # a typed field (FieldReference) given another type
        raise ConfigError(f"config.{path}={value!r} is invalid: expected "
                          f"{type(into[key]).__name__}") from None


def _thaw(x):
  if isinstance(x, Mapping):
    return {k: _thaw(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_thaw(v) for v in x]
  return x


# -------------------------------------------------------------------------------- resolve
def resolve(config, *, process_count: int | None = None, device_count: int | None = None,
            train_examples: int | None = None, check_model: bool = True) -> RunSpec:
  """The run ``config`` describes, validated and with every derived number computed.

  ``process_count`` / ``device_count`` default to JAX's (which starts its backend: call after
  ``jax.distributed`` and XLA flags are set). ``train_examples`` defaults to the prepared
  train split's size (read from its metadata; raises DatasetUnavailableError if it is not
  prepared). ``check_model`` traces the model on the input shape (no compile)."""
  c = complete(config)
  if process_count is None or device_count is None:
    import jax
    process_count = jax.process_count() if process_count is None else process_count
    device_count = jax.device_count() if device_count is None else device_count
  checks.check_keys(c, device_count=device_count, process_count=process_count)
  info, opts, shape = checks.check_data(c)
  num_classes = checks.check_num_classes(c, info)
  model = ModelSpec(name=c.model.name, kwargs=dict(c.model.kwargs or {}), dtype=c.model.dtype,
                    num_classes=num_classes, input_shape=tuple(shape), kernels=c.model.kernels)
  if check_model:
    checks.check_model_input(model, c)
  if train_examples is None:
    from cnnlab.data import pipeline
    train_examples = pipeline.num_examples(opts_spec(c.dataset.name, opts, info, shape),
                                           opts["train_split"])
  data = DataSpec(name=c.dataset.name, options=opts, train_split=opts["train_split"],
                  eval_split=opts["eval_split"], input_shape=tuple(shape),
                  num_classes=num_classes, train_examples=int(train_examples))
  loop = _loop(c, data, process_count, device_count)
  optim = _optim(c, loop.global_batch)
  return RunSpec(model=model, data=data, optim=optim, schedule=_schedule(c, optim, loop),
                 train=_train(c), loop=loop, seed=int(c.seed), config=c.to_dict(),
                 transfer=_transfer(c))


def resolve_optimization(config, *, global_batch: int, steps_per_epoch: int,
                         total_steps: int) -> tuple[OptimSpec, ScheduleSpec, TrainSpec]:
  """The optimizer, schedule and loss parts of ``config`` alone — no dataset or model
  consulted (for benchmarks and notebooks that feed their own batches)."""
  c = complete(config)
  checks.check_optimization(c)
  loop = dataclasses.replace(_NO_LOOP, global_batch=int(global_batch),
                             steps_per_epoch=int(steps_per_epoch), total_steps=int(total_steps))
  optim = _optim(c, loop.global_batch)
  return optim, _schedule(c, optim, loop), _train(c)


_NO_LOOP = LoopSpec(global_batch=1, eval_batch=1, process_count=1, device_count=1, host_batch=1,
                    device_batch=1, steps_per_epoch=1, total_steps=1, log_every=1, eval_every=1,
                    checkpoint_every=1, keep_checkpoints=1, checkpoint_best_only=False,
                    best_metric="eval_accuracy",
                    best_mode="max", report_best=False, compilation_cache_dir="")


def opts_spec(name, opts, info, shape) -> DataSpec:
  """A DataSpec before the split size is known (for asking the pipeline that size)."""
  return DataSpec(name=name, options=opts, train_split=opts["train_split"],
                  eval_split=opts["eval_split"], input_shape=tuple(shape),
                  num_classes=info.num_classes, train_examples=0)


def _loop(c, data: DataSpec, process_count: int, device_count: int) -> LoopSpec:
  batch = checks.check_batch(c, data.train_examples, device_count, process_count)
  eval_batch = int(c.eval_batch_size or batch)
  steps_per_epoch = data.train_examples // batch     # the pipelines drop the remainder
  if c.num_train_steps == -1:
    total = int(math.ceil(c.num_epochs * steps_per_epoch))
  else:
    total = int(c.num_train_steps)
  every = lambda v: steps_per_epoch if v == -1 else int(v)  # noqa: E731
  mode = c.best_mode
  if mode == "auto":
    mode = "min" if c.best_metric.endswith("loss") else "max"
  return LoopSpec(
      global_batch=batch, eval_batch=eval_batch, process_count=process_count,
      device_count=device_count, host_batch=batch // process_count,
      device_batch=batch // device_count, steps_per_epoch=steps_per_epoch, total_steps=total,
      log_every=every(c.log_every_steps), eval_every=every(c.eval_every_steps),
      checkpoint_every=every(c.checkpoint_every_steps), keep_checkpoints=int(c.keep_checkpoints),
      checkpoint_best_only=bool(c.checkpoint_best_only),
      best_metric=c.best_metric, best_mode=mode, report_best=bool(c.report_best),
      compilation_cache_dir=c.compilation_cache_dir)


def _optim(c, global_batch: int) -> OptimSpec:
  o = c.optimizer
  lr = float(o.learning_rate)
  if o.base_batch_size > 0:          # linear scaling rule (Goyal et al. 2017)
    lr = lr * global_batch / o.base_batch_size
  return OptimSpec(name=o.name, learning_rate=lr, momentum=float(o.momentum),
                   nesterov=bool(o.nesterov), b1=float(o.b1), b2=float(o.b2), eps=float(o.eps),
                   weight_decay=float(o.weight_decay), weight_decay_mode=o.weight_decay_mode,
                   exclude_norm_and_bias=bool(o.exclude_norm_and_bias),
                   sdlm_mu=float(o.sdlm_mu), sdlm_hessian_samples=int(o.sdlm_hessian_samples),
                   sdlm_curvature=str(o.sdlm_curvature))


def _schedule(c, optim: OptimSpec, loop: LoopSpec) -> ScheduleSpec:
  s, peak, spe = c.schedule, optim.learning_rate, loop.steps_per_epoch
  to_steps = (lambda x: int(round(float(x) * spe))) if s.unit == "epochs" else \
      (lambda x: int(round(float(x))))
  warmup = int(round(float(s.warmup_epochs) * spe))
  bounds = tuple(to_steps(b) for b in s.boundaries)
  if s.name == "step":
    values = tuple(peak * s.decay_factor ** i for i in range(len(bounds) + 1))
  elif s.name == "piecewise":
    values = tuple(float(r) * peak / float(s.rates[0]) for r in s.rates)
  else:
    values = (peak,)
    bounds = ()
  every = spe if s.plateau_every_steps == -1 else int(s.plateau_every_steps)
  return ScheduleSpec(
      name=s.name, peak=peak, warmup_steps=warmup, boundaries=bounds, values=values,
      total_steps=loop.total_steps, plateau_factor=float(s.plateau_factor),
      plateau_patience=int(s.plateau_patience), plateau_every_steps=max(1, every),
      plateau_min_lr=float(s.plateau_min_lr), plateau_rtol=float(s.plateau_rtol),
      plateau_cooldown=int(s.plateau_cooldown))


def _train(c) -> TrainSpec:
  return TrainSpec(loss=c.loss, loss_rubbish_j=float(c.loss_rubbish_j),
                   label_smoothing=float(c.label_smoothing),
                   aux_loss_weight=float(c.aux_loss_weight),
                   grad_accum_steps=int(c.grad_accum_steps), ema_decay=float(c.ema_decay),
                   online_updates=bool(c.online_updates))


def _transfer(c) -> TransferSpec:
  patterns = tuple(p.strip() for p in str(c.freeze).split(",") if p.strip())
  return TransferSpec(init_from=str(c.init_from), freeze=patterns,
                      lr_groups=checks.check_lr_groups(c.lr_groups),
                      freeze_batch_stats=bool(c.freeze_batch_stats or c.linear_probe),
                      linear_probe=bool(c.linear_probe))
