"""The shape of a run: the typed specs ``resolve`` produces, and the ONE default of every key.

ml_collections stays the user-facing format (recipe files, ``--config.x=y`` overrides). An
entry point resolves it ONCE into a frozen tree of dataclasses (``RunSpec``); every module then
receives its typed part and never reads the raw config again.

- Every key has exactly one default, in ``defaults()`` (experiments/configs/base.py hands it to
  the recipes); the dataset options included (``DATASET_OPTIONS``), whichever family reads them.
  A config missing keys (an older ``config.json``) is completed from these; a key that is not in
  them is rejected, so every setting either takes effect or is refused with a reason.
- ``schedule.unit`` says what ``schedule.boundaries`` count: ``"epochs"`` (default; they follow
  ``--config.batch_size`` overrides) or ``"steps"``.
- ``RESOLVED_KEY``: config.json also records what resolution decided (the concrete kernel set
  and why, split sizes, batches); ``complete`` drops that section when a saved config is read.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from cnnlab.config.errors import ConfigError
from cnnlab.config.facts import DatasetFacts

RESOLVED_KEY = "resolved"

# Every dataset option with its default (None: decided by the dataset's family). Which family
# reads which is the family's business (cnnlab.data.families); an option changed from its
# default for a family that does not read it is refused.
DATASET_OPTIONS = dict(
    data_dir=None, preprocess=None, image_size=None, eval_resize=256, shuffle_buffer=10_000,
    train_split=None, eval_split=None, augment=True, crop_area_min=0.08, scale_min=256,
    scale_max=512, pca_lighting=0.0, prefetch=2, num_parallel_calls=-1, download=False,
    series_length=None, series_lengths=None, pad_seed=0, crop_shape=None,
    flip_axes=(0, 1, 2),
    # segmentation (cnnlab/data/families/segmentation.py)
    rot90=False, scale_range=None, elastic_prob=0.0, elastic_grid=3, elastic_sigma=10.0,
    crop_foreground_prob=0.0, border_w0=0.0, border_sigma=5.0, window=None,
    tile_shape=None, tile_overlap=0.25, tile_blend="gaussian", tile_batch=4)
# The type of an option whose default is None (what --config.dataset.x=... parses to).
OPTION_TYPES = {"data_dir": str, "preprocess": str, "image_size": int, "train_split": str,
                "eval_split": str, "series_length": int, "series_lengths": str,
                "crop_shape": tuple, "scale_range": tuple, "window": str, "tile_shape": tuple}


# ------------------------------------------------------------------------------ the specs
@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  kwargs: Mapping[str, Any]
  dtype: str                        # float32 | bfloat16 | float16 (compute dtype)
  num_classes: int                  # resolved: the dataset's count unless set
  input_shape: tuple[int, ...]      # one example as the pipeline yields it: (H, W, C), (L, C)...
  kernels: str = "plain"            # the concrete kernel set (resolve decides 'auto')
  kernels_why: str = ""             # one line: why that set (written to config.json)
  task: str = "classify"            # classify | segment (the dataset's)


@dataclasses.dataclass(frozen=True)
class DataSpec:
  name: str
  options: Mapping[str, Any]        # every dataset option, resolved by the dataset's family
  train_split: str
  eval_split: str
  input_shape: tuple[int, ...]
  num_classes: int
  train_examples: int               # in the train split (all hosts), from the metadata
  eval_examples: int
  facts: DatasetFacts               # what the data layer described (family, classes, sizes)

  @property
  def family(self):
    return self.facts.family


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
  loss: str                         # a registered loss (cnnlab.config.registry)
  loss_rubbish_j: float
  label_smoothing: float
  aux_loss_weight: float
  grad_accum_steps: int
  ema_decay: float                  # 0: no EMA
  class_weights: tuple[float, ...] = ()   # segmentation losses: per-class weights (() none)
  dice_include_background: bool = True    # soft Dice: class 0 in the mean
  step: str = "standard"            # a registered step kind ('online' from cnnlab.proj)


@dataclasses.dataclass(frozen=True)
class TransferSpec:
  """Starting from pretrained weights (cnnlab/training/transfer.py)."""
  init_from: str = ""               # torchvision .pth/.safetensors, or WORKDIR[:best|:latest|:STEP]
  freeze: tuple[str, ...] = ()      # regexes over parameter paths: not trained
  lr_groups: tuple[tuple[str, float], ...] = ()   # (regex, learning-rate multiplier)
  freeze_batch_stats: bool = False  # frozen modules' BatchNorm statistics kept as loaded
  linear_probe: bool = False        # train the classifier only (everything else frozen)
  keep_head: bool = False           # keep the source's classifier although the dataset differs


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

  def record(self) -> dict:
    """What config.json holds: the completed config, and under ``resolved`` what resolution
    decided from it (informational; ``complete`` ignores it when the file is read back)."""
    return {**_thaw(self.config), RESOLVED_KEY: {
        "kernels": self.model.kernels, "kernels_why": self.model.kernels_why,
        "input_shape": list(self.model.input_shape), "num_classes": self.model.num_classes,
        "train_examples": self.data.train_examples, "eval_examples": self.data.eval_examples,
        "global_batch": self.loop.global_batch, "steps_per_epoch": self.loop.steps_per_epoch,
        "total_steps": self.loop.total_steps, "devices": self.loop.device_count,
        "processes": self.loop.process_count}}


# ------------------------------------------------------------------------------- defaults
def defaults() -> ml_collections.ConfigDict:
  """Every key with its one default. Typed ``None`` fields mean "decided by the dataset"."""
  ref = ml_collections.FieldReference
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      name="", kwargs={}, dtype="float32", kernels="auto",
      num_classes=ref(None, field_type=int)))   # None: the dataset's; 0 (features) refused
  fields = {"name": ""}
  for key, default in DATASET_OPTIONS.items():
    kind = OPTION_TYPES[key] if default is None else type(default)
    fields[key] = ref(default, field_type=kind) if default is None else default
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
  c.loss = "cross_entropy"          # a registered loss (cnnlab.config.registry.names("loss"))
  c.loss_rubbish_j = 1.0            # lenet_map's constant j (cnnlab.proj.lecun1998)
  c.label_smoothing = 0.0
  c.class_weights = ()              # segmentation: per-class loss weights, () for none
  c.dice_include_background = True  # segmentation: class 0 in the soft Dice mean
  c.aux_loss_weight = 0.0
  c.grad_accum_steps = 1
  c.ema_decay = 0.0
  c.online_updates = False          # True: a step's batch = that many one-example updates
                                    # (the 'online' step kind of cnnlab.proj.lecun1998)
  c.init_from = ""                  # pretrained weights: a .pth/.safetensors file or WORKDIR[:best|:STEP]
  c.freeze = ""                     # comma-separated regexes over parameter paths
  c.lr_groups = ""                  # "regex=multiplier,..." learning-rate multipliers
  c.freeze_batch_stats = False      # keep frozen modules' BatchNorm statistics as loaded
  c.linear_probe = False            # train only the classifier (all else frozen, statistics too)
  c.keep_head = False               # init_from: keep the source's classifier on a new dataset
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
  user = _thaw(config.to_dict() if isinstance(config, ml_collections.ConfigDict)
               else dict(config))
  user.pop(RESOLVED_KEY, None)
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
    elif value is None and prefix == "dataset.":
      continue             # None: the option's default (config.json of older runs says null)
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
