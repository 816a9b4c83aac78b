"""Pieces every family shares: conv / norm factories, pooling with PyTorch's semantics,
Local Response Normalisation and the initialisers the papers (and torchvision) use.

Conventions: NHWC activations, HWIO kernels, float32 parameters, compute in ``dtype``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# --- initialisers ---------------------------------------------------------------------------
# torchvision ResNet / VGG convs: kaiming normal, fan_out, ReLU gain (He et al. 2015).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Conv2d / Linear default (kaiming uniform with a=sqrt(5)) == U(-1/sqrt(fan_in), ...).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int):
  """torch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# --- factories ------------------------------------------------------------------------------
def conv(features: int, kernel: int | Sequence[int], stride: int = 1, padding: int | str = 0,
         *, groups: int = 1, use_bias: bool = False, dtype: Dtype = jnp.float32,
         kernel_init=kaiming_normal_fan_out, bias_init=nn.initializers.zeros,
         name: str | None = None) -> nn.Conv:
  """A 2-D convolution with PyTorch-style integer padding (symmetric), NHWC / HWIO."""
  k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  pad = padding if isinstance(padding, str) else [(padding, padding)] * 2
  return nn.Conv(features, k, strides=(stride, stride), padding=pad,
                 feature_group_count=groups, use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init, bias_init=bias_init,
                 name=name)


def batch_norm(train: bool, *, dtype: Dtype = jnp.float32, zero_scale: bool = False,
               epsilon: float = 1e-5, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm matching torch.nn.BatchNorm2d defaults (momentum 0.1 == decay 0.9, eps 1e-5).

  ``epsilon`` overrides torch's 1e-5 where a torchvision model does (GoogLeNet uses 1e-3).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                      dtype=dtype, param_dtype=jnp.float32,
                      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                      name=name)


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
  """Extra right/bottom padding that makes floor-mode pooling equal torch's ceil_mode=True."""
  out_floor = (size + 2 * pad - window) // stride + 1
  out_ceil = -(-(size + 2 * pad - window) // stride) + 1
  # torch drops a last window that would start entirely in the right padding.
  if (out_ceil - 1) * stride >= size + pad:
    out_ceil -= 1
  return max(0, (out_ceil - 1) * stride + window - (size + 2 * pad)) if out_ceil > out_floor else 0


def max_pool(x, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
  """torch.nn.MaxPool2d on NHWC input (padding is -inf, so it never wins)."""
  pads = []
  for size in x.shape[1:3]:
    extra = _ceil_extra(size, window, stride, padding) if ceil_mode else 0
    pads.append((padding, padding + extra))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def adaptive_avg_pool(x, output_size: int | tuple[int, int]):
  """torch.nn.AdaptiveAvgPool2d on NHWC input: bin i covers [floor(i*H/o), ceil((i+1)*H/o))."""
  oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
  h, w = x.shape[1:3]
  if (h, w) == (oh, ow):
    return x
  if h % oh == 0 and w % ow == 0:
    return nn.avg_pool(x, (h // oh, w // ow), (h // oh, w // ow))
  rows = []
  for i in range(oh):
    h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


def global_avg_pool(x):
  return jnp.mean(x, axis=(1, 2))


def flatten_nchw(x):
  """Flattens NHWC activations in torch's NCHW order, so torch Linear weights apply as-is."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


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
