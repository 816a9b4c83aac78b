"""Train-mode BatchNorm with its residual add and ReLU, as two native passes each way (XLA FFI,
CPU only), in the same extension as the oneDNN convolutions.

``batch_norm_train(x, scale, bias, residual, eps, relu, dtype) -> (y, mean, biased_var)`` has
exactly the semantics of ``kernels.plain_batch_norm_train``: statistics over every axis but the
last (channels), in float32, the biased variance returned; ``y = relu(bn(x) + residual)`` with
the residual added before the optional ReLU; the statistics carry no gradient. It is a
``jax.custom_vjp`` whose forward and backward are one FFI call each into
``native/bn_kernels.cc``: the forward reads x once for the per-channel sums and once more
(with the residual) to write y; the backward reads x, y (the ReLU's mask is y > 0) and dy
once for the two per-channel sums and once more to write dx and d_residual. That is the
least memory traffic the operation allows; XLA's formulations take extra passes, and oneDNN
3.2's batch normalization primitives cannot fuse the residual add on CPU
(``fuse_norm_add_relu`` is refused): per op they were 0.8-3.2x the plain formulation where
these kernels are 1.2-4.2x (docs/perf/onednn_wave8.md), so oneDNN's primitives are not used.

Where the extension cannot serve a call, ``fallback`` computes it instead (default
``xla_batch_norm_train``, the plain formulation with autodiff; a kernel set may pass a faster
XLA one): no extension, any dtype but float32 (float64, bfloat16), ``dtype`` other than
x's, a residual of another dtype or shape, non-float32 scale / bias, fewer than 2 axes or an
empty x, a traced ``eps``. On non-CPU platforms (``lax.platform_dependent``) both passes are
XLA's. Under ``vmap`` the FFI calls loop over the mapped axis (each mapped slice keeps its own
statistics). First-order reverse mode only (custom_vjp).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnlab.models import onednn_library

_F32 = jnp.dtype(jnp.float32)


def _xla_forward(x, scale, bias, residual, eps, relu, dtype):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(xf, axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes) - jnp.square(mean))
  z = (xf - mean) * (lax.rsqrt(var + eps) * scale) + bias
  if residual is not None:
    z = z + residual
  return (jax.nn.relu(z) if relu else z).astype(dtype), mean, var


def xla_batch_norm_train(x, scale, bias, residual, eps, relu, dtype):
  """The reference formulation (as ``kernels.plain_batch_norm_train``); gradient by autodiff."""
  y, mean, var = _xla_forward(x, scale, bias, residual, eps, relu, dtype)
  return y, lax.stop_gradient(mean), lax.stop_gradient(var)


def serves(x, scale, bias, residual, eps, relu, dtype) -> bool:
  """Whether ``batch_norm_train`` runs these operands through the native kernels (on CPU)."""
  return (x.ndim >= 2 and x.size > 0 and x.dtype == _F32 and jnp.dtype(dtype) == _F32
          and (residual is None or (residual.dtype == _F32 and residual.shape == x.shape))
          and scale.dtype == _F32 and bias.dtype == _F32
          and scale.shape == bias.shape == (x.shape[-1],)
          and isinstance(eps, (int, float, np.floating)) and onednn_library.available())


def _attrs(eps, relu, has_residual) -> dict:
  return dict(eps=np.float32(eps), relu=bool(relu), residual=bool(has_residual),
              max_threads=np.int64(onednn_library.max_threads()))


def _forward(x, scale, bias, residual, eps, relu):
  """(y, mean, var): the native kernels on CPU, XLA's formulation elsewhere."""
  c = x.shape[-1]

  def on_cpu(x, scale, bias, residual):
    call = jax.ffi.ffi_call("cnnlab_bn_fwd", (
        jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((c,), _F32),
        jax.ShapeDtypeStruct((c,), _F32)), vmap_method="sequential")
    return call(x, scale, bias, x if residual is None else residual,
                **_attrs(eps, relu, residual is not None))

  def elsewhere(x, scale, bias, residual):
    return _xla_forward(x, scale, bias, residual, eps, relu, x.dtype)

  return lax.platform_dependent(x, scale, bias, residual, cpu=on_cpu, default=elsewhere)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _bn(x, scale, bias, residual, eps, relu):
  return _forward(x, scale, bias, residual, eps, relu)


def _bn_fwd(x, scale, bias, residual, eps, relu):
  y, mean, var = _forward(x, scale, bias, residual, eps, relu)
  marker = None if residual is None else jnp.zeros((0,), residual.dtype)
  return (y, mean, var), (x, y, scale, mean, var, marker)


def _xla_backward(x, y, dy, scale, mean, var, eps, relu, has_residual):
  """The textbook two-pass gradient from x and y (for non-CPU platforms)."""
  g = jnp.where(y > 0, dy, 0.0) if relu else dy
  axes, count = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
  rstd = lax.rsqrt(var + eps)
  xhat = (x - mean) * rstd
  d_bias, d_scale = jnp.sum(g, axes), jnp.sum(g * xhat, axes)
  dx = (scale * rstd) * (g - d_bias / count - xhat * (d_scale / count))
  return dx, d_scale, d_bias, (g if has_residual else jnp.zeros((0,), x.dtype))


def _bn_bwd(eps, relu, saved, cotangents):
  x, y, scale, mean, var, marker = saved
  has_residual = marker is not None
  c = x.shape[-1]

  def on_cpu(x, y, dy, scale, mean, var):
    call = jax.ffi.ffi_call("cnnlab_bn_bwd", (
        jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((c,), _F32),
        jax.ShapeDtypeStruct((c,), _F32),
        jax.ShapeDtypeStruct(x.shape if has_residual else (0,), x.dtype)),
        vmap_method="sequential")
    return call(x, y, dy, scale, mean, var, **_attrs(eps, relu, has_residual))

  def elsewhere(x, y, dy, scale, mean, var):
    return _xla_backward(x, y, dy, scale, mean, var, eps, relu, has_residual)

  dx, d_scale, d_bias, d_res = lax.platform_dependent(
      x, y, cotangents[0], scale, mean, var, cpu=on_cpu, default=elsewhere)
  return dx, d_scale, d_bias, (d_res if has_residual else None)


_bn.defvjp(_bn_fwd, _bn_bwd)


@dataclasses.dataclass(frozen=True)
class BatchNormTrain:
  """Train-mode BatchNorm through the native kernels where they serve, ``fallback`` (same
  signature and semantics) elsewhere; see the module docstring."""
  fallback: Callable = xla_batch_norm_train

  def __call__(self, x, scale, bias, residual, eps, relu, dtype):
    if not serves(x, scale, bias, residual, eps, relu, dtype):
      return self.fallback(x, scale, bias, residual, eps, relu, dtype)
    y, mean, var = _bn(x, scale, bias, residual, float(eps), bool(relu))
    return y, lax.stop_gradient(mean), lax.stop_gradient(var)


batch_norm_train = BatchNormTrain()
