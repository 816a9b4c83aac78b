"""Gradient attributions: which input values the score of a class depends on.

Every function takes ``logits_fn`` (a batch (N, *spatial, C) -> logits (N, K), e.g.
``functools.partial(features.apply_inference, model, variables)``), the batch ``x`` and the
``target`` classes (N,) ints, or None for each example's predicted class, and returns an array
shaped like ``x``. They are pure and batched; ``jax.jit(fn, static_argnums=0)`` compiles them
(``steps`` / ``samples`` are static too). Scores are logits (pre-softmax), as in the papers.

- ``saliency``: the gradient of the score w.r.t. the input (Simonyan, Vedaldi & Zisserman 2014).
- ``smoothgrad``: that gradient averaged over noisy copies of the input (Smilkov et al. 2017).
- ``integrated_gradients``: (x - baseline) times the gradient averaged along the straight path
  from the baseline to x (Sundararajan, Taly & Yan 2017), trapezoid rule over ``steps``
  intervals. ``completeness`` measures the axiom sum(attributions) = f(x) - f(baseline);
  ``COMPLETENESS_RTOL`` / ``COMPLETENESS_ATOL`` state the tolerance the tests hold it to.
- ``heat`` reduces an attribution to one value per position, (N, *spatial): the sum over
  channels of the absolute values (or of the signed values, ``signed=True``).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jax.Array], jax.Array]

# Integrated Gradients' completeness holds exactly for the integral; the trapezoid rule with
# ``steps`` intervals leaves an error that shrinks as 1/steps^2 on smooth networks (ReLU
# networks: wherever the path crosses a kink). |sum - delta| <= RTOL * |delta| + ATOL is what
# the default 64 steps reach on the test models.
COMPLETENESS_RTOL = 0.02
COMPLETENESS_ATOL = 1e-3


def resolve_target(logits_fn: LogitsFn, x, target):
  """``target`` as an (N,) int array; None -> each example's predicted class."""
  if target is None:
    return jnp.argmax(logits_fn(x), axis=-1)
  target = jnp.asarray(target, jnp.int32)
  return jnp.broadcast_to(target, (x.shape[0],))


def class_scores(logits, target):
  """The (N,) scores ``logits[i, target[i]]``."""
  return jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]


def _input_grad(logits_fn: LogitsFn, x, target):
  """d score_i / d x_i for every example (examples are independent in inference mode)."""
  return jax.grad(lambda z: class_scores(logits_fn(z), target).sum())(x)


def saliency(logits_fn: LogitsFn, x, target=None):
  """The input gradient of each example's target score."""
  x = jnp.asarray(x, jnp.float32)
  return _input_grad(logits_fn, x, resolve_target(logits_fn, x, target))


def smoothgrad(logits_fn: LogitsFn, x, target=None, *, key=None, samples: int = 25,
               noise: float = 0.15):
  """The input gradient averaged over ``samples`` copies of x with Gaussian noise of std
  ``noise`` times each example's value range (max - min), the paper's 10-20 %."""
  x = jnp.asarray(x, jnp.float32)
  target = resolve_target(logits_fn, x, target)
  key = jax.random.PRNGKey(0) if key is None else key
  axes = tuple(range(1, x.ndim))
  sigma = noise * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True))

  def body(total, k):
    z = x + sigma * jax.random.normal(k, x.shape, x.dtype)
    return total + _input_grad(logits_fn, z, target), None

  total, _ = jax.lax.scan(body, jnp.zeros_like(x), jax.random.split(key, samples))
  return total / samples


def integrated_gradients(logits_fn: LogitsFn, x, target=None, *, baseline=None,
                         steps: int = 64):
  """(x - baseline) * the path-averaged gradient, trapezoid rule on ``steps`` intervals.
  ``baseline`` broadcasts against x (default zeros: black image, flat series)."""
  x = jnp.asarray(x, jnp.float32)
  baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(
      jnp.asarray(baseline, jnp.float32), x.shape)
  target = resolve_target(logits_fn, x, target)
  alphas = jnp.linspace(0.0, 1.0, steps + 1)
  weights = jnp.full((steps + 1,), 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps)

  def body(total, aw):
    a, w = aw
    return total + w * _input_grad(logits_fn, baseline + a * (x - baseline), target), None

  total, _ = jax.lax.scan(body, jnp.zeros_like(x), (alphas, weights))
  return (x - baseline) * total


def completeness(logits_fn: LogitsFn, x, attributions, target=None, *, baseline=None):
  """``{'sum': sum of attributions, 'delta': f(x) - f(baseline), 'gap': |sum - delta|,
  'ok': gap <= COMPLETENESS_RTOL * |delta| + COMPLETENESS_ATOL}``, each (N,)."""
  x = jnp.asarray(x, jnp.float32)
  baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(
      jnp.asarray(baseline, jnp.float32), x.shape)
  target = resolve_target(logits_fn, x, target)
  delta = class_scores(logits_fn(x), target) - class_scores(logits_fn(baseline), target)
  total = attributions.reshape(x.shape[0], -1).sum(axis=1)
  gap = jnp.abs(total - delta)
  return {"sum": total, "delta": delta, "gap": gap,
          "ok": gap <= COMPLETENESS_RTOL * jnp.abs(delta) + COMPLETENESS_ATOL}


def heat(attributions, *, signed: bool = False):
  """(N, *spatial): the channel sum of |attributions| (or of the attributions)."""
  a = attributions if signed else jnp.abs(attributions)
  return a.sum(axis=-1)
