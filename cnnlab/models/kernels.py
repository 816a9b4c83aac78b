"""Implementations of the few operations whose formulation decides a model's speed, chosen when
the model is constructed (``Kernels``), never by a switch read while tracing.

    PLAIN   the textbook formulations: lax convolution, reduce-window max pooling, BatchNorm and
            its gradient by autodiff, no fusion barriers. Right on accelerators and the
            reference every faster formulation is tested against.
    CPU     formulations measured faster on XLA:CPU (1x1 convolution as a matrix product,
            separable slice-max pooling with a hand-written gradient, BatchNorm with a two-pass
            gradient and fused residual + ReLU, a fusion barrier). Same values up to float
            rounding and the same gradients.

The table holds generic operations only: a formulation that serves one model lives with that
model (LeNet's space-to-depth conv + ReLU + pool is in ``cnnlab.models.lenet``).

    CPU+ONEDNN  the CPU set with oneDNN's convolutions and cnnlab's native train-mode BatchNorm
            (the FFI extension of ``cnnlab.models.onednn``), where it builds and loads.

A run's set is decided by ``cnnlab.config.choose_kernels`` (``model.kernels='auto'``: the
oneDNN set on a single-process CPU host where the extension is usable) and built by
``by_name``; ``select()`` is what ``models.create`` uses when given none (CPU / PLAIN, without
compiling the extension as a side effect of building a model).

Conventions (all ranks: 1, 2 or 3 spatial dims): activations (N, *spatial, C); conv kernels
(*window, C_in // groups, C_out); ``strides``/``dilation``/``window`` one int per spatial dim;
``padding`` one (lo, hi) pair per spatial dim.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from cnnlab.config import registry as config_registry
from cnnlab.models import onednn


@dataclasses.dataclass(frozen=True, repr=False)
class Kernels:
  """One implementation per operation; see the module docstring for the signatures.

  conv(x, w, *, strides, padding, dilation, groups) -> y
  max_pool(x, window, strides, padding) -> y           (-inf padding; gradient to the first max)
  batch_norm_train(x, scale, bias, residual, eps, relu, dtype) -> (y, mean, biased var)
  materialize(x) -> x                                   (fusion barrier or identity)
  """
  name: str
  conv: Callable
  max_pool: Callable
  batch_norm_train: Callable
  materialize: Callable

  def __repr__(self) -> str:
    return f"Kernels({self.name})"


def dimension_numbers(rank: int) -> tuple[str, str, str]:
  """Channels-last dimension numbers for ``rank`` spatial dims, e.g. NHWC / HWIO / NHWC."""
  if rank not in (1, 2, 3):
    raise ValueError(f"spatial rank {rank} is not supported; use 1, 2 or 3")
  spatial = "DHW"[3 - rank:]
  return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


# --- plain formulations ---------------------------------------------------------------------
def plain_conv(x, w, *, strides, padding, dilation, groups):
  return jax.lax.conv_general_dilated(
      x, w, tuple(strides), tuple(map(tuple, padding)), rhs_dilation=tuple(dilation),
      dimension_numbers=dimension_numbers(x.ndim - 2), feature_group_count=groups)


def plain_max_pool(x, window, strides, padding):
  pads = ((0, 0), *map(tuple, padding), (0, 0))
  # A Python -inf init lets JAX recognise the max monoid (differentiable reduce_window_max).
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1),
                               pads)


def stats_dtype(dtype):
  """BatchNorm's statistics dtype: float32, or float64 for float64 input."""
  return jnp.promote_types(dtype, jnp.float32)


def _bn_forward(x, scale, bias, residual, eps, relu, dtype):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(stats_dtype(x.dtype))
  mean = jnp.mean(xf, axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes) - jnp.square(mean))
  rstd = jax.lax.rsqrt(var + eps)
  z = (xf - mean) * (rstd * scale) + bias
  if residual is not None:
    z = z + residual
  y = (jax.nn.relu(z) if relu else z).astype(dtype)
  return y, mean, var, rstd


def plain_batch_norm_train(x, scale, bias, residual, eps, relu, dtype):
  """BatchNorm over all but the last axis with batch statistics; gradient by autodiff."""
  y, mean, var, _ = _bn_forward(x, scale, bias, residual, eps, relu, dtype)
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


def identity(x):
  return x


PLAIN = Kernels("plain", plain_conv, plain_max_pool, plain_batch_norm_train, identity)


# --- CPU formulations -----------------------------------------------------------------------
def cpu_conv(x, w, *, strides, padding, dilation, groups):
  """A 1x1 convolution without padding or groups as a matrix product over the channels (after
  the stride's subsampling); anything else as ``plain_conv``. XLA:CPU differentiates a dot into
  two dots but a convolution's weight gradient into two transposes plus a convolution; on a Zen4
  core the dot form is 1.6-5.4x faster for ResNet-50's 1x1 layers (forward + backward)."""
  window = w.shape[:-2]
  if all(k == 1 for k in window) and groups == 1 and all(tuple(p) == (0, 0) for p in padding):
    if any(s != 1 for s in strides):
      x = x[(slice(None), *(slice(None, None, s) for s in strides), slice(None))]
    y = jnp.dot(x.reshape(-1, x.shape[-1]), w.reshape(w.shape[-2], w.shape[-1]))
    return y.reshape(*x.shape[:-1], w.shape[-1])
  return plain_conv(x, w, strides=strides, padding=padding, dilation=dilation, groups=groups)


def cpu_max_pool(x, window, strides, padding):
  """Separable max pooling: a 1-D max along each spatial axis in turn (last first), each with a
  hand-written gradient that routes an output's gradient to the first maximum of its window, as
  torch does. XLA:CPU's reduce-window and its select-and-scatter gradient took 14 % of a
  ResNet-18 step for the stem pool alone."""
  pads = ((0, 0), *map(tuple, padding), (0, 0))
  if any(p != (0, 0) for p in pads):
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
  for axis in reversed(range(1, x.ndim - 1)):
    if window[axis - 1] != 1 or strides[axis - 1] != 1:
      x = max_pool_1d(x, axis, window[axis - 1], strides[axis - 1])
  return x


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_1d(x, axis: int, window: int, stride: int):
  """Max over windows of ``window`` elements every ``stride`` along ``axis`` (VALID)."""
  return _pool_1d_argmax(x, axis, window, stride)[0]


def _pool_1d_argmax(x, axis, window, stride):
  n = (x.shape[axis] - window) // stride + 1
  taps = [jax.lax.slice_in_dim(x, i, i + stride * (n - 1) + 1, stride, axis)
          for i in range(window)]
  best, arg = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for i, tap in enumerate(taps[1:], 1):
    better = tap > best            # strict: ties keep the first, as torch's kernels do
    best = jnp.where(better, tap, best)
    arg = jnp.where(better, jnp.int8(i), arg)
  return best, arg


def _max_pool_1d_fwd(x, axis, window, stride):
  best, arg = _pool_1d_argmax(x, axis, window, stride)
  return best, (arg, jnp.zeros((0,), x.dtype), x.shape)


def _max_pool_1d_bwd(axis, window, stride, saved, g):
  arg, like, shape = saved
  n = arg.shape[axis]
  total = None
  for i in range(window):
    # Output j's tap i sits at input position i + stride * j: a strided pad puts it back.
    config = [(0, 0, 0)] * len(shape)
    config[axis] = (i, shape[axis] - i - stride * (n - 1) - 1, stride - 1)
    part = jax.lax.pad(jnp.where(arg == i, g, jnp.zeros((), g.dtype)),
                       jnp.zeros((), g.dtype), config)
    total = part if total is None else total + part
  return (total.astype(like.dtype),)


max_pool_1d.defvjp(_max_pool_1d_fwd, _max_pool_1d_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def batch_norm_train(x, scale, bias, residual, eps, relu, dtype):
  """``plain_batch_norm_train`` with a hand-written backward: the textbook two-pass BatchNorm
  gradient from the input and the output, instead of autodiff of the layer-by-layer form (which
  stores a centred copy of the input and recomputes the ReLU mask). The statistics carry no
  gradient (they only feed the running averages). CIFAR ResNet-20 step 3-5 % faster on CPU."""
  return _bn_forward(x, scale, bias, residual, eps, relu, dtype)[:3]


def _bn_train_fwd(x, scale, bias, residual, eps, relu, dtype):
  y, mean, var, rstd = _bn_forward(x, scale, bias, residual, eps, relu, dtype)
  like_residual = None if residual is None else jnp.zeros((), residual.dtype)  # its dtype
  return (y, mean, var), (x, y if relu else None, scale, mean, rstd, like_residual)


def _bn_train_bwd(eps, relu, dtype, saved, cotangents):
  x, y, scale, mean, rstd, like_residual = saved
  g = cotangents[0].astype(mean.dtype)
  if relu:
    g = jnp.where(y > 0, g, 0.0)
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  xhat = (x.astype(mean.dtype) - mean) * rstd
  d_bias = jnp.sum(g, axes)
  d_scale = jnp.sum(g * xhat, axes)
  d_x = (scale * rstd) * (g - d_bias / count - xhat * (d_scale / count))
  d_residual = None if like_residual is None else g.astype(like_residual.dtype)
  return (d_x.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype),
          d_residual)


batch_norm_train.defvjp(_bn_train_fwd, _bn_train_bwd)


def materialize(x):
  """Returns ``x`` unchanged, computed once into its own buffer.

  XLA:CPU's fusion pass copies cheap elementwise producers into every consumer. In a ResNet
  that means each weight-gradient convolution's input transpose recomputes the chain of
  BatchNorm-ReLU-residual-add of the blocks before it, in transposed (cache-hostile) order:
  30-40 % of a CIFAR ResNet-20 step. A ``lax.cond`` whose two branches are both the identity is
  opaque to fusion and costs one scalar compare (ResNet-20 train step 1.24x faster per Zen4
  core). Only for a single process: across processes the predicate would need a collective.
  """
  flat = x.reshape(-1)
  return jax.lax.cond(flat[0] == flat[0], lambda v: v, lambda v: v * 1, x)


CPU = Kernels("cpu", cpu_conv, cpu_max_pool, batch_norm_train, materialize)


# --- choice ---------------------------------------------------------------------------------
def with_onednn(kernels: Kernels) -> Kernels:
  """``kernels`` with oneDNN's convolutions and cnnlab's native BatchNorm (same extension;
  the formulation of ``kernels`` wherever the extension cannot serve a call) when the
  extension is built and usable here; ``kernels`` itself otherwise (one line says why)."""
  if not onednn.available():
    return kernels
  return dataclasses.replace(
      kernels, name=kernels.name + "+onednn", conv=onednn.conv,
      batch_norm_train=onednn.BatchNormTrain(fallback=kernels.batch_norm_train))


def select(platform: str | None = None, process_count: int | None = None, *,
           onednn: bool = False) -> Kernels:
  """What ``models.create`` uses when not told: CPU for a single-process CPU run (with the
  oneDNN extension if ``onednn``), PLAIN otherwise. Runs decide with ``model.kernels='auto'``
  instead (cnnlab.config.choose_kernels: the oneDNN set wherever it is usable), so a library
  call that only builds a model never compiles the extension as a side effect.
  ``platform`` / ``process_count`` default to ``jax.default_backend()`` / ``jax.process_count()``
  (which start JAX's backend: call after any process-level set-up of an entry point).
  """
  platform = jax.default_backend() if platform is None else platform
  process_count = jax.process_count() if process_count is None else process_count
  if platform == "cpu" and process_count == 1:
    return with_onednn(CPU) if onednn else CPU
  return PLAIN


BY_NAME = {"plain": PLAIN, "cpu": CPU}
NAMES = (*BY_NAME, "cpu+onednn")   # every name ``by_name`` (and a config) accepts
for _name in NAMES:
  config_registry.register("kernels", _name)


def by_name(name: str) -> Kernels:
  """The kernels a config or flag names: 'plain', 'cpu' or 'cpu+onednn' (CPU with the oneDNN
  conv and native BatchNorm; plain CPU where the extension is not built)."""
  if name == "cpu+onednn":
    return with_onednn(CPU)
  if name not in BY_NAME:
    raise ValueError(f"kernels={name!r} is not one of {', '.join(NAMES)}")
  return BY_NAME[name]
