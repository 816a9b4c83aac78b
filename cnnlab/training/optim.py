"""Optimizers and learning-rate schedules from their specs (cnnlab.config), built from Optax.

  OptimSpec.name            sgd | adamw | lars (or one a project registered, e.g. sdlm);
                            ``learning_rate`` is the peak, already scaled by the linear
                            scaling rule where the config asked for it
  weight_decay_mode         'l2' (added to the loss, as the papers did) | 'decoupled'
                            (applied by the optimizer, Loshchilov & Hutter 2019)
  exclude_norm_and_bias     no decay on 1-D parameters (BN scale/bias, biases)
  ScheduleSpec.name         constant | step | piecewise | cosine | plateau; boundaries and
                            warm-up are in steps (resolve() converted them)

``plateau`` is ``optax.contrib.reduce_on_plateau`` on the training loss: the loss averaged
over ``plateau_every_steps`` steps is one measurement; after ``plateau_patience`` measurements
without a relative improvement of ``plateau_rtol`` the learning rate is multiplied by
``plateau_factor``, never below ``plateau_min_lr``. Its state lives in the optimizer state,
so it is checkpointed with the run and a restart resumes it exactly.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from cnnlab.config import OptimSpec, ScheduleSpec
from cnnlab.training import registry


def create_schedule(spec: ScheduleSpec) -> optax.Schedule:
  """The step -> learning-rate function (for ``plateau``: the rate before any reduction)."""
  warmup, peak = spec.warmup_steps, spec.peak
  if spec.name in ("constant", "plateau"):
    main = optax.constant_schedule(peak)
  elif spec.name in ("step", "piecewise"):
    scales = {b - warmup: spec.values[i + 1] / spec.values[i]
              for i, b in enumerate(spec.boundaries)}
    main = optax.piecewise_constant_schedule(spec.values[0], scales)
  elif spec.name == "cosine":
    main = optax.cosine_decay_schedule(peak, max(1, spec.total_steps - warmup))
  else:
    raise ValueError(f"schedule.name={spec.name!r} is not a known schedule")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def decay_mask(params) -> Any:
  """True for parameters that take weight decay: kernels, not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _mask(spec: OptimSpec) -> Callable | None:
  return decay_mask if spec.exclude_norm_and_bias else None


def _sgd(spec: OptimSpec, schedule) -> optax.GradientTransformation:
  parts = [optax.trace(decay=spec.momentum, nesterov=spec.nesterov)
           if spec.momentum > 0 else optax.identity()]
  if _decoupled(spec):
    parts.append(optax.add_decayed_weights(spec.weight_decay, _mask(spec)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)


def _adamw(spec: OptimSpec, schedule) -> optax.GradientTransformation:
  return optax.adamw(schedule, b1=spec.b1, b2=spec.b2, eps=spec.eps,
                     weight_decay=spec.weight_decay if _decoupled(spec) else 0.0,
                     mask=_mask(spec))


def _lars(spec: OptimSpec, schedule) -> optax.GradientTransformation:
  return optax.lars(schedule, weight_decay=spec.weight_decay if _decoupled(spec) else 0.0,
                    weight_decay_mask=_mask(spec) or True, trust_ratio_mask=_mask(spec) or True,
                    momentum=spec.momentum, nesterov=spec.nesterov)


def _decoupled(spec: OptimSpec) -> bool:
  return spec.weight_decay_mode == "decoupled" and spec.weight_decay > 0


registry.register_optimizer("sgd", _sgd)
registry.register_optimizer("adamw", _adamw)
registry.register_optimizer("lars", _lars)


def create_optimizer(spec: OptimSpec, schedule: optax.Schedule,
                     sched: ScheduleSpec | None = None) -> optax.GradientTransformationExtraArgs:
  """The optimizer; its ``update`` takes ``value=`` (the train loss), which only ``plateau``
  uses."""
  tx = registry.lookup("optimizer", spec.name)(spec, schedule)
  if sched is not None and sched.name == "plateau":
    tx = optax.chain(tx, optax.contrib.reduce_on_plateau(
        factor=sched.plateau_factor, patience=sched.plateau_patience, rtol=sched.plateau_rtol,
        atol=0.0, cooldown=sched.plateau_cooldown,
        accumulation_size=sched.plateau_every_steps,
        min_scale=sched.plateau_min_lr / sched.peak))
  return optax.with_extra_args_support(tx)


def learning_rate(schedule: optax.Schedule, opt_state, step) -> jax.Array:
  """The learning rate applied at ``step``: the schedule's, times the plateau scale if any."""
  lr = schedule(step)
  for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.contrib.ReduceLROnPlateauState)):
    if isinstance(s, optax.contrib.ReduceLROnPlateauState):
      lr = lr * s.scale
  return lr


def l2_penalty(spec: OptimSpec, params) -> jax.Array:
  """0.5 * wd * sum(w^2) over decayed parameters when weight decay lives in the loss."""
  if spec.weight_decay <= 0 or spec.weight_decay_mode != "l2":
    return jnp.zeros((), jnp.float32)
  mask = decay_mask(params) if spec.exclude_norm_and_bias else \
      jax.tree.map(lambda _: True, params)
  leaves = [jnp.sum(jnp.square(p)) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
            if m]
  return 0.5 * spec.weight_decay * sum(leaves) if leaves else jnp.zeros((), jnp.float32)
