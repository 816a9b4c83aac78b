"""Layers that make maps larger, for 1, 2 or 3 spatial dims: the transposed ("up-")
convolution of U-Net's expanding path and torch's linear interpolation, which FCN and DeepLabV3
use to bring their logits back to the input size.

Conventions as in ``cnnlab.models.layers``: channels-last (N, *spatial, C), float32 parameters,
compute in ``dtype``, heavy operations through the injected ``Kernels``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models.kernels import PLAIN, Kernels
from cnnlab.models.layers import Dtype, ntuple


# --- transposed convolution (up-convolution) -------------------------------------------------
def upconv_he_normal(key, shape, dtype=jnp.float32):
  """He et al.'s N(0, 2 / fan_in) for a ``ConvTranspose`` kernel (*window, C_in, C_out): each
  output sees one input position, so the fan-in is C_in (the U-Net paper's sqrt(2/N), §3)."""
  return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / shape[-2])


def conv_transpose(features: int, kernel: int | Sequence[int], *, use_bias: bool = True,
                   dtype: Dtype = jnp.float32, kernel_init=upconv_he_normal,
                   bias_init=nn.initializers.zeros, spatial_dims: int | None = None,
                   kernels: Kernels = PLAIN, name: str | None = None) -> "ConvTranspose":
  """A ``ConvTranspose`` whose stride is its window; the rank as for ``conv``."""
  rank = len(kernel) if not isinstance(kernel, int) else (spatial_dims or 2)
  return ConvTranspose(features, ntuple(kernel, rank, "kernel"), use_bias=use_bias, dtype=dtype,
                       kernel_init=kernel_init, bias_init=bias_init, kernels=kernels, name=name)


class ConvTranspose(nn.Module):
  """torch.nn.ConvTranspose{1,2,3}d with stride == kernel size and no padding (U-Net's 2x2
  "up-convolution"): every input position expands into its own block of outputs,

      y[s * i + a, o] = sum_c x[i, c] * kernel[a, c, o] + bias[o]     (a < s, per spatial dim)

  so the output is ``kernel_size`` times the input along each dim. ``kernel`` is
  (*window, C_in, C_out): torch's weight (C_in, C_out, *window) with its axes moved, no flip.
  Computed as a 1x1 convolution to prod(window) * C_out channels through ``kernels.conv`` (a
  matrix product with the CPU kernels) and a depth-to-space reshape; tested against
  ``lax.conv_transpose`` in value and gradient.
  """
  features: int
  kernel_size: tuple
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Any = upconv_he_normal
  bias_init: Any = nn.initializers.zeros
  kernels: Kernels = PLAIN

  @nn.compact
  def __call__(self, x):
    rank, window, cin = len(self.kernel_size), tuple(self.kernel_size), x.shape[-1]
    if x.ndim != rank + 2:
      raise ValueError(f"a {rank}-D transposed conv takes (N, *{rank} spatial dims, C) input; "
                       f"got shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init, (*window, cin, self.features), jnp.float32)
    w = jnp.moveaxis(kernel, -2, 0).reshape((1,) * rank + (cin, -1)).astype(self.dtype)
    y = self.kernels.conv(x.astype(self.dtype), w, strides=(1,) * rank,
                          padding=((0, 0),) * rank, dilation=(1,) * rank, groups=1)
    y = depth_to_space(y, window)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
    return y


def depth_to_space(x, window: Sequence[int]):
  """(N, *S, prod(window) * C) with channels ordered (*window, C) -> (N, *(S * window), C)."""
  rank, spatial = len(window), x.shape[1:-1]
  c = x.shape[-1] // math.prod(window)
  x = x.reshape(x.shape[0], *spatial, *window, c)
  order = [0] + [a for d in range(rank) for a in (1 + d, 1 + rank + d)] + [1 + 2 * rank]
  x = x.transpose(order)
  return x.reshape(x.shape[0], *(n * k for n, k in zip(spatial, window)), c)


# --- resizing ---------------------------------------------------------------------------------
def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) matrix of torch's linear interpolation with align_corners=False, computed
  in float32 as torch's CPU kernel does: source = max((dst + 0.5) * n_in / n_out - 0.5, 0),
  between floor(source) and the next sample (clamped to the last one)."""
  scale = np.float32(n_in) / np.float32(n_out)
  src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale
                   - np.float32(0.5), np.float32(0))
  lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo.astype(np.float32)
  w = np.zeros((n_out, n_in), np.float32)
  np.add.at(w, (np.arange(n_out), lo), np.float32(1) - frac)
  np.add.at(w, (np.arange(n_out), hi), frac)
  return w


def resize_linear(x, size: int | Sequence[int]):
  """torch.nn.functional.interpolate(mode='linear' / 'bilinear' / 'trilinear',
  align_corners=False) to ``size`` (one int per spatial dim, or one for all) on channels-last
  input: separable, one small interpolation matrix per spatial dim (no antialiasing when
  shrinking, as torch)."""
  rank = x.ndim - 2
  size = ntuple(size, rank, "size")
  for axis, (n_in, n_out) in enumerate(zip(x.shape[1:-1], size), 1):
    if n_in != n_out:
      w = jnp.asarray(_linear_weights(n_in, n_out), x.dtype)
      x = jnp.moveaxis(jnp.tensordot(x, w, axes=((axis,), (1,)),
                                     precision=jax.lax.Precision.HIGHEST), -1, axis)
  return x
