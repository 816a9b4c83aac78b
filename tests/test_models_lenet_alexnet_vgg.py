"""LeNet-5, AlexNet and VGG: parameter counts, shapes, dtypes, dropout, and paper details.

The big models are checked with ``jax.eval_shape`` (no memory, no FLOPs). Where values are
needed, cheap deterministic variables (kernels 1/fan_in, everything else 0 or 1) stand in for a
random init, which would take seconds per model on a small CPU.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.models import layers, lenet

EXPECTED_PARAMS = {
    "lenet5": 61_706,
    "lenet5_1998": 60_000,
    "alexnet": 61_100_840,
    "alexnet_2012": 60_965_224,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}
NAMES = sorted(EXPECTED_PARAMS)
DROPOUT_MODELS = {"alexnet": 64, "alexnet_2012": 227, "vgg11": 32, "vgg16_bn": 32}


def _input(name, batch=2, size=None):
  h, w, c = models.info(name).input_shape
  if size is not None:
    h = w = size
  return jnp.ones((batch, h, w, c), jnp.float32)


def _shapes(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _cheap_variables(model, x):
  """Deterministic variables of the right structure without a random init."""
  flat = flax.traverse_util.flatten_dict(_shapes(model, x))
  out = {}
  for path, s in flat.items():
    if path[-1] == "kernel":
      out[path] = jnp.full(s.shape, 1.0 / np.prod(s.shape[:-1]), s.dtype)
    elif path[-1] in ("scale", "var", "coeff"):
      out[path] = jnp.ones(s.shape, s.dtype)
    else:
      out[path] = jnp.zeros(s.shape, s.dtype)
  return flax.traverse_util.unflatten_dict(out)


# --- registry and counts ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_param_count_is_exact_and_recorded(name):
  model = models.create(name)
  count = layers.count_params(_shapes(model, _input(name, 1))["params"])
  assert count == EXPECTED_PARAMS[name]
  assert models.info(name).num_params == count


@pytest.mark.parametrize("name", NAMES)
def test_info_fields(name):
  info = models.info(name)
  assert info.name == name and info.paper and info.paper_result
  assert len(info.input_shape) == 3
  expected_tv = None if name in ("lenet5", "lenet5_1998", "alexnet_2012") else name
  assert info.torchvision == expected_tv


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="unknown model 'vgg17'.*vgg16_bn"):
    models.create("vgg17")


# --- shapes, backbone, dtypes -----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_at_documented_input(name):
  model = models.create(name)
  x = _input(name)
  out = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
  assert out.shape == (2, models.info(name).num_classes)


@pytest.mark.parametrize("name,dim", [("lenet5", 84), ("lenet5_1998", 84), ("alexnet", 4096),
                                      ("alexnet_2012", 4096), ("vgg16", 4096),
                                      ("vgg11_bn", 4096)])
def test_num_classes_zero_returns_features(name, dim):
  model = models.create(name, num_classes=0)
  x = _input(name)
  variables = _shapes(model, x)
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert out.shape == (2, dim)
  full = _shapes(models.create(name), x)
  assert set(variables["params"]) < set(full["params"]) or name == "lenet5_1998"  # RBF: no params


@pytest.mark.parametrize("name", NAMES)
def test_bf16_compute_keeps_float32_params(name):
  model = models.create(name, dtype=jnp.bfloat16)
  x = _input(name)
  variables = _shapes(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  # The RBF head measures distances in float32; every other head computes in bfloat16.
  assert out.dtype == (jnp.float32 if name == "lenet5_1998" else jnp.bfloat16)


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_lenet_bf16_forward_runs_and_agrees(name):
  x = jax.random.uniform(jax.random.key(1), (16,) + models.info(name).input_shape)
  f32 = models.create(name)
  variables = jax.jit(f32.init)(jax.random.key(0), x)
  ref = np.asarray(jax.jit(f32.apply)(variables, x))
  out = np.asarray(jax.jit(models.create(name, dtype=jnp.bfloat16).apply)(variables, x),
                   np.float32)
  assert np.all(np.isfinite(out))
  # bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4 % per op); measured here:
  # max error 0.7 % (lenet5) and 0.005 % (lenet5_1998's float32 RBF distances) of max |logit|.
  assert np.abs(out - ref).max() <= 0.02 * np.abs(ref).max()
  assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


# --- dropout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,size", sorted(DROPOUT_MODELS.items()))
def test_dropout_only_in_training(name, size):
  model = models.create(name, num_classes=10)
  x = jax.random.uniform(jax.random.key(3), (2, size, size, 3))
  variables = _cheap_variables(model, x)

  eval1 = model.apply(variables, x, train=False, rngs={"dropout": jax.random.key(1)})
  eval2 = model.apply(variables, x, train=False, rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(eval1, eval2)
  train1, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                          mutable=["batch_stats"])
  train2, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                          mutable=["batch_stats"])
  assert not np.allclose(train1, train2)
  assert not np.allclose(train1, eval1)


# --- torchvision layout names -----------------------------------------------------------------
def test_torchvision_names():
  names = lambda name: sorted(_shapes(models.create(name), _input(name, 1))["params"])
  assert names("alexnet") == sorted(
      [f"features_{i}" for i in (0, 3, 6, 8, 10)] + [f"classifier_{i}" for i in (1, 4, 6)])
  convs16 = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
  fcs = [f"classifier_{i}" for i in (0, 3, 6)]
  assert names("vgg16") == sorted([f"features_{i}" for i in convs16] + fcs)
  convs11_bn = (0, 4, 8, 11, 15, 18, 22, 25)
  bn = _shapes(models.create("vgg11_bn"), _input("vgg11_bn", 1))
  assert sorted(bn["batch_stats"]) == sorted(f"features_{i + 1}" for i in convs11_bn)
  assert sorted(bn["params"]) == sorted(
      [f"features_{i}" for i in convs11_bn] + [f"features_{i + 1}" for i in convs11_bn] + fcs)
  assert bn["params"]["features_0"]["bias"].shape == (64,)   # torchvision keeps conv biases


# --- AlexNet 2012 -----------------------------------------------------------------------------
def test_alexnet_2012_layer_table():
  params = _shapes(models.create("alexnet_2012"), _input("alexnet_2012", 1))["params"]
  per_layer = {k: layers.count_params(v) for k, v in params.items()}
  assert per_layer == {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936,
                       "conv5": 442_624, "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}
  assert sum(per_layer.values()) == 60_965_224
  assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)     # two towers: groups=2
  assert params["conv3"]["kernel"].shape == (3, 3, 256, 384)    # conv3 sees both towers


def test_alexnet_2012_init_follows_paper():
  model = models.create("alexnet_2012")
  x = _input("alexnet_2012", 1)

  @jax.jit
  def small_part(key):   # XLA drops whatever this does not return: the big kernels' draws
    params = model.init(key, x)["params"]
    return {k: v["bias"] for k, v in params.items()}, params["conv1"]["kernel"]

  biases, conv1 = small_part(jax.random.key(0))
  for layer, bias in [("conv1", 0), ("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1),
                      ("fc6", 1), ("fc7", 1), ("fc8", 0)]:
    np.testing.assert_array_equal(biases[layer], bias)
  assert abs(float(jnp.std(conv1)) - 0.01) < 5e-4 and abs(float(jnp.mean(conv1))) < 5e-4


def test_alexnet_2012_rejects_other_sizes():
  model = models.create("alexnet_2012")
  with pytest.raises(ValueError, match="227x227"):
    _shapes(model, jnp.ones((1, 224, 224, 3)))


def test_lrn_matches_paper_formula():
  a = np.asarray(jax.random.normal(jax.random.key(0), (1, 2, 2, 9)))
  out = layers.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0).apply({}, a)
  expected = np.empty_like(a)
  for c in range(9):   # b_c = a_c / (k + 1e-4 * sum_{|c'-c|<=2} a_c'^2) ** 0.75 (§3.3)
    window = a[..., max(0, c - 2):min(9, c + 3)]
    expected[..., c] = a[..., c] / (2.0 + 1e-4 * np.sum(window ** 2, -1)) ** 0.75
  np.testing.assert_allclose(out, expected, rtol=1e-6)


# --- LeNet-5 (1998) ---------------------------------------------------------------------------
# Table I of the paper, rows = S2 maps, columns = C3 maps.
PAPER_TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_c3_connection_table_matches_paper():
  table = np.array([[ch == "X" for ch in row] for row in PAPER_TABLE_I.split()])
  np.testing.assert_array_equal(lenet.c3_connections(), table)
  params = _shapes(models.create("lenet5_1998"), _input("lenet5_1998", 1))["params"]
  assert layers.count_params(params["c3"]) == 1516 == 25 * table.sum() + 16
  per_layer = {k: layers.count_params(v) for k, v in params.items()}
  assert per_layer == {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48_120, "f6": 10_164}


def test_c3_ignores_unconnected_maps():
  conv = lenet.PartialConv()
  x = jax.random.normal(jax.random.key(0), (1, 14, 14, 6))
  variables = conv.init(jax.random.key(1), x)
  y = conv.apply(variables, x)
  x2 = x.at[..., 3].add(5.0)              # S2 map 3 feeds C3 maps 1-3, 6-9, 12, 14, 15
  changed = np.any(np.asarray(conv.apply(variables, x2) != y), axis=(0, 1, 2))
  np.testing.assert_array_equal(changed, lenet.c3_connections()[3])


def test_rbf_codes_are_constants_not_params():
  model = models.create("lenet5_1998")
  x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 1))
  variables = model.init(jax.random.key(1), x)
  assert list(variables) == ["params"]
  assert "output" not in variables["params"] and "rbf" not in variables["params"]
  features = models.create("lenet5_1998", num_classes=0).apply(variables, x)
  codes = lenet.rbf_codes(10)
  expected = -np.sum((np.asarray(features)[:, None, :] - codes[None]) ** 2, axis=-1)
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-5, atol=1e-4)


def test_rbf_codes():
  digits = lenet.rbf_codes(10)
  assert digits.shape == (10, 84) and set(np.unique(digits)) == {-1.0, 1.0}
  assert len({row.tobytes() for row in digits}) == 10
  hashed = lenet.rbf_codes(40, "hash")
  np.testing.assert_array_equal(hashed, lenet.rbf_codes(40))          # 'auto' above 10 classes
  assert len({row.tobytes() for row in hashed}) == 40
  np.testing.assert_array_equal(lenet.rbf_codes(4), digits[:4])
  with pytest.raises(ValueError, match="at most 10"):
    lenet.rbf_codes(11, "digits")


def test_lenet5_1998_dense_head_and_errors():
  x = jnp.ones((2, 32, 32, 1))
  dense = models.create("lenet5_1998", head="dense")
  assert layers.count_params(_shapes(dense, x)["params"]) == 60_000 + 850
  with pytest.raises(ValueError, match="head='softmax'"):
    _shapes(models.create("lenet5_1998", head="softmax"), x)
  with pytest.raises(ValueError, match="32x32"):
    _shapes(models.create("lenet5_1998"), jnp.ones((2, 28, 28, 1)))


def test_lenet5_1998_init_range_and_squashing():
  model = models.create("lenet5_1998")
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1))
  params = model.init(jax.random.key(1), x)["params"]
  for layer, fan_in in [("c1", 25), ("c5", 400), ("f6", 120)]:
    assert float(jnp.max(jnp.abs(params[layer]["kernel"]))) <= 2.4 / fan_in
  assert float(jnp.max(jnp.abs(params["s2"]["coeff"]))) <= 2.4 / 4
  features = models.create("lenet5_1998", num_classes=0).apply({"params": params}, x)
  assert float(jnp.max(jnp.abs(features))) <= 1.7159


def test_map_loss_is_eq_9():
  outputs = jnp.array([[-3.0, -1.0, -7.0], [-2.0, -2.5, -0.5]])
  labels = jnp.array([1, 2])
  y = -np.asarray(outputs)   # the RBF penalties
  j = 0.7
  expected = np.mean([y[p, labels[p]] + np.log(np.exp(-j) + np.exp(-y[p]).sum())
                      for p in range(2)])
  np.testing.assert_allclose(lenet.map_loss(outputs, labels, j=j), expected, rtol=1e-6)


def test_lenet5_1998_weight_init_bounds_follow_the_fan_in_power():
  """'paper' draws U(+-2.4/F) (Appendix A), 'sqrt_fan_in' U(+-2.4/sqrt F); C5 has F = 400, so
  the two bounds are 0.006 and 0.12 and a draw of 48,000 weights fills each nearly to its end."""
  import jax
  import numpy as np
  from cnnlab.models import lenet
  x = np.zeros((1, 32, 32, 1), np.float32)
  for name, bound in (("paper", 2.4 / 400), ("sqrt_fan_in", 2.4 / 20)):
    params = lenet.LeNet5_1998(weight_init=name).init(jax.random.PRNGKey(0), x)["params"]
    top = float(np.abs(np.asarray(params["c5"]["kernel"])).max())
    assert 0.99 * bound < top <= bound, (name, top, bound)
  with pytest.raises(ValueError, match="weight_init='fan_out'"):
    lenet.LeNet5_1998(weight_init="fan_out").init(jax.random.PRNGKey(0), x)
