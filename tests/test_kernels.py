"""The CPU formulations of ``cnnlab.models.kernels`` equal the plain ones in value and gradient
(train mode), in 1, 2 and 3 spatial dims; the custom VJPs pass ``jax.test_util.check_grads``
in float64; ``select`` picks by platform and process count."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnnlab import models
from cnnlab.models import kernels, layers, lenet, resnet
from cnnlab.models.kernels import CPU, PLAIN


def _rand(shape, seed=0, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


def _value_and_grads(f, args, seed=99):
  """f(*args) and the gradient of <f(*args), r> for a fixed random cotangent r (one jit)."""
  cot = jax.tree.map(lambda o: _rand(o.shape, seed, o.dtype), jax.eval_shape(f, *args))

  def loss(*a):
    out = f(*a)
    return sum(jnp.vdot(o, c) for o, c in zip(jax.tree.leaves(out), jax.tree.leaves(cot))), out
  grad = jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True)
  grads, out = jax.jit(grad)(*args)
  return out, grads


def _assert_close(a, b, tol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


# --- conv -----------------------------------------------------------------------------------
CONV_CASES = [  # (spatial shape, kernel window, strides, padding, dilation, groups)
    ((9,), (1,), (2,), ((0, 0),), (1,), 1),                      # 1x1 strided: the dot path
    ((9,), (3,), (1,), ((1, 2),), (2,), 2),
    ((6, 7), (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),       # dot path, strided
    ((6, 7), (1, 1), (1, 1), ((1, 1), (0, 0)), (1, 1), 1),       # padded 1x1: a real conv
    ((4, 5, 6), (1, 1, 1), (1, 2, 2), ((0, 0),) * 3, (1, 1, 1), 1),   # dot path
    ((4, 5, 6), (3, 1, 3), (1, 2, 1), ((1, 1), (0, 0), (1, 1)), (1, 1, 1), 2),
]


@pytest.mark.parametrize("spatial,window,strides,padding,dilation,groups", CONV_CASES)
def test_cpu_conv_equals_plain(spatial, window, strides, padding, dilation, groups):
  x = _rand((2, *spatial, 4), 1)
  w = _rand((*window, 4 // groups, 6), 2) * 0.3
  convs = {k: functools.partial(k.conv, strides=strides, padding=padding, dilation=dilation,
                                groups=groups) for k in (PLAIN, CPU)}
  plain = _value_and_grads(convs[PLAIN], (x, w))
  cpu = _value_and_grads(convs[CPU], (x, w))
  _assert_close(cpu, plain)
  reference = jax.lax.conv_general_dilated(
      x, w, strides, padding, rhs_dilation=dilation, feature_group_count=groups,
      dimension_numbers=kernels.dimension_numbers(len(spatial)))
  _assert_close(plain[0], reference, 0)


# --- max pooling ----------------------------------------------------------------------------
POOL_CASES = [  # (spatial shape, window, strides, padding incl. ceil_mode's extra)
    ((11,), (3,), (2,), ((1, 1),)),
    ((7, 9), (3, 3), (2, 2), ((1, 1), (1, 2))),
    ((5, 6, 7), (3, 3, 3), (2, 1, 2), ((1, 1), (0, 0), (1, 2))),
    ((4, 4, 4), (1, 2, 2), (1, 2, 2), ((0, 0),) * 3),
]


@pytest.mark.parametrize("spatial,window,strides,padding", POOL_CASES)
def test_cpu_max_pool_equals_plain(spatial, window, strides, padding):
  x = _rand((2, *spatial, 3), 3)
  pools = {k: functools.partial(k.max_pool, window=window, strides=strides, padding=padding)
           for k in (PLAIN, CPU)}
  _assert_close(_value_and_grads(pools[CPU], (x,)), _value_and_grads(pools[PLAIN], (x,)),
                1e-6)


@pytest.mark.parametrize("k", [PLAIN, CPU], ids=lambda k: k.name)
def test_max_pool_ties_route_the_gradient_to_the_first_max(k):
  x = jnp.zeros((1, 4, 4, 1))             # every window is one big tie
  g = jax.grad(lambda v: k.max_pool(v, (2, 2), (2, 2), ((0, 0), (0, 0))).sum())(x)
  expected = np.zeros((4, 4))
  expected[::2, ::2] = 1.0                # the window's first element, row-major, as torch
  np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], expected)


@pytest.mark.parametrize("axis,window,stride", [(1, 3, 2), (3, 2, 1)])
def test_max_pool_1d_custom_vjp_check_grads(axis, window, stride):
  with jax.enable_x64(True):
    x = jax.random.permutation(jax.random.key(0), 2 * 7 * 6 * 5).reshape(2, 7, 6, 5)
    x = x.astype(jnp.float64) / 10.0      # distinct values: no ties within a finite step
    f = lambda v: kernels.max_pool_1d(v, axis, window, stride)
    check_grads(f, (x,), order=1, modes=("rev",), eps=1e-3)


# --- BatchNorm ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,relu,residual", [
    ((4, 9, 3), False, False), ((2, 5, 4, 3), True, False), ((2, 5, 4, 3), True, True),
    ((2, 3, 2, 4, 3), True, True)], ids=["1d", "2d_relu", "2d_relu_residual", "3d"])
def test_cpu_batch_norm_equals_plain_autodiff(shape, relu, residual):
  x = _rand(shape, 4) * 2.0 + 0.5
  scale, bias = 1.0 + 0.1 * _rand((3,), 5), 0.1 * _rand((3,), 6)
  args = (x, scale, bias) + ((_rand(shape, 7),) if residual else ())

  def fn(k):
    def f(x, scale, bias, res=None):
      y, mean, var = k.batch_norm_train(x, scale, bias, res, 1e-5, relu, jnp.float32)
      return y, mean, var
    return f

  _assert_close(_value_and_grads(fn(CPU), args), _value_and_grads(fn(PLAIN), args), 2e-5)


@pytest.mark.parametrize("relu,residual", [(False, False), (True, True)])
def test_batch_norm_custom_vjp_check_grads(relu, residual):
  with jax.enable_x64(True):
    shape = (3, 4, 2, 3)
    x = jax.random.normal(jax.random.key(1), shape, jnp.float64)
    scale = jnp.asarray([1.0, 0.7, 1.3], jnp.float64)
    bias = jnp.asarray([0.1, -0.2, 0.3], jnp.float64)
    res = jax.random.normal(jax.random.key(2), shape, jnp.float64) if residual else None
    f = lambda x, s, b, *r: kernels.batch_norm_train(x, s, b, r[0] if r else None, 1e-5,
                                                     relu, jnp.float64)[0]
    args = (x, scale, bias) + ((res,) if residual else ())
    check_grads(f, args, order=1, modes=("rev",), eps=1e-5)


# --- fusion barrier and the fused LeNet conv ------------------------------------------------
def test_materialize_is_an_identity_in_value_and_gradient():
  x = _rand((2, 3, 4, 5), 8)
  f = lambda v: jnp.sin(v) * 2.0
  _assert_close(_value_and_grads(lambda v: CPU.materialize(f(v)), (x,)),
                _value_and_grads(lambda v: PLAIN.materialize(f(v)), (x,)), 0)


# LeNet's space-to-depth conv + ReLU + pool is model-specific: it lives in cnnlab.models.lenet
# (chosen by LeNet5 with the CPU kernel sets), tested here against the plain formulation.
@pytest.mark.parametrize("size,padding,cin", [(28, 2, 1), (13, 1, 2)])
def test_s2d_conv_relu_pool_equals_plain(size, padding, cin):
  x = _rand((2, size, size, cin), 9)
  w, b = 0.2 * _rand((5, 5, cin, 4), 10), 0.1 * _rand((4,), 11)
  s2d = lambda x, w, b: lenet.s2d_conv_relu_pool2(x, w, b, padding)
  plain = lambda x, w, b: lenet.conv_relu_pool2(x, w, b, padding, PLAIN)
  _assert_close(_value_and_grads(s2d, (x, w, b)), _value_and_grads(plain, (x, w, b)), 2e-5)


def test_s2d_conv_relu_pool_check_grads():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2), jnp.float64)
    w = 0.2 * jax.random.normal(jax.random.key(1), (5, 5, 2, 3), jnp.float64)
    b = jnp.asarray([0.1, -0.1, 0.2], jnp.float64)
    check_grads(lambda x, w, b: lenet.s2d_conv_relu_pool2(x, w, b, 1), (x, w, b), order=1,
                modes=("rev",), eps=1e-4)


def test_lenet5_takes_space_to_depth_with_the_cpu_kernels_only():
  assert lenet.uses_s2d(CPU) and not lenet.uses_s2d(PLAIN)
  assert lenet.uses_s2d(dataclasses.replace(CPU, name="cpu+onednn"))
  x = _rand((2, 28, 28, 1), 13)
  model = lenet.LeNet5(kernels=PLAIN)
  variables = model.init(jax.random.key(0), x)
  forced = lenet.LeNet5(kernels=PLAIN, s2d=True).apply(variables, x)
  _assert_close(forced, model.apply(variables, x), 2e-5)
  # conv1 on the space-to-depth view: a 3x3 kernel from 4 input to 4 x 6 output channels.
  s2d_kernel = "f32[3,3,4,24]"
  jaxpr = lambda k: str(jax.make_jaxpr(lenet.LeNet5(kernels=k).apply)(variables, x))
  assert s2d_kernel in jaxpr(CPU) and s2d_kernel not in jaxpr(PLAIN)


# --- whole models in train mode ---------------------------------------------------------------
def _train_loss_and_grads(model, x, labels):
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats"])
    return (-jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels]),
            updates)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


@pytest.mark.parametrize("build,shape", [
    (lambda k: resnet.CifarResNet(1, num_classes=5, shortcut="B", kernels=k), (4, 8, 8, 3)),
    (lambda k: resnet.ResNet((1, 1), resnet.Bottleneck, num_classes=5, spatial_dims=1,
                             kernels=k), (4, 32, 2)),
    (lambda k: lenet.LeNet5(num_classes=5, kernels=k), (4, 28, 28, 1)),
], ids=["cifar_resnet", "resnet_1d", "lenet5"])
def test_model_train_step_cpu_equals_plain(build, shape):
  x, labels = _rand(shape, 12), jnp.arange(shape[0]) % 5
  (loss_p, upd_p), grads_p = _train_loss_and_grads(build(PLAIN), x, labels)
  (loss_c, upd_c), grads_c = _train_loss_and_grads(build(CPU), x, labels)
  assert jax.tree.structure(grads_p) == jax.tree.structure(grads_c)
  _assert_close((loss_c, upd_c, grads_c), (loss_p, upd_p, grads_p), 2e-4)


# --- choice at construction -----------------------------------------------------------------
def test_select_by_platform_and_process_count():
  assert kernels.select("cpu", 1) is CPU
  assert kernels.select("cpu", 1, onednn=True).name in ("cpu", "cpu+onednn")
  assert kernels.select("gpu", 1, onednn=True) is PLAIN
  assert kernels.select("gpu", 1) is PLAIN
  assert kernels.select("tpu", 1) is PLAIN
  assert kernels.select("cpu", 2) is PLAIN
  assert kernels.by_name("plain") is PLAIN and kernels.by_name("cpu") is CPU
  assert kernels.by_name("cpu+onednn").name in ("cpu", "cpu+onednn")
  with pytest.raises(ValueError, match="kernels='gpu' is not one of plain, cpu, cpu.onednn"):
    kernels.by_name("gpu")


def test_create_passes_the_selected_kernels_unless_given():
  assert models.create("resnet20").kernels == kernels.select()
  assert models.create("resnet20", kernels=PLAIN).kernels is PLAIN
  assert repr(PLAIN) == "Kernels(plain)"
  # The kernels change the computation, never the variables.
  x = jnp.zeros((1, 8, 8, 3))
  shapes = lambda k: jax.eval_shape(lambda: models.create("resnet20", kernels=k).init(
      jax.random.key(0), x))
  assert jax.tree.structure(shapes(PLAIN)) == jax.tree.structure(shapes(CPU))
  assert layers.count_params(shapes(CPU)["params"]) == 269_722
