"""Pure train and eval steps, and their jit-compiled, sharded forms.

``train_step(state, batch) -> (state, metrics)`` does one optimizer step on the global batch:
forward in the model's compute dtype (params stay float32), softmax cross-entropy with optional
label smoothing, auxiliary-head losses (GoogLeNet), L2 weight decay in the loss if configured,
gradient accumulation over micro-batches, an optional EMA of the parameters, and a finiteness
guard: a step whose loss or gradient norm is not finite leaves the state exactly as it was and
reports ``finite=0`` so the loop can stop and name the step.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from cnnlab import parallel
from cnnlab.config import OptimSpec, TrainSpec
from cnnlab.training import optim
from cnnlab.training.state import TrainState, eval_variables


def _split_outputs(out):
  """Models return logits, or a tuple (logits, *aux_logits) in train mode (GoogLeNet)."""
  if isinstance(out, tuple):
    return out[0], [a for a in out[1:] if a is not None]
  return out, []


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing > 0:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits, labels, k: int):
  topk = jax.lax.top_k(logits, min(k, logits.shape[-1]))[1]
  return jnp.any(topk == labels[:, None], axis=-1)


LOSSES = ("cross_entropy", "lenet_map")


def make_loss(spec: TrainSpec) -> Callable:
  """Per-batch training loss ``(outputs, labels) -> scalar`` chosen by ``spec.loss``:
  'cross_entropy' (softmax, optional label smoothing) or 'lenet_map', LeCun et al. 1998's
  MAP criterion (eq. 9) on RBF outputs, with its constant ``spec.loss_rubbish_j``."""
  if spec.loss == "lenet_map":
    from cnnlab.models import lenet
    return lambda outputs, labels: lenet.map_loss(outputs, labels, spec.loss_rubbish_j)
  if spec.loss != "cross_entropy":
    raise ValueError(f"loss={spec.loss!r} is not one of {', '.join(LOSSES)}")
  return lambda outputs, labels: jnp.mean(
      cross_entropy(outputs, labels, outputs.shape[-1], spec.label_smoothing))


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs,
                    spec: TrainSpec, optim_spec: OptimSpec,
                    schedule: optax.Schedule) -> Callable:
  """The pure train step; ``tx`` from optim.create_optimizer (its update takes ``value=``)."""
  objective = make_loss(spec)
  aux_weight, accum, ema_decay = spec.aux_loss_weight, spec.grad_accum_steps, spec.ema_decay

  def loss_fn(params, batch_stats, images, labels, rng):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    out, updates = model.apply(variables, images, train=True, rngs={"dropout": rng},
                               mutable=["batch_stats"] if batch_stats else [])
    logits, aux = _split_outputs(out)
    loss = objective(logits, labels)
    for a in aux:
      loss += aux_weight * objective(a, labels)
    total = loss + optim.l2_penalty(optim_spec, params)
    correct = jnp.mean(jnp.argmax(logits, -1) == labels)
    return total, (updates.get("batch_stats", batch_stats), loss, correct)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    (total, (batch_stats, loss, acc)), grads = _gradients(
        grad_fn, state, batch["image"], batch["label"], rng, accum)
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
    metrics = {"train_loss": loss, "train_accuracy": acc, "total_loss": total,
               "grad_norm": grad_norm,
               "learning_rate": optim.learning_rate(schedule, opt_state, state.step),
               "finite": finite.astype(jnp.int32), "step": state.step}
    return new, metrics

  return train_step


def _gradients(grad_fn, state: TrainState, images, labels, rng, accum: int):
  """grad_fn's ((total, (batch_stats, loss, accuracy)), grads) on the batch, averaged over
  ``accum`` micro-batches when accum > 1 (BN statistics threaded through them)."""
  if accum == 1:
    return grad_fn(state.params, state.batch_stats, images, labels, rng)

  # Micro-batch i takes rows i, i+k, i+2k, ...: each device's contiguous shard splits evenly,
  # so the batch sharding survives the reshape.
  def micro(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)

  def body(carry, xs):
    grads_sum, bs = carry
    img, lab, i = xs
    (tot, (bs, l, a)), g = grad_fn(state.params, bs, img, lab, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, grads_sum, g), bs), (tot, l, a)

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grads, batch_stats), (tots, losses, accs) = jax.lax.scan(
      body, (zeros, state.batch_stats), (micro(images), micro(labels), jnp.arange(accum)))
  grads = jax.tree.map(lambda g: g / accum, grads)
  return (tots.mean(), (batch_stats, losses.mean(), accs.mean())), grads


def make_eval_step(model: nn.Module, *, use_ema: bool = False, confusion: bool = False):
  num_classes = model.num_classes

  def eval_step(state: TrainState, batch):
    logits = model.apply(eval_variables(state, use_ema), batch["image"], train=False)
    logits, _ = _split_outputs(logits)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    loss = cross_entropy(logits, labels, num_classes)
    out = {"loss_sum": jnp.sum(loss * mask),
           "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
           "correct5": jnp.sum(topk_correct(logits, labels, 5) * mask),
           "count": jnp.sum(mask)}
    if confusion:
      pred = jnp.argmax(logits, -1)
      idx = labels * num_classes + pred
      out["confusion"] = jnp.zeros(num_classes * num_classes, jnp.float32).at[idx].add(
          mask).reshape(num_classes, num_classes)
    return out

  return eval_step


def jit_train_step(mesh: Mesh, train_step, state_sharding):
  """The train step under jit: batch sharded on 'data', state replicated and donated."""
  return jax.jit(train_step, in_shardings=(state_sharding, parallel.batch_sharded(mesh)),
                 out_shardings=(state_sharding, parallel.replicated(mesh)), donate_argnums=(0,))


def jit_eval_step(mesh: Mesh, eval_step, state_sharding):
  """The eval step under jit: batch sharded on 'data', sums replicated."""
  return jax.jit(eval_step, in_shardings=(state_sharding, parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


def jit_steps(mesh: Mesh, train_step, eval_step, state_sharding):
  """(jitted train step, jitted eval step); see jit_train_step / jit_eval_step."""
  return (jit_train_step(mesh, train_step, state_sharding),
          jit_eval_step(mesh, eval_step, state_sharding))
