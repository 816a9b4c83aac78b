"""The up-sampling layers: ``ConvTranspose`` (a 1x1 conv + depth-to-space) against
``lax.conv_transpose`` in value and gradient at every rank and with the CPU kernels, and
``resize_linear`` against a per-pixel transcription of torch's bilinear interpolation
(align_corners=False), growing and shrinking."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab.models import upsampling
from cnnlab.models.kernels import CPU, PLAIN


def _rand(shape, seed):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _value_and_grads(f, args, seed=99):
  cot = _rand(jax.eval_shape(f, *args).shape, seed)
  return jax.jit(jax.value_and_grad(lambda *a: jnp.vdot(f(*a), cot),
                                    argnums=tuple(range(len(args)))))(*args)


def _lax_reference(x, kernel, bias):
  """torch's ConvTranspose (stride = window, no padding) via lax.conv_transpose: a kernel in
  the forward conv's layout (*window, out, in) whose spatial flip and in / out swap
  (transpose_kernel=True) make it the gradient of that conv."""
  rank = x.ndim - 2
  spatial = "DHW"[3 - rank:]
  y = jax.lax.conv_transpose(x, jnp.swapaxes(kernel, -1, -2), kernel.shape[:rank], "VALID",
                             dimension_numbers=(f"N{spatial}C", f"{spatial}IO",
                                                f"N{spatial}C"),
                             transpose_kernel=True)
  return y + bias


@pytest.mark.parametrize("spatial,window", [((5,), (2,)), ((3, 4), (2, 2)), ((3, 2, 4), (2, 2, 2)),
                                            ((3, 4), (3, 2))])
@pytest.mark.parametrize("kernels", [PLAIN, CPU], ids=lambda k: k.name)
def test_conv_transpose_equals_lax_in_value_and_gradient(spatial, window, kernels):
  x, cin, cout = _rand((2, *spatial, 3), 1), 3, 5
  layer = upsampling.ConvTranspose(cout, window, kernels=kernels)
  variables = layer.init(jax.random.key(0), x)
  kernel = variables["params"]["kernel"]
  bias = 0.1 * _rand((cout,), 2)
  assert kernel.shape == (*window, cin, cout)
  mine = lambda x, k, b: layer.apply({"params": {"kernel": k, "bias": b}}, x)
  out, grads = _value_and_grads(mine, (x, kernel, bias))
  ref_out, ref_grads = _value_and_grads(_lax_reference, (x, kernel, bias))
  assert jax.eval_shape(mine, x, kernel, bias).shape == (2, *(n * k for n, k in
                                                              zip(spatial, window)), cout)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  for g, r in zip(grads, ref_grads, strict=True):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_conv_transpose_block_formula_and_init():
  """y[2i + a, 2j + b, o] = sum_c x[i, j, c] kernel[a, b, c, o]: torch's orientation, no flip."""
  x = _rand((1, 2, 3, 4), 3)
  layer = upsampling.conv_transpose(6, 2, use_bias=False)
  variables = layer.init(jax.random.key(1), x)
  k = np.asarray(variables["params"]["kernel"])
  y = np.asarray(layer.apply(variables, x))
  for i, j, a, b in np.ndindex(2, 3, 2, 2):
    np.testing.assert_allclose(y[0, 2 * i + a, 2 * j + b], np.asarray(x)[0, i, j] @ k[a, b],
                               rtol=1e-5, atol=1e-6)
  big = upsampling.conv_transpose(64, 2).init(jax.random.key(2), jnp.zeros((1, 2, 2, 256)))
  std = float(np.std(big["params"]["kernel"]))
  assert abs(std - math.sqrt(2.0 / 256)) < 0.05 * math.sqrt(2.0 / 256)   # He, fan-in C_in


def _torch_bilinear_1d(x, n_out, axis):
  """torch's upsample_linear1d per output index (align_corners=False), in float64."""
  n_in = x.shape[axis]
  out = []
  for dst in range(n_out):
    src = max((dst + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = min(int(math.floor(src)), n_in - 1)
    hi = min(lo + 1, n_in - 1)
    lam = src - lo
    out.append((1 - lam) * np.take(x, lo, axis) + lam * np.take(x, hi, axis))
  return np.stack(out, axis)


@pytest.mark.parametrize("shape,size", [((2, 3, 5, 2), (7, 11)), ((1, 10, 13, 3), (75, 101)),
                                        ((1, 9, 8, 1), (4, 3)), ((2, 6, 3), (13,)),
                                        ((1, 3, 4, 2, 2), (5, 4, 7))])
def test_resize_linear_is_torchs_interpolation(shape, size):
  x = np.asarray(_rand(shape, 4), np.float64)
  want = x
  for axis, n in enumerate(size, 1):
    want = _torch_bilinear_1d(want, n, axis)
  got = upsampling.resize_linear(jnp.asarray(x, jnp.float32), size)
  assert got.shape == (shape[0], *size, shape[-1])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_resize_linear_growing_equals_jax_image_and_is_differentiable():
  x = _rand((1, 6, 7, 2), 5)
  ours = lambda v: upsampling.resize_linear(v, (17, 23))
  theirs = lambda v: jax.image.resize(v, (1, 17, 23, 2), "linear", antialias=False)
  np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
  cot = _rand((1, 17, 23, 2), 6)
  g1 = jax.grad(lambda v: jnp.vdot(ours(v), cot))(x)
  g2 = jax.grad(lambda v: jnp.vdot(theirs(v), cot))(x)
  np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5)
  assert upsampling.resize_linear(x, (6, 7)) is x                 # same size: untouched
