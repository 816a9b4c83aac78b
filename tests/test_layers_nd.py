"""Rank-generic layers (1, 2, 3 spatial dims) against direct numpy transcriptions of torch's
definitions, the 2-D layers they reduce to, and BatchNorm's running-variance formulas."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab.models import layers
from cnnlab.models.kernels import CPU, PLAIN


def _rand(shape, seed=0):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape, jnp.float32))


# --- numpy references: torch's pooling definitions, per output position ----------------------
def _out_size(size, k, s, p, ceil_mode):
  num = size + 2 * p - k
  out = (-(-num // s) if ceil_mode else num // s) + 1
  if ceil_mode and (out - 1) * s >= size + p:
    out -= 1
  return out


def _torch_pool(x, k, s, p, ceil_mode, mode, count_include_pad=True):
  rank = x.ndim - 2
  sizes = x.shape[1:-1]
  outs = [_out_size(n, k, s, p, ceil_mode) for n in sizes]
  y = np.zeros((x.shape[0], *outs, x.shape[-1]), np.float64)
  for idx in itertools.product(*map(range, outs)):
    box, divisor = [], 1
    for o, n in zip(idx, sizes):
      start = o * s - p
      end = min(start + k, n + p)
      lo, hi = max(start, 0), min(end, n)
      box.append(slice(lo, hi))
      divisor *= (end - start) if count_include_pad else (hi - lo)
    window = x[(slice(None), *box, slice(None))].reshape(x.shape[0], -1, x.shape[-1])
    y[(slice(None), *idx, slice(None))] = (window.max(1) if mode == "max"
                                           else window.sum(1) / divisor)
  assert rank == len(outs)
  return y


def _torch_adaptive_avg(x, out):
  sizes = x.shape[1:-1]
  y = np.zeros((x.shape[0], *out, x.shape[-1]))
  for idx in itertools.product(*map(range, out)):
    box = tuple(slice((i * n) // o, -(-((i + 1) * n) // o)) for i, n, o in zip(idx, sizes, out))
    y[(slice(None), *idx, slice(None))] = x[(slice(None), *box, slice(None))].mean(
        axis=tuple(range(1, x.ndim - 1)))
  return y


POOLS = [  # (spatial shape, window, stride, padding, ceil_mode)
    ((10,), 3, 2, 1, False), ((10,), 3, 2, 0, True),
    ((7, 9), 3, 2, 1, False), ((7, 9), 3, 2, 0, True), ((14, 14), 2, 2, 0, True),
    ((6, 5, 7), 3, 2, 1, False), ((5, 6, 7), 3, 2, 0, True),
]


@pytest.mark.parametrize("spatial,k,s,p,ceil_mode", POOLS)
def test_max_pool_matches_torch_definition(spatial, k, s, p, ceil_mode):
  x = _rand((2, *spatial, 3), 1)
  expected = _torch_pool(x, k, s, p, ceil_mode, "max")
  pools = jax.jit(lambda v: [layers.max_pool(v, k, s, p, ceil_mode, kernels=kern)
                             for kern in (PLAIN, CPU)])(x)
  for got in pools:
    np.testing.assert_array_equal(np.asarray(got), expected.astype(np.float32))


@pytest.mark.parametrize("spatial,k,s,p,ceil_mode", POOLS)
def test_avg_pool_matches_torch_definition(spatial, k, s, p, ceil_mode):
  x = _rand((2, *spatial, 3), 2)
  pools = jax.jit(lambda v: [layers.avg_pool(v, k, s, p, ceil_mode, count_include_pad=c)
                             for c in (True, False)])(x)
  for got, count_include_pad in zip(pools, (True, False)):
    np.testing.assert_allclose(np.asarray(got),
                               _torch_pool(x, k, s, p, ceil_mode, "avg", count_include_pad),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial,out", [((10,), (3,)), ((10,), (5,)), ((7, 9), (3, 4)),
                                         ((14, 14), (7, 7)), ((5, 7, 6), (2, 3, 6)),
                                         ((4, 4, 4), (1, 1, 1))])
def test_adaptive_avg_pool_matches_torch_bins(spatial, out):
  x = _rand((2, *spatial, 3), 3)
  got = jax.jit(lambda v: layers.adaptive_avg_pool(v, out))(x)
  np.testing.assert_allclose(np.asarray(got), _torch_adaptive_avg(x, out), rtol=1e-5, atol=1e-6)


def test_global_avg_pool_and_flatten_any_rank():
  for spatial in ((5,), (3, 4), (2, 3, 4)):
    x = _rand((2, *spatial, 3), 4)
    np.testing.assert_allclose(np.asarray(layers.global_avg_pool(x)),
                               x.mean(axis=tuple(range(1, x.ndim - 1))), rtol=1e-6)
    channels_first = np.moveaxis(x, -1, 1).reshape(2, -1)
    np.testing.assert_array_equal(np.asarray(layers.flatten_channels_first(x)), channels_first)
  x = _rand((2, 3, 4, 5), 5)
  np.testing.assert_array_equal(np.asarray(layers.flatten_nchw(x)),
                                np.transpose(x, (0, 3, 1, 2)).reshape(2, -1))


# --- convolution ----------------------------------------------------------------------------
def _conv(x, **kw):
  module = layers.conv(**kw)
  variables = module.init(jax.random.key(0), x)
  return module, variables, module.apply(variables, x)


def test_conv_of_lower_rank_equals_the_higher_rank_conv_with_unit_dims():
  """A 1-D conv is the 2-D conv on a height-1 image; a 2-D conv the 3-D conv on depth 1."""
  x1 = _rand((2, 11, 4), 6)
  _, v1, y1 = _conv(x1, features=6, kernel=3, stride=2, padding=1, dilation=2, groups=2,
                    use_bias=True, spatial_dims=1)
  v2 = jax.tree.map(lambda a: a[None] if a.ndim == 3 else a, v1)
  y2 = layers.conv(6, (1, 3), (1, 2), (0, 1), dilation=(1, 2), groups=2,
                   use_bias=True).apply(v2, x1[:, None])
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y2)[:, 0], rtol=1e-6, atol=1e-6)
  x2 = _rand((2, 7, 8, 3), 7)
  _, w2, z2 = _conv(x2, features=4, kernel=3, stride=1, padding=1)
  w3 = jax.tree.map(lambda a: a[None], w2)
  z3 = layers.conv(4, (1, 3, 3), 1, (0, 1, 1)).apply(w3, x2[:, None])
  np.testing.assert_allclose(np.asarray(z2), np.asarray(z3)[:, 0], rtol=1e-6, atol=1e-6)


def test_conv_1d_matches_a_direct_correlation():
  x = _rand((1, 9, 4), 8)
  _, v, y = _conv(x, features=2, kernel=3, stride=2, padding=2, dilation=2, groups=2,
                  use_bias=True, spatial_dims=1)
  w, b = np.asarray(v["params"]["kernel"]), np.asarray(v["params"]["bias"])
  xp = np.pad(x, [(0, 0), (2, 2), (0, 0)])
  expected = np.zeros((1, (9 + 4 - 5) // 2 + 1, 2))
  for o in range(2):               # group g = o: input channels 2g, 2g + 1
    for t in range(expected.shape[1]):
      taps = xp[0, 2 * t + 2 * np.arange(3), 2 * o:2 * o + 2]      # (3, 2)
      expected[0, t, o] = np.sum(taps * w[:, :, o]) + b[o]
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_same_padding_keeps_length_and_puts_the_odd_pixel_after():
  x = _rand((2, 20, 3), 9)
  module, v, y = _conv(x, features=4, kernel=8, padding="same", spatial_dims=1)
  assert y.shape == (2, 20, 4)
  explicit = layers.Conv(4, (8,), padding=((3, 4),)).apply(v, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(explicit))


def test_conv_rejects_input_of_the_wrong_rank():
  with pytest.raises(ValueError, match="2-D conv takes"):
    layers.conv(4, 3).init(jax.random.key(0), jnp.zeros((1, 8, 3)))
  with pytest.raises(ValueError, match="padding=.* has 3 entries; expected 2"):
    layers.conv(4, 3, padding=(1, 1, 1))


# --- BatchNorm running variance ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6, 3), (2, 3, 4, 3), (2, 2, 3, 2, 3)])
@pytest.mark.parametrize("unbiased", [False, True])
def test_batch_norm_running_variance(shape, unbiased):
  x = _rand(shape, 10) * 3.0 + 1.0
  bn = layers.batch_norm(True, unbiased_running_var=unbiased)
  variables = bn.init(jax.random.key(0), x)
  y, updates = bn.apply(variables, x, mutable=["batch_stats"])
  flat = x.reshape(-1, 3).astype(np.float64)
  n, mean, var = flat.shape[0], flat.mean(0), flat.var(0)       # biased
  # Normalisation always uses the biased batch variance, as torch and flax do.
  np.testing.assert_allclose(np.asarray(y), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4,
                             atol=1e-4)
  expected_var = 0.9 * 1.0 + 0.1 * (var * n / (n - 1) if unbiased else var)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), expected_var, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), 0.1 * mean, rtol=1e-5,
                             atol=1e-7)
