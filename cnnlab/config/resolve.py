"""``resolve(config, facts, devices) -> RunSpec``: the run a config describes, checked, with
every derived number computed once. Pure: it reads no file, decodes no example and builds no
model — what it needs to know about the dataset and the devices it is told (``facts``), and the
dataset's family object (carried by the facts) judges the dataset options.

Derived here: the class count and input shape, the split sizes (slices included), the global /
per-host / per-device batch, steps per epoch and in total, warm-up and learning-rate boundaries
in steps, the peak learning rate after linear scaling, and the concrete kernel set
(``model.kernels='auto'`` decided from the devices, with the reason, recorded in config.json).
Model-input checks (is the input big enough for the model?) happen once where the model is
built (cnnlab.training.builders.model), before anything is compiled.
"""
from __future__ import annotations

import dataclasses
import math

from cnnlab.config import checks
from cnnlab.config.errors import ConfigError, fail
from cnnlab.config.facts import DatasetFacts, Devices
from cnnlab.config.schema import (DATASET_OPTIONS, DataSpec, LoopSpec, ModelSpec, OptimSpec,
                                  RunSpec, ScheduleSpec, TrainSpec, TransferSpec, complete)


def resolve(config, facts: DatasetFacts, devices: Devices = Devices()) -> RunSpec:
  """The RunSpec of ``config`` on ``devices`` for the dataset ``facts`` describe."""
  c = complete(config)
  checks.check_keys(c, device_count=devices.device_count, process_count=devices.process_count)
  data = resolve_data(c.dataset, facts, num_classes=checks.check_num_classes(c, facts))
  kernels, why = choose_kernels(c.model.kernels, devices)
  model = ModelSpec(name=c.model.name, kwargs=dict(c.model.kwargs or {}), dtype=c.model.dtype,
                    num_classes=data.num_classes, input_shape=data.input_shape,
                    kernels=kernels, kernels_why=why, task=facts.task)
  loop = _loop(c, data, devices.process_count, devices.device_count)
  optim = _optim(c, loop.global_batch)
  return RunSpec(model=model, data=data, optim=optim, schedule=_schedule(c, optim, loop),
                 train=_train(c), loop=loop, seed=int(c.seed), config=c.to_dict(),
                 transfer=_transfer(c))


def resolve_data(dataset, facts: DatasetFacts, *, num_classes: int | None = None) -> DataSpec:
  """The dataset section (ConfigDict or dict) resolved against ``facts``: every option
  concrete and checked by the dataset's family, the splits named and sized."""
  name = dataset["name"]
  if name != facts.name:
    fail("dataset.name", name, f"the facts given describe {facts.name!r}")
  opts = {key: dataset.get(key, None) for key in DATASET_OPTIONS}
  opts = {key: DATASET_OPTIONS[key] if value is None else value for key, value in opts.items()}
  opts = facts.family.resolve_options(opts, facts)
  for which in ("train", "eval"):
    split = opts[f"{which}_split"] or getattr(facts, f"{which}_split")
    if split not in facts.split_sizes:
      fail(f"dataset.{which}_split", split, f"{facts.name} has splits "
           f"{', '.join(s for s in facts.split_sizes if '[' not in s)} (optionally sliced, "
           "e.g. train[:1000])")
    opts[f"{which}_split"] = split
  shape = tuple(int(d) for d in facts.family.input_shape(opts, facts))
  return DataSpec(name=name, options=opts, train_split=opts["train_split"],
                  eval_split=opts["eval_split"], input_shape=shape,
                  num_classes=facts.num_classes if num_classes is None else num_classes,
                  train_examples=facts.split_size(opts["train_split"]),
                  eval_examples=facts.split_size(opts["eval_split"]), facts=facts)


def choose_kernels(requested: str, devices: Devices) -> tuple[str, str]:
  """(kernel set, one line why) for ``model.kernels``: 'auto' takes cnnlab's CPU formulations
  with oneDNN's convolutions on a single-process CPU run where the extension can be used, the
  CPU formulations alone where it cannot, and XLA's plain operations on accelerators and in
  multi-process runs (the CPU formulations' fusion barrier is a per-process construct)."""
  if requested != "auto":
    if requested == "cpu+onednn" and devices.onednn:
      return "cpu", f"cpu+onednn asked for, but oneDNN is unavailable ({devices.onednn})"
    return requested, "asked for in the config"
  if devices.platform != "cpu":
    return "plain", f"XLA's own operations on {devices.platform}"
  if devices.process_count > 1:
    return "plain", "a multi-process run uses XLA's plain operations"
  if not devices.onednn:
    return "cpu+onednn", ("CPU host with the oneDNN extension: oneDNN convolutions and native "
                          "BatchNorm")
  return "cpu", f"XLA's convolutions: oneDNN unavailable ({devices.onednn})"


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
                    best_metric="eval_accuracy", best_mode="max", report_best=False,
                    compilation_cache_dir="")


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
    mode = "min" if c.best_metric.endswith(("loss", "error")) else "max"
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
                   class_weights=tuple(float(w) for w in c.class_weights),
                   dice_include_background=bool(c.dice_include_background),
                   step="online" if c.online_updates else "standard")


def _transfer(c) -> TransferSpec:
  return TransferSpec(init_from=str(c.init_from), freeze=checks.freeze_patterns(c.freeze),
                      lr_groups=checks.check_lr_groups(c.lr_groups),
                      freeze_batch_stats=bool(c.freeze_batch_stats or c.linear_probe),
                      linear_probe=bool(c.linear_probe), keep_head=bool(c.keep_head))


__all__ = ["ConfigError", "resolve", "resolve_data", "resolve_optimization", "choose_kernels"]
