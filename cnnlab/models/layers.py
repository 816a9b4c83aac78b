"""Pieces every family shares, for 1, 2 or 3 spatial dimensions: conv / norm factories,
pooling with PyTorch's semantics, Local Response Normalisation and the initialisers the papers
(and torchvision) use.

Conventions: channels-last activations (N, *spatial, C), kernels (*window, C_in // groups,
C_out), float32 parameters, compute in ``dtype``. The rank comes from the kernel / window tuple,
or from ``spatial_dims`` where a single int is given. How the heavy operations are computed is
the ``Kernels`` the layer is built with (``cnnlab.models.kernels``); the default is PLAIN.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.models.kernels import PLAIN, Kernels, stats_dtype

Dtype = Any

# --- initialisers ---------------------------------------------------------------------------
# torchvision ResNet / VGG convs: kaiming normal, fan_out, ReLU gain (He et al. 2015).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.ConvNd / Linear default (kaiming uniform with a=sqrt(5)) == U(-1/sqrt(fan_in), ...).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int):
  """torch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def ntuple(value: int | Sequence[int], rank: int, what: str = "value") -> tuple:
  """``value`` as a tuple of ``rank`` ints (an int is repeated)."""
  if isinstance(value, int):
    return (value,) * rank
  value = tuple(value)
  if len(value) != rank:
    raise ValueError(f"{what}={value} has {len(value)} entries; expected {rank} (one per "
                     "spatial dim)")
  return value


# --- convolution ----------------------------------------------------------------------------
def conv(features: int, kernel: int | Sequence[int], stride: int | Sequence[int] = 1,
         padding: int | Sequence[int] | str = 0, *, groups: int = 1,
         dilation: int | Sequence[int] = 1, use_bias: bool = False, dtype: Dtype = jnp.float32,
         kernel_init=kaiming_normal_fan_out, bias_init=nn.initializers.zeros,
         spatial_dims: int | None = None, kernels: Kernels = PLAIN,
         name: str | None = None) -> "Conv":
  """A convolution with PyTorch-style integer padding (symmetric per dim), or 'SAME'/'VALID'.

  The rank is ``len(kernel)`` for a tuple kernel, else ``spatial_dims`` (default 2).
  """
  rank = len(kernel) if not isinstance(kernel, int) else (spatial_dims or 2)
  pad = padding if isinstance(padding, str) else tuple((p, p) for p in
                                                       ntuple(padding, rank, "padding"))
  return Conv(features, ntuple(kernel, rank, "kernel"), strides=ntuple(stride, rank, "stride"),
              padding=pad, feature_group_count=groups,
              kernel_dilation=ntuple(dilation, rank, "dilation"), use_bias=use_bias,
              dtype=dtype, kernel_init=kernel_init, bias_init=bias_init, kernels=kernels,
              name=name)


class Conv(nn.Module):
  """``flax.linen.Conv``'s parameters (``kernel`` (*window, in // groups, out), optional
  ``bias``), float32, and its arithmetic, computed by ``kernels.conv``.

  ``padding`` is 'VALID', 'SAME' (TensorFlow's: the odd pixel goes after) or one (lo, hi)
  pair per spatial dim.
  """
  features: int
  kernel_size: tuple
  strides: tuple | None = None
  padding: Any = "VALID"
  feature_group_count: int = 1
  kernel_dilation: tuple | None = None
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  kernel_init: Any = kaiming_normal_fan_out
  bias_init: Any = nn.initializers.zeros
  kernels: Kernels = PLAIN

  @nn.compact
  def __call__(self, x):
    rank = len(self.kernel_size)
    if x.ndim != rank + 2:
      raise ValueError(f"a {rank}-D conv takes (N, *{rank} spatial dims, C) input; got shape "
                       f"{x.shape}")
    groups = self.feature_group_count
    strides = self.strides or (1,) * rank
    dilation = self.kernel_dilation or (1,) * rank
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1] // groups, self.features), jnp.float32)
    bias = (self.param("bias", self.bias_init, (self.features,), jnp.float32)
            if self.use_bias else None)
    padding = self.padding
    if isinstance(padding, str):
      dilated = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, dilation)]
      padding = jax.lax.padtype_to_pads(x.shape[1:-1], dilated, strides, padding.upper())
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = self.kernels.conv(x, kernel, strides=tuple(strides),
                          padding=tuple(tuple(p) for p in padding),
                          dilation=tuple(dilation), groups=groups)
    if bias is not None:
      y = y + bias.astype(self.dtype)
    return y


# --- BatchNorm ------------------------------------------------------------------------------
def batch_norm(train: bool, *, dtype: Dtype = jnp.float32, zero_scale: bool = False,
               epsilon: float = 1e-5, relu: bool = False, unbiased_running_var: bool = False,
               momentum: float = 0.9, use_scale: bool = True, use_bias: bool = True,
               kernels: Kernels = PLAIN, name: str | None = None) -> "BatchNorm":
  """BatchNorm matching torch.nn.BatchNormNd defaults (momentum 0.1 == decay 0.9, eps 1e-5).

  ``epsilon`` overrides torch's 1e-5 where a torchvision model does (GoogLeNet uses 1e-3);
  ``momentum`` is the running averages' decay (Keras: 0.99). ``use_scale`` / ``use_bias``
  False: no learned scale / shift (torch's ``affine=False``, Caffe's BatchNorm layer).
  ``relu=True`` applies a ReLU after the normalisation (and after adding the optional
  ``residual`` argument of the call) in the same computation. ``unbiased_running_var``: see
  ``BatchNorm``.
  """
  return BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                   dtype=dtype,
                   scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                   relu=relu, unbiased_running_var=unbiased_running_var, use_scale=use_scale,
                   use_bias=use_bias, kernels=kernels, name=name)


class BatchNorm(nn.Module):
  """``flax.linen.BatchNorm`` over the last axis — same variables (params ``scale``/``bias``,
  ``batch_stats`` ``mean``/``var``), statistics (float32, E[x^2] - E[x]^2 clipped at 0), running
  averages (not updated while initialising) and eval arithmetic (float64 for float64 input,
else float32) — with an optional fused
  residual add + ReLU: ``y = relu(bn(x) + residual)``. Training computes through
  ``kernels.batch_norm_train``.

  ``unbiased_running_var``: torch's running variance. Both normalise a batch with its biased
  variance; torch (True) feeds the running average with the unbiased one, var * n / (n - 1)
  for n values per channel, Flax (False) with the biased one.

  ``use_scale`` / ``use_bias`` False: no ``scale`` / ``bias`` parameter (a constant 1 / 0).
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros
  relu: bool = False
  unbiased_running_var: bool = False
  use_scale: bool = True
  use_bias: bool = True
  kernels: Kernels = PLAIN

  @nn.compact
  def __call__(self, x, residual=None):
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    scale = (self.param("scale", self.scale_init, features, jnp.float32) if self.use_scale
             else jnp.ones(features, jnp.float32))
    bias = (self.param("bias", self.bias_init, features, jnp.float32) if self.use_bias
            else jnp.zeros(features, jnp.float32))
    if self.use_running_average:
      mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      y = (x.astype(stats_dtype(x.dtype)) - ra_mean.value) * mul + bias
      if residual is not None:
        y = y + residual
      return (nn.relu(y) if self.relu else y).astype(self.dtype)
    y, mean, var = self.kernels.batch_norm_train(x, scale, bias, residual, self.epsilon,
                                                 self.relu, self.dtype)
    if self.unbiased_running_var:
      n = x.size // x.shape[-1]
      var = var * (n / max(n - 1, 1))
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def dense(features: int, *, dtype: Dtype = jnp.float32, kernel_init=None, bias_init=None,
          name: str | None = None) -> nn.Dense:
  kw = {}
  if kernel_init is not None:
    kw["kernel_init"] = kernel_init
  if bias_init is not None:
    kw["bias_init"] = bias_init
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name, **kw)


# --- pooling with torch semantics -----------------------------------------------------------
def _ceil_extra(size: int, window: int, stride: int, pad: int) -> int:
  """Extra right padding that makes floor-mode pooling equal torch's ceil_mode=True."""
  out_floor = (size + 2 * pad - window) // stride + 1
  out_ceil = -(-(size + 2 * pad - window) // stride) + 1
  # torch drops a last window that would start entirely in the right padding.
  if (out_ceil - 1) * stride >= size + pad:
    out_ceil -= 1
  return max(0, (out_ceil - 1) * stride + window - (size + 2 * pad)) if out_ceil > out_floor else 0


def _pool_geometry(x, window, stride, padding, ceil_mode):
  """(window, strides, torch padding, padding incl. ceil_mode's extra) per spatial dim."""
  rank = x.ndim - 2
  window = ntuple(window, rank, "window")
  strides = window if stride is None else ntuple(stride, rank, "stride")
  pads = ntuple(padding, rank, "padding")
  full = []
  for size, k, s, p in zip(x.shape[1:-1], window, strides, pads):
    full.append((p, p + (_ceil_extra(size, k, s, p) if ceil_mode else 0)))
  return window, strides, pads, tuple(full)


def max_pool(x, window: int | Sequence[int], stride: int | Sequence[int] | None = None,
             padding: int | Sequence[int] = 0, ceil_mode: bool = False, *,
             kernels: Kernels = PLAIN):
  """torch.nn.MaxPoolNd on channels-last input (padding is -inf, so it never wins); the rank
  is ``x.ndim - 2``; ``stride`` defaults to ``window``, as in torch."""
  window, strides, _, full = _pool_geometry(x, window, stride, padding, ceil_mode)
  return kernels.max_pool(x, window, strides, full)


def avg_pool(x, window: int | Sequence[int], stride: int | Sequence[int] | None = None,
             padding: int | Sequence[int] = 0, ceil_mode: bool = False,
             count_include_pad: bool = True):
  """torch.nn.AvgPoolNd on channels-last input: zero padding, each window divided by the number
  of its positions inside the padded input (``count_include_pad``) or inside the input; the
  extra positions ``ceil_mode`` adds never count."""
  window, strides, pads, full = _pool_geometry(x, window, stride, padding, ceil_mode)
  dims, step = (1, *window, 1), (1, *strides, 1)
  cfg = ((0, 0), *full, (0, 0))
  total = jax.lax.reduce_window(x, jnp.zeros((), x.dtype), jax.lax.add, dims, step, cfg)
  inside = jnp.ones(x.shape[1:-1], x.dtype)
  if count_include_pad:
    inside = jnp.pad(inside, [(p, p) for p in pads], constant_values=1)
    extra = [(0, hi - p) for (_, hi), p in zip(full, pads)]
  else:
    extra = list(full)
  inside = jnp.pad(inside, extra)[None, ..., None]
  count = jax.lax.reduce_window(inside, jnp.zeros((), x.dtype), jax.lax.add, dims, step,
                                ((0, 0),) * x.ndim)
  return total / count


def adaptive_avg_pool(x, output_size: int | Sequence[int]):
  """torch.nn.AdaptiveAvgPoolNd on channels-last input: along each spatial dim of size n, bin
  i of o covers [floor(i*n/o), ceil((i+1)*n/o))."""
  rank = x.ndim - 2
  out = ntuple(output_size, rank, "output_size")
  sizes = x.shape[1:-1]
  if sizes == out:
    return x
  if all(n % o == 0 for n, o in zip(sizes, out)):
    split = [d for n, o in zip(sizes, out) for d in (o, n // o)]
    return jnp.mean(x.reshape(x.shape[0], *split, x.shape[-1]),
                    axis=tuple(range(2, 2 * rank + 1, 2)))
  for axis, (n, o) in enumerate(zip(sizes, out), 1):   # a box mean is separable
    if n != o:
      bins = [jax.lax.slice_in_dim(x, (i * n) // o, -(-((i + 1) * n) // o), axis=axis)
              for i in range(o)]
      x = jnp.stack([jnp.mean(b, axis=axis) for b in bins], axis=axis)
  return x


def global_avg_pool(x):
  """Mean over every spatial dim: (N, *spatial, C) -> (N, C)."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def flatten_channels_first(x):
  """Flattens channels-last activations in torch's channels-first order (NCL / NCHW / NCDHW),
  so torch Linear weights apply as they are."""
  return jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1)


flatten_nchw = flatten_channels_first   # the 2-D name the families and docs use


class LocalResponseNorm(nn.Module):
  """Across-channel LRN (Krizhevsky et al. 2012, §3.3), torch.nn.LocalResponseNorm semantics:

      b_c = a_c / (k + alpha / n * sum_{c' in window(c)} a_{c'}^2) ** beta

  The paper writes alpha without the 1/n; torch (and we) divide by n, so the paper's
  alpha=1e-4 corresponds to ``alpha=n*1e-4`` here if one wants the paper's literal formula.
  """
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 2.0

  @nn.compact
  def __call__(self, x):
    sq = jnp.square(x.astype(jnp.float32))
    half = self.size // 2
    sq = jnp.pad(sq, [(0, 0)] * (x.ndim - 1) + [(half, self.size - 1 - half)])
    window_sum = jax.lax.reduce_window(sq, 0.0, jax.lax.add,
                                       (1,) * (x.ndim - 1) + (self.size,), (1,) * x.ndim, "VALID")
    denom = (self.k + self.alpha / self.size * window_sum) ** self.beta
    return (x / denom).astype(x.dtype)


def count_params(tree) -> int:
  return sum(int(math.prod(p.shape)) for p in jax.tree_util.tree_leaves(tree))
