"""Pure train and eval steps, and their jit-compiled, sharded forms.

``train_step(state, batch) -> (state, metrics)`` does one optimizer step on the global batch:
forward in the model's compute dtype (params stay float32), the configured loss (a registered
one: softmax cross-entropy with optional label smoothing by default), auxiliary-head losses
(GoogLeNet, segmentation aux heads), L2 weight decay in the loss if configured, gradient
accumulation over micro-batches, an optional EMA of the parameters, and a finiteness guard: a
step whose loss or gradient norm is not finite leaves the state exactly as it was and reports
``finite=0`` so the loop can stop and name the step. ``eval_step`` sums what the task measures
(cnnlab/training/tasks.py) over the batch's real rows.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from cnnlab import parallel
from cnnlab.config import OptimSpec, TrainSpec
from cnnlab.training import optim, registry, tasks
from cnnlab.training.state import TrainState, eval_variables


def split_outputs(out):
  """Models return logits, or a tuple (logits, *aux_logits) in train mode (GoogLeNet)."""
  if isinstance(out, tuple):
    return out[0], [a for a in out[1:] if a is not None]
  return out, []


def _cross_entropy(spec: TrainSpec) -> Callable:
  """Softmax cross-entropy with optional label smoothing, averaged over the batch."""
  return lambda logits, batch: jnp.mean(tasks.cross_entropy(
      logits, batch["label"], logits.shape[-1], spec.label_smoothing))


registry.register_loss("cross_entropy", _cross_entropy)


def make_loss(spec: TrainSpec) -> Callable:
  """The per-batch training loss ``(logits, batch) -> scalar`` that ``spec.loss`` names."""
  return registry.lookup("loss", spec.loss)(spec)


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs,
                    spec: TrainSpec, optim_spec: OptimSpec, schedule: optax.Schedule,
                    task=tasks.Classify()) -> Callable:
  """The pure train step; ``tx`` from optim.create_optimizer (its update takes ``value=``)."""
  objective = make_loss(spec)
  aux_weight, accum, ema_decay = spec.aux_loss_weight, spec.grad_accum_steps, spec.ema_decay

  def loss_fn(params, batch_stats, batch, rng):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    out, updates = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng},
                               mutable=["batch_stats"] if batch_stats else [])
    logits, aux = split_outputs(out)
    loss = objective(logits, batch)
    for a in aux:
      loss += aux_weight * objective(a, batch)
    total = loss + optim.l2_penalty(optim_spec, params)
    return total, (updates.get("batch_stats", batch_stats), loss, task.train_metrics(logits,
                                                                                     batch))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    (total, (batch_stats, loss, extra)), grads = _gradients(grad_fn, state, batch, rng, accum)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                        opt_state=opt_state, ema_params=ema)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    # Non-finite step: keep every buffer of the old state (the step counter too).
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = {"train_loss": loss, **extra, "total_loss": total, "grad_norm": grad_norm,
               "learning_rate": optim.learning_rate(schedule, opt_state, state.step),
               "finite": finite.astype(jnp.int32), "step": state.step}
    return new, metrics

  return train_step


def _standard_step(spec, model, tx, schedule, task):
  return make_train_step(model, tx, spec.train, spec.optim, schedule, task)


registry.register_step("standard", _standard_step)


def _gradients(grad_fn, state: TrainState, batch, rng, accum: int):
  """grad_fn's ((total, (batch_stats, loss, metrics)), grads) on the batch, averaged over
  ``accum`` micro-batches when accum > 1 (BN statistics threaded through them)."""
  if accum == 1:
    return grad_fn(state.params, state.batch_stats, batch, rng)

  # Micro-batch i takes rows i, i+k, i+2k, ...: each device's contiguous shard splits evenly,
  # so the batch sharding survives the reshape.
  def micro(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)

  def body(carry, xs):
    grads_sum, bs = carry
    part, i = xs
    (tot, (bs, l, m)), g = grad_fn(state.params, bs, part, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, grads_sum, g), bs), (tot, l, m)

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grads, batch_stats), (tots, losses, extra) = jax.lax.scan(
      body, (zeros, state.batch_stats), (jax.tree.map(micro, batch), jnp.arange(accum)))
  grads = jax.tree.map(lambda g: g / accum, grads)
  extra = jax.tree.map(jnp.mean, extra)
  return (tots.mean(), (batch_stats, losses.mean(), extra)), grads


def make_eval_step(model: nn.Module, *, use_ema: bool = False, confusion: bool = False,
                   task=tasks.Classify()):
  """``eval_step(state, batch) -> sums`` of what ``task`` measures (eval mode)."""
  def eval_step(state: TrainState, batch):
    logits, _ = split_outputs(model.apply(eval_variables(state, use_ema), batch["image"],
                                          train=False))
    return task.eval_sums(logits, batch, confusion=confusion)

  return eval_step


SEED_MAPS = ("vmap", "unroll")


def over_seeds(train_step, how: str):
  """``train_step`` over several seeds at once; the batch and the metrics carry a leading axis
  of seeds. 'vmap' vectorises the step (one batched op per op) over states stacked along that
  axis. 'unroll' takes a list of the seeds' states (each its own buffers, donated and updated
  in place as a lone run's) and traces the step once per seed into the same program: each
  seed's ops are exactly its lone run's (bit-identical results)."""
  if how == "vmap":
    return jax.vmap(train_step)
  if how != "unroll":
    raise ValueError(f"seed map {how!r} is not one of {', '.join(SEED_MAPS)}")

  def unrolled(states, batch):
    outs = [train_step(s, jax.tree.map(lambda x: x[i], batch)) for i, s in enumerate(states)]
    return [o[0] for o in outs], jax.tree.map(lambda *xs: jnp.stack(xs), *[o[1] for o in outs])

  return unrolled


def jit_train_step(mesh: Mesh, train_step, state_sharding, *, seed_map: str | None = None):
  """The train step under jit: batch sharded on 'data', state replicated and donated. With
  ``seed_map`` ('vmap' | 'unroll', see ``over_seeds``) it steps several seeds at once
  (cnnlab/training/seeds.py); the batch axis after the seed axis is the one sharded."""
  batch = parallel.batch_sharded(mesh, seed_axis=seed_map is not None)
  if seed_map is not None:
    train_step = over_seeds(train_step, seed_map)
    state_sharding = parallel.replicated(mesh)    # every leaf of the stack / list of states
  return jax.jit(train_step, in_shardings=(state_sharding, batch),
                 out_shardings=(state_sharding, parallel.replicated(mesh)), donate_argnums=(0,))


def jit_eval_step(mesh: Mesh, eval_step, state_sharding):
  """The eval step under jit: batch sharded on 'data', sums replicated."""
  return jax.jit(eval_step, in_shardings=(state_sharding, parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))
