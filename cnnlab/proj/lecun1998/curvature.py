"""LeNet-5 (1998)'s curvature as the paper computes it: back-propagation of diagonal second
derivatives (LeCun et al. 1998, Appendix C; the Gauss-Newton approximation with every
off-diagonal term dropped):

    d2E/da_i^2 = f'(a_i)^2 d2E/dx_i^2            (a_i: a unit's weighted sum, x_i = f(a_i))
    d2E/dx_j^2 = sum_i w_ij^2 d2E/da_i^2
    d2E/dw_k^2 = sum over the connections (i, j) that share w_k of d2E/da_i^2 x_j^2

starting from the diagonal of the loss's Hessian with respect to F6's outputs. For a shared
weight this SUMS one positive term per connection, where the exact Gauss-Newton diagonal
(``sdlm.diag_gauss_newton``) squares the sum over connections, in which positions cancel: for
LeNet-5's convolutions the two differ by orders of magnitude, and the paper's step sizes
(eta = 5e-4, mu = 0.02) were chosen for this one.

Every layer of the network is bilinear in (its parameters, its input), so each line of the
recursion is one vector-Jacobian product of the same layer evaluated at (parameters^2,
input^2): its parameter part is sum d2a * x^2, its input part sum w^2 * d2a.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models import lenet
from cnnlab.proj.lecun1998 import sdlm

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(p, x):
  y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID", dimension_numbers=_DN)
  return y + p["bias"]


def _subsample(p, x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4)) * p["coeff"] + p["bias"]


def _partial(table):
  in_idx = np.array([i for ins in table for i in ins])
  out_idx = np.array([o for o, ins in enumerate(table) for _ in ins])
  num_in = 1 + max(max(ins) for ins in table)

  def apply(p, x):
    k = p["kernel"].shape[0]
    full = jnp.zeros((k, k, num_in, len(table)), p["kernel"].dtype)
    full = full.at[:, :, in_idx, out_idx].set(p["kernel"])
    y = jax.lax.conv_general_dilated(x, full, (1, 1), "VALID", dimension_numbers=_DN)
    return y + p["bias"]
  return apply


def _dense(p, x):
  return x.reshape(x.shape[0], -1) @ p["kernel"] + p["bias"]


# (module name, layer function): the network up to F6, each followed by the squashing function.
LAYERS = (("c1", _conv), ("s2", _subsample), ("c3", _partial(lenet.C3_TABLE)),
          ("s4", _subsample), ("c5", _conv), ("f6", _dense))


def features(params, x):
  """F6's outputs, and every layer's input and weighted sum (the forward pass, recorded)."""
  inputs, sums = [], []
  for name, fn in LAYERS:
    inputs.append(x)
    a = fn(params[name], x)
    sums.append(a)
    x = lenet.squash(a)
  return x, inputs, sums


def _squash_slope(a):
  t = jnp.tanh(lenet.SQUASH_S * a)
  return lenet.SQUASH_A * lenet.SQUASH_S * (1.0 - t * t)


def diag_curvature(params, x, loss_of_features):
  """The paper's d2E/dw^2 for every parameter, for ONE pattern ``x`` (H, W, C);
  ``loss_of_features(f)`` maps F6's 84 outputs to the loss."""
  f, inputs, sums = features(params, x[None])
  h = jax.hessian(loss_of_features)(f[0])
  d2x = jnp.maximum(jnp.diag(h), 0.0)[None]          # the diagonal only, as the paper
  out = {}
  for (name, fn), xin, a in reversed(list(zip(LAYERS, inputs, sums))):
    d2a = _squash_slope(a) ** 2 * d2x.reshape(a.shape)
    squared = jax.tree.map(jnp.square, params[name])
    _, vjp = jax.vjp(fn, squared, jnp.square(xin))
    out[name], d2x = vjp(d2a)
  return out


def mean_curvature(params, images, labels, loss_of_features):
  """``diag_curvature`` averaged over the patterns (scanned one at a time)."""
  zeros = jax.tree.map(jnp.zeros_like, {k: params[k] for k, _ in LAYERS})
  return sdlm.pattern_mean(lambda x, y: diag_curvature(params, x, lambda f: loss_of_features(f, y)),
                           zeros, images, labels)
