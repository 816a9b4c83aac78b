"""Optimizers and learning-rate schedules from a config, all built from Optax pieces.

Keys read (``config.optimizer`` / ``config.schedule``):
  optimizer.name            sgd | adamw | lars
  optimizer.learning_rate   peak learning rate (for ``base_batch_size`` if that is > 0)
  optimizer.base_batch_size linear scaling rule (Goyal et al. 2017): lr * batch / base; 0 = off
  optimizer.momentum, optimizer.nesterov           (sgd, lars)
  optimizer.b1, optimizer.b2, optimizer.eps        (adamw)
  optimizer.weight_decay, optimizer.weight_decay_mode   'l2' (added to the loss, as the
      papers did) | 'decoupled' (applied by the optimizer, Loshchilov & Hutter 2019)
  optimizer.exclude_norm_and_bias   no decay on 1-D parameters (BN scale/bias, biases)
  schedule.name             constant | step | piecewise | cosine
  schedule.warmup_epochs    linear warm-up from 0 (all schedules)
  schedule.boundaries       epochs at which step/piecewise change
  schedule.decay_factor     step: multiply by this at each boundary
  schedule.rates           piecewise: learning rates, one more than boundaries
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adamw", "lars")
SCHEDULES = ("constant", "step", "piecewise", "cosine")
WEIGHT_DECAY_MODES = ("l2", "decoupled")


def peak_learning_rate(config) -> float:
  opt = config.optimizer
  lr = float(opt.learning_rate)
  base = int(opt.get("base_batch_size", 0) or 0)
  return lr * config.batch_size / base if base > 0 else lr


def create_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  sched, peak = config.schedule, peak_learning_rate(config)
  warmup = int(round(float(sched.get("warmup_epochs", 0.0)) * steps_per_epoch))
  to_step = lambda epochs: int(round(float(epochs) * steps_per_epoch))
  name = sched.name
  if name == "constant":
    main = optax.constant_schedule(peak)
  elif name == "step":
    factor = float(sched.decay_factor)
    main = optax.piecewise_constant_schedule(
        peak, {to_step(b) - warmup: factor for b in sched.boundaries})
  elif name == "piecewise":
    values = [float(v) * peak / float(sched.rates[0]) for v in sched.rates]
    bounds = [to_step(b) - warmup for b in sched.boundaries]
    main = optax.piecewise_constant_schedule(
        values[0], {b: values[i + 1] / values[i] for i, b in enumerate(bounds)})
  elif name == "cosine":
    main = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup))
  else:
    raise ValueError(f"schedule.name={name!r} is not one of {', '.join(SCHEDULES)}")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def decay_mask(params) -> Any:
  """True for parameters that take weight decay: kernels, not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _mask(config) -> Callable | None:
  return decay_mask if config.optimizer.get("exclude_norm_and_bias", True) else None


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  opt = config.optimizer
  wd = float(opt.get("weight_decay", 0.0))
  decoupled = opt.get("weight_decay_mode", "l2") == "decoupled" and wd > 0
  name = opt.name
  if name == "sgd":
    parts = [optax.trace(decay=float(opt.momentum), nesterov=bool(opt.get("nesterov", False)))
             if float(opt.get("momentum", 0.0)) > 0 else optax.identity()]
    if decoupled:
      parts.append(optax.add_decayed_weights(wd, _mask(config)))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)
  if name == "adamw":
    return optax.adamw(schedule, b1=float(opt.get("b1", 0.9)), b2=float(opt.get("b2", 0.999)),
                       eps=float(opt.get("eps", 1e-8)), weight_decay=wd if decoupled else 0.0,
                       mask=_mask(config))
  if name == "lars":
    return optax.lars(schedule, weight_decay=wd if decoupled else 0.0,
                      weight_decay_mask=_mask(config) or True,
                      trust_ratio_mask=_mask(config) or True,
                      momentum=float(opt.get("momentum", 0.9)),
                      nesterov=bool(opt.get("nesterov", False)))
  raise ValueError(f"optimizer.name={name!r} is not one of {', '.join(OPTIMIZERS)}")


def l2_penalty(config, params) -> jax.Array:
  """0.5 * wd * sum(w^2) over decayed parameters when weight decay lives in the loss."""
  opt = config.optimizer
  wd = float(opt.get("weight_decay", 0.0))
  if wd <= 0 or opt.get("weight_decay_mode", "l2") != "l2":
    return jnp.zeros((), jnp.float32)
  mask = decay_mask(params) if opt.get("exclude_norm_and_bias", True) else \
      jax.tree.map(lambda _: True, params)
  leaves = [jnp.sum(jnp.square(p)) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
            if m]
  return 0.5 * wd * sum(leaves) if leaves else jnp.zeros((), jnp.float32)
