"""The extension's train-mode BatchNorm (+ residual add + ReLU) == the plain formulation in value
and gradient (float32 through the native kernels, float64 / bfloat16 through the fallback),
check_grads, vmap, and a jitted train step of a small ResNet."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import cifar_resnet_trainer

from cnnlab.models import kernels, onednn

if not onednn.available():
  pytest.skip(f"oneDNN extension unavailable: {onednn.unavailable_reason()}",
              allow_module_level=True)

# (x shape, residual, relu): 1-D / 2-D / 3-D activations, dense (N, C), odd sizes.
CASES = {
    "2-D relu": ((4, 5, 6, 8), False, True),
    "2-D +residual relu": ((3, 7, 5, 6), True, True),
    "2-D plain": ((2, 9, 3, 5), False, False),
    "2-D +residual, no relu": ((2, 4, 4, 3), True, False),
    "1-D relu": ((3, 17, 5), False, True),
    "1-D +residual relu": ((2, 33, 7), True, True),
    "3-D +residual relu": ((2, 3, 5, 4, 6), True, True),
    "dense (N, C)": ((7, 3), False, True),
    "one channel": ((5, 3, 3, 1), True, True),
}


def _operands(shape, dtype=jnp.float32, seed=0):
  """x (off-centre, so the statistics matter), scale, bias, residual, cotangent dy."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape) * 2.0 + 1.5, dtype)
  scale = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(shape[-1]) * 0.3, jnp.float32)
  residual = jnp.asarray(rng.standard_normal(shape), dtype)
  dy = jnp.asarray(rng.standard_normal(shape), dtype)
  return x, scale, bias, residual, dy


def _value_and_vjp(bn, residual: bool, relu: bool, dtype):
  """(x, scale, bias, res, dy) -> ((y, mean, var), grads of <y, dy> wrt x, scale, bias, res)."""
  def f(x, scale, bias, res, dy):
    def g(x, scale, bias, res):
      return bn(x, scale, bias, res if residual else None, 1e-5, relu, dtype)
    out, vjp = jax.vjp(g, x, scale, bias, res)
    zeros = jnp.zeros_like(out[1])
    return out, vjp((dy, zeros, zeros))
  return jax.jit(f)


def _assert_close(got, want, rtol):
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = float(jnp.abs(b.astype(jnp.float32)).max()) + 1e-30
    np.testing.assert_allclose(a.astype(jnp.float32), b.astype(jnp.float32), rtol=rtol,
                               atol=rtol * scale)


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_match_plain(name):
  shape, residual, relu = CASES[name]
  args = _operands(shape)
  f = _value_and_vjp(onednn.batch_norm_train, residual, relu, jnp.float32)
  assert "cnnlab_bn_fwd" in f.lower(*args).as_text()  # the native kernels serve float32
  got = f(*args)
  want = _value_and_vjp(kernels.plain_batch_norm_train, residual, relu, jnp.float32)(*args)
  _assert_close(got, want, rtol=2e-5)
  (_, mean, var), (_, _, _, d_res) = got
  assert bool(jnp.all(var >= 0)) and mean.dtype == var.dtype == jnp.float32
  if not residual:
    assert not bool(jnp.any(d_res))  # an unused residual gets no gradient


def test_statistics_carry_no_gradient():
  x, scale, bias, _, _ = _operands((4, 3, 3, 5))
  def loss(x, scale):
    _, mean, var = onednn.batch_norm_train(x, scale, bias, None, 1e-5, True, jnp.float32)
    return jnp.sum(mean) + jnp.sum(var)
  for g in jax.grad(loss, argnums=(0, 1))(x, scale):
    assert not bool(jnp.any(g))


@pytest.mark.parametrize("relu,residual", [(False, True), (True, True), (True, False)])
def test_check_grads_numerically(relu, residual):
  x, scale, _, res, _ = _operands((3, 4, 3, 4), seed=1)
  bias = jnp.full((4,), 3.0) if relu else jnp.zeros(4)  # keep z away from the ReLU's kink
  def f(x, scale, bias, res):
    return onednn.batch_norm_train(x, scale, bias, res if residual else None, 1e-5, relu,
                                   jnp.float32)[0]
  check_grads(f, (x, scale, bias, res), order=1, modes=("rev",), eps=1e-2, atol=2e-2,
              rtol=2e-2)


@pytest.mark.parametrize("name", ["2-D +residual relu", "1-D relu", "2-D plain"])
def test_float64_falls_back_to_the_plain_formulation(name):
  shape, residual, relu = CASES[name]
  with jax.enable_x64(True):
    args = _operands(shape, jnp.float64)
    f = _value_and_vjp(onednn.batch_norm_train, residual, relu, jnp.float64)
    assert "cnnlab_bn" not in f.lower(*args).as_text()
    want = _value_and_vjp(kernels.plain_batch_norm_train, residual, relu, jnp.float64)(*args)
    _assert_close(f(*args), want, rtol=1e-12)


def test_bfloat16_and_mixed_dtypes_use_the_fallback():
  x, scale, bias, res, _ = _operands((2, 4, 4, 3))
  calls = []
  def fallback(*args):
    calls.append(args[-1])
    return kernels.plain_batch_norm_train(*args)
  bn = onednn.BatchNormTrain(fallback=fallback)
  xb = x.astype(jnp.bfloat16)
  for args in [(xb, scale, bias, res.astype(jnp.bfloat16), 1e-5, True, jnp.bfloat16),
               (x, scale, bias, None, 1e-5, True, jnp.bfloat16),   # y in another dtype
               (x, scale, bias, res.astype(jnp.bfloat16), 1e-5, True, jnp.float32)]:
    y = bn(*args)[0]
    np.testing.assert_array_equal(y, kernels.plain_batch_norm_train(*args)[0])
  assert len(calls) == 3
  bn(x, scale, bias, res, 1e-5, True, jnp.float32)
  assert len(calls) == 3  # float32 throughout: the native kernels, not the fallback
  assert onednn.BatchNormTrain() == onednn.batch_norm_train  # equal options compare equal


def test_vmap_keeps_statistics_per_slice():
  x, scale, bias, res, _ = _operands((2, 3, 4, 4, 5))  # a mapped leading axis of 2
  def f(bn):
    return jax.jit(jax.vmap(lambda x, r: bn(x, scale, bias, r, 1e-5, True, jnp.float32)))
  _assert_close(f(onednn.batch_norm_train)(x, res), f(kernels.plain_batch_norm_train)(x, res),
                rtol=2e-5)


def _train(kernel_set, steps=3):
  """Parameters and BN statistics after ``steps`` SGD steps of the conftest's CIFAR ResNet
  built with ``kernel_set``."""
  step, state, batches = cifar_resnet_trainer(kernel_set, steps)
  for batch in batches:
    state = step(state, batch)
  return state


@pytest.mark.slow
def test_train_step_matches_the_plain_kernels():
  fast = dataclasses.replace(kernels.CPU, conv=onednn.conv,
                             batch_norm_train=onednn.batch_norm_train)
  for got, want in zip(jax.tree.leaves(_train(fast)), jax.tree.leaves(_train(kernels.PLAIN))):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
