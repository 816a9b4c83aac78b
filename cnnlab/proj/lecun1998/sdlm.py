"""Stochastic diagonal Levenberg-Marquardt (SDLM), the optimizer LeNet-5 was trained with.

LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition", §II-D / §III-C and Appendix C: every parameter w_k gets its own step

    eps_k = eta / (mu + h_kk)

where h_kk estimates the diagonal of the Gauss-Newton approximation of the Hessian of the loss,
re-estimated on a few hundred training patterns before each pass over the data and kept fixed
during the pass; eta follows a per-pass schedule and mu (0.02 in the paper) keeps the step
bounded where the curvature is small. Updates are online (one pattern at a time): see
``cnnlab.proj.lecun1998.online`` for the jitted per-example loop.

Here the transformation is an ordinary Optax ``GradientTransformation``; its state
(``SDLMState``: the curvature estimate and an update counter) is a pytree of arrays, so it is
checkpointed, sharded and restored like any other optimizer state.

Curvature estimate. The paper back-propagates second derivatives through the network with the
off-diagonal terms dropped layer by layer (Appendix C). ``diag_gauss_newton`` instead computes the
*exact* diagonal of the generalised Gauss-Newton matrix J^T H_o J per pattern (J: Jacobian of the
network outputs w.r.t. the parameters, H_o: Hessian of the loss w.r.t. the outputs, positive
semi-definite for the losses used here), by factoring H_o = L L^T and summing the squares of
one vector-Jacobian product per output. It costs one backward pass per output unit (10 for
LeNet-5's RBF layer) and is the quantity the paper's recursion approximates.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class SDLMState(NamedTuple):
  count: jax.Array    # updates applied (int32 scalar)
  hessian: Any        # per-parameter curvature estimate h_kk (same tree as the params)


def scale_by_sdlm(mu: float = 0.02) -> optax.GradientTransformation:
  """g_k -> g_k / (mu + h_kk), with h from the state (set it with ``set_hessian``)."""
  if not mu > 0:
    raise ValueError(f"sdlm mu={mu!r} must be > 0 (the paper uses 0.02)")

  def init(params):
    return SDLMState(count=jnp.zeros((), jnp.int32),
                     hessian=jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))

  def update(updates, state, params=None):
    del params
    updates = jax.tree.map(lambda g, h: (g / (mu + h)).astype(g.dtype), updates, state.hessian)
    return updates, state._replace(count=state.count + 1)

  return optax.GradientTransformation(init, update)


def sdlm(learning_rate: float | optax.Schedule, mu: float = 0.02) -> optax.GradientTransformation:
  """The whole SDLM step: -eta(t) * g / (mu + h); ``learning_rate`` is eta (or its schedule,
  counted in updates)."""
  return optax.chain(scale_by_sdlm(mu), optax.scale_by_learning_rate(learning_rate))


def _is_sdlm(node) -> bool:
  return isinstance(node, SDLMState)


def set_hessian(opt_state, hessian):
  """``opt_state`` with every SDLMState's curvature replaced by ``hessian``."""
  found = []

  def put(node):
    if _is_sdlm(node):
      found.append(True)
      return node._replace(hessian=hessian)
    return node
  new = jax.tree.map(put, opt_state, is_leaf=_is_sdlm)
  if not found:
    raise ValueError("set_hessian: the optimizer state holds no SDLMState (not an sdlm optimizer)")
  return new


def get_hessian(opt_state):
  """The curvature estimate held by the (first) SDLMState in ``opt_state``."""
  leaves = jax.tree.leaves(opt_state, is_leaf=_is_sdlm)
  for leaf in leaves:
    if _is_sdlm(leaf):
      return leaf.hessian
  raise ValueError("get_hessian: the optimizer state holds no SDLMState")


def has_sdlm(opt_state) -> bool:
  return any(_is_sdlm(x) for x in jax.tree.leaves(opt_state, is_leaf=_is_sdlm))


def diag_gauss_newton(outputs_fn: Callable[[Any, jax.Array], jax.Array],
                      loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
                      params, inputs: jax.Array, labels: jax.Array):
  """Mean over the patterns of diag(J^T H_o J), the Gauss-Newton curvature per parameter.

  ``outputs_fn(params, x)`` maps ONE pattern ``x`` (no batch axis) to the network's output
  vector; ``loss_fn(outputs, label)`` is the per-pattern loss on that vector. Patterns are
  visited with ``lax.scan`` (memory: one pattern's Jacobian-vector products at a time).
  """
  def one(x, y):
    out, vjp = jax.vjp(lambda p: outputs_fn(p, x), params)
    h = jax.hessian(lambda o: loss_fn(o, y))(out.astype(jnp.float32))
    h = 0.5 * (h + h.T)
    w, v = jnp.linalg.eigh(h)
    factor = v * jnp.sqrt(jnp.maximum(w, 0.0))          # h == factor @ factor.T
    cols = jax.vmap(lambda c: vjp(c.astype(out.dtype))[0])(factor.T)
    return jax.tree.map(lambda c: jnp.sum(jnp.square(c.astype(jnp.float32)), axis=0), cols)

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  return pattern_mean(one, zeros, inputs, labels)


def pattern_mean(per_pattern: Callable, zeros, inputs: jax.Array, labels: jax.Array):
  """The mean over patterns of ``per_pattern(x, y)`` (a tree shaped like ``zeros``), one
  pattern at a time (``lax.scan``), so memory holds one pattern's work."""
  def body(total, xy):
    return jax.tree.map(jnp.add, total, per_pattern(*xy)), None
  total, _ = jax.lax.scan(body, zeros, (inputs, labels))
  return jax.tree.map(lambda t: t / inputs.shape[0], total)
