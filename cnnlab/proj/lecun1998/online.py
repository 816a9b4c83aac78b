"""Online (one pattern at a time) training inside one jitted call, as LeNet-5 was trained.

``make_online_train_step`` returns a step with the engine's signature,
``(TrainState, batch) -> (TrainState, metrics)``, whose batch of B examples is consumed as B
successive single-example updates (``lax.scan``): the engine's data order, checkpoints, resume
and metrics apply unchanged, with one engine step = B online updates. With an SDLM optimizer
(``cnnlab.proj.lecun1998.sdlm``) the curvature is re-estimated on the first ``hessian_samples``
examples of the first step of every pass (``steps_per_pass`` engine steps), before that step's
updates, and kept fixed for the pass (LeCun et al. 1998, §III-C: 500 samples before each pass).

Models with BatchNorm or dropout are not supported here (the paper's network has neither); the
step rejects them at trace time. Per-example updates are inherently sequential: under several
devices the scan runs on gathered data, so online training does not speed up with more devices.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnnlab.models import lenet
from cnnlab.proj.lecun1998 import curvature, sdlm
from cnnlab.training import steps
from cnnlab.training.state import TrainState


def rbf_curvature_split(model: nn.Module, j: float):
  """Where to cut LeNet-5 (1998) for its Gauss-Newton curvature: the network up to F6 (84
  outputs) and, as the "loss", the fixed-code RBF layer followed by the MAP criterion (eq. 9).
  The RBF penalty is quadratic in F6's outputs, so its curvature (2 per unit for the correct
  class) is kept exactly; cutting after the RBF layer instead would leave only the nearly flat
  log-sum-exp part and an estimate close to zero."""
  features = model.clone(num_classes=0)
  codes = jnp.asarray(lenet.rbf_codes(model.num_classes, model.codes))

  def outputs(params, x):
    return features.apply({"params": params}, x[None], train=True)[0]

  def loss(f, y):
    return lenet.map_loss(-lenet.rbf_penalty(f[None], codes), y[None], j)
  return outputs, loss


def _curvature_refresh(hessian_samples: int, curvature_fn, curv_outputs, curv_loss):
  """(params, opt_state, images, labels) -> opt_state with SDLM's curvature re-estimated on
  the first ``hessian_samples`` examples (the paper's recursion when ``curvature_fn``)."""
  def refresh(params, opt_state, images, labels):
    n = min(hessian_samples, images.shape[0])
    if curvature_fn is not None:
      h = curvature_fn(params, images[:n], labels[:n])
      h = {k: h.get(k, jax.tree.map(jnp.zeros_like, v)) for k, v in params.items()}
    else:
      h = sdlm.diag_gauss_newton(curv_outputs, curv_loss, params, images[:n], labels[:n])
    return sdlm.set_hessian(opt_state, h)
  return refresh


def make_online_train_step(model: nn.Module, tx: optax.GradientTransformation,
                           loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
                           schedule: optax.Schedule, *, steps_per_pass: int,
                           hessian_samples: int = 500, curvature_split=None,
                           curvature_fn=None) -> Callable:
  """``loss_fn(outputs, labels)`` is the batch-mean loss (applied to batches of one);
  ``schedule(step)`` is only reported (the optimizer holds its own, counted in examples).
  ``curvature_split``: ``(outputs_fn(params, x), loss_fn(outputs, y))`` for one example, where
  the Gauss-Newton curvature is taken (default: the model's outputs and ``loss_fn``).
  ``curvature_fn(params, images, labels)``: another estimator of the per-parameter curvature
  (e.g. ``curvature.mean_curvature``, the paper's), used instead."""
  if steps_per_pass < 1 or hessian_samples < 1:
    raise ValueError(f"steps_per_pass={steps_per_pass} and hessian_samples={hessian_samples} "
                     "must be positive")

  def outputs(params, x):
    return model.apply({"params": params}, x[None], train=True)[0]

  def example_loss(params, x, y):
    out = outputs(params, x)
    return loss_fn(out[None], y[None]), out

  grad_fn = jax.value_and_grad(example_loss, has_aux=True)
  curv_outputs, curv_loss = curvature_split or (
      outputs, lambda o, y: loss_fn(o[None], y[None]))

  refresh = _curvature_refresh(hessian_samples, curvature_fn, curv_outputs, curv_loss)

  def train_step(state: TrainState, batch):
    if state.batch_stats:
      raise ValueError("online training does not support models with BatchNorm statistics")
    images, labels = batch["image"], batch["label"]
    opt_state = state.opt_state
    if sdlm.has_sdlm(opt_state):
      opt_state = jax.lax.cond(
          state.step % steps_per_pass == 0,
          lambda s: refresh(state.params, s, images, labels), lambda s: s, opt_state)

    def body(carry, xy):
      params, opt = carry
      (loss, out), g = grad_fn(params, *xy)
      updates, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, updates), opt), (
          loss, jnp.argmax(out) == xy[1], optax.global_norm(g))

    (params, opt_state), (losses, correct, norms) = jax.lax.scan(
        body, (state.params, opt_state), (images, labels))
    loss = jnp.mean(losses)
    grad_norm = jnp.sqrt(jnp.mean(jnp.square(norms)))
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(norms))
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = {"train_loss": loss, "train_accuracy": jnp.mean(correct), "total_loss": loss,
               "grad_norm": grad_norm, "learning_rate": schedule(state.step),
               "finite": finite.astype(jnp.int32), "step": state.step}
    return new, metrics

  return train_step


def from_spec(spec, model: nn.Module, tx: optax.GradientTransformation,
              schedule: optax.Schedule, task=None) -> Callable:
  """The online step a RunSpec asks for: its loss, one pass = one epoch of steps, and for the
  paper's LeNet-5 with its MAP loss the curvature taken at F6 (``rbf_curvature_split``)."""
  del task    # online updates report classification accuracy
  split = curvature_fn = None
  if isinstance(model, lenet.LeNet5_1998) and model.head == "rbf" and \
      spec.train.loss == "lenet_map":
    split = rbf_curvature_split(model, spec.train.loss_rubbish_j)
    if spec.optim.sdlm_curvature == "paper":
      loss_of_features = split[1]
      curvature_fn = lambda p, xs, ys: curvature.mean_curvature(  # noqa: E731
          p, xs, ys, loss_of_features)
  objective = steps.make_loss(spec.train)
  return make_online_train_step(model, tx, lambda o, y: objective(o, {"label": y}), schedule,
                                steps_per_pass=spec.loop.steps_per_epoch,
                                hessian_samples=spec.optim.sdlm_hessian_samples,
                                curvature_split=split, curvature_fn=curvature_fn)
