"""GoogLeNet and the ResNet families: exact parameter counts, shapes, train vs eval, auxiliary
heads, zero-init residuals, feature extraction and bfloat16 compute.

Counts and 224-pixel shapes come from ``jax.eval_shape`` (no FLOPs); real forwards use tiny
inputs. Numerical parity with torchvision lives in tests/test_interop_torchvision.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.models import layers, resnet
from cnnlab.models.googlenet import GoogLeNetOutputs

# Trainable parameters with the default classes: torchvision's published counts for the
# ImageNet models; for CIFAR, our own count of §4.2's option-A networks (Table 6 rounds them to
# 0.27M / 0.46M / 0.66M / 0.85M / 1.7M).
EXPECTED = {
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
}
FEATURES = {"googlenet": 1024, "resnet18": 512, "resnet34": 512, "resnet50": 2048,
            "resnet101": 2048, "resnet152": 2048, "resnet20": 64, "resnet110": 64}


def _shapes(model, input_shape, batch=1, train=False):
  """Abstract variables of ``model.init`` (shapes and dtypes only)."""
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros((batch, *input_shape)), train=train))


def _without_aux(params):
  return {k: v for k, v in params.items() if not k.startswith("aux")}


def _init(model, shape, seed=0):
  """A real ``init`` (only where initial values matter: it is slow for big models on CPU)."""
  rngs = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
  return jax.jit(lambda: model.init(rngs, jnp.zeros(shape), train=False))()


def _random_variables(model, shape, seed=0):
  """Variables with ``init``'s structure filled from numpy: no RNG kernels to compile.

  Kernels are He-scaled so activations stay O(1); BatchNorm is kept away from the identity.
  """
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)
    if name in ("scale", "var"):
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.uniform(-0.1, 0.1, leaf.shape), leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, _shapes(model, shape[1:]))


def _apply(model, variables, x, train=False):
  """A jitted apply: one compilation beats op-by-op dispatch for these deep graphs."""
  if not train:
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.key(9)}))(variables, x)


# --- counts and shapes at the documented input size ------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_count_and_output_shape(name):
  info = models.info(name)
  model = models.create(name)
  variables = _shapes(model, info.input_shape)
  assert layers.count_params(_without_aux(variables["params"])) == EXPECTED[name]
  assert info.num_params == EXPECTED[name]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *info.input_shape))), variables)
  assert out.shape == (2, info.num_classes)


def test_googlenet_aux_heads_counted_separately():
  shape = models.info("googlenet").input_shape
  full = _shapes(models.create("googlenet"), shape)["params"]
  assert layers.count_params(full) == 13_004_888
  assert {"aux1", "aux2"} <= set(full)
  plain = _shapes(models.create("googlenet", aux_logits=False), shape)["params"]
  assert not any(k.startswith("aux") for k in plain)
  assert layers.count_params(plain) == 6_624_904


def test_googlenet_init_creates_aux_params_in_either_mode():
  shape = models.info("googlenet").input_shape
  model = models.create("googlenet")
  eval_init = _shapes(model, shape, batch=2, train=False)
  train_init = _shapes(model, shape, batch=2, train=True)
  assert (jax.tree.structure(eval_init) == jax.tree.structure(train_init))


def test_cifar_option_b_adds_projection_params():
  model = models.create("resnet20", shortcut="B")
  params = _shapes(model, (32, 32, 3))["params"]
  # Two 1x1 projections (16->32, 32->64) with their BatchNorms: 512 + 64 + 2048 + 128.
  assert layers.count_params(params) == 272_474
  assert "downsample_conv" in params["layer2_0"] and "downsample_bn" in params["layer3_0"]
  assert "downsample_conv" not in params["layer1_0"]


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_num_classes_zero_returns_pooled_features(name):
  info = models.info(name)
  model = models.create(name, num_classes=0)
  variables = _shapes(model, info.input_shape)
  assert "fc" not in variables["params"]
  assert not any(k.startswith("aux") for k in variables["params"])
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *info.input_shape))), variables)
  assert out.shape == (2, FEATURES[name])


# --- parameter names: the torchvision interop maps by these ----------------------------------
def test_resnet_param_names_mirror_torchvision():
  p = _shapes(models.create("resnet50"), (64, 64, 3))["params"]
  assert {"conv1", "bn1", "fc"} <= set(p)
  assert [k for k in p if k.startswith("layer")] == [
      f"layer{s}_{i}" for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for i in range(n)]
  block = p["layer2_0"]
  assert set(block) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
                        "downsample_conv", "downsample_bn"}
  assert block["conv1"]["kernel"].shape == (1, 1, 256, 128)
  assert block["conv2"]["kernel"].shape == (3, 3, 128, 128)  # v1.5: the stride is here
  assert set(p["layer2_1"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
  assert set(p["bn1"]) == {"scale", "bias"}
  basic = _shapes(models.create("resnet18"), (64, 64, 3))["params"]
  assert set(basic["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2"}


def test_googlenet_param_names_mirror_torchvision():
  v = _shapes(models.create("googlenet"), (64, 64, 3))
  p = v["params"]
  assert set(p["conv1"]) == {"conv", "bn"}
  assert set(p["inception3a"]) == {"branch1", "branch2_0", "branch2_1", "branch3_0",
                                   "branch3_1", "branch4_1"}
  # torchvision's "5x5" branch is 3x3.
  assert p["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (3, 3, 16, 32)
  assert set(p["aux1"]) == {"conv", "fc1", "fc2"}
  assert p["aux1"]["fc1"]["kernel"].shape == (2048, 1024)
  assert p["aux2"]["conv"]["conv"]["kernel"].shape == (1, 1, 528, 128)
  assert set(v["batch_stats"]["inception5b"]["branch1"]["bn"]) == {"mean", "var"}


# --- real forwards on tiny inputs ------------------------------------------------------------
def test_resnet18_train_updates_batch_stats_and_differs_from_eval():
  model = models.create("resnet18", num_classes=5)
  x = jax.random.normal(jax.random.key(3), (2, 64, 64, 3))
  variables = _random_variables(model, x.shape)
  eval_out = _apply(model, variables, x)
  train_out, updates = _apply(model, variables, x, train=True)
  assert eval_out.shape == train_out.shape == (2, 5)
  assert np.all(np.isfinite(np.asarray(train_out)))
  assert not np.allclose(eval_out, train_out)
  assert set(updates) == {"batch_stats"}
  before = variables["batch_stats"]["layer1_0"]["bn1"]["mean"]
  after = updates["batch_stats"]["layer1_0"]["bn1"]["mean"]
  assert not np.allclose(before, after)
  # Eval mode is pure: nothing mutable is needed and the same input gives the same output.
  np.testing.assert_array_equal(eval_out, _apply(model, variables, x))


def test_resnet20_forward_and_option_a_shortcut():
  model = models.create("resnet20")
  x = jax.random.normal(jax.random.key(4), (2, 32, 32, 3))
  variables = _random_variables(model, x.shape)
  out, _ = _apply(model, variables, x, train=True)
  assert out.shape == (2, 10) and np.all(np.isfinite(np.asarray(out)))
  assert _apply(model, variables, x).shape == (2, 10)
  y = resnet._option_a(x[..., :2], 6, 2)
  assert y.shape == (2, 16, 16, 6)
  np.testing.assert_array_equal(y[..., 2:4], x[:, ::2, ::2, :2])
  assert not np.any(y[..., :2]) and not np.any(y[..., 4:])


@pytest.mark.parametrize("block,last_bn", [(resnet.BasicBlock, "bn2"),
                                           (resnet.Bottleneck, "bn3"),
                                           (resnet.CifarBasicBlock, "bn2")])
def test_zero_init_residual_blocks(block, last_bn):
  kw = {"shortcut": "B"} if block is resnet.CifarBasicBlock else {}
  x = jnp.ones((1, 8, 8, 4))
  for zero in (True, False):
    params = block(8, 2, zero_init_residual=zero, **kw).init(jax.random.key(0), x)["params"]
    assert "downsample_bn" in params
    np.testing.assert_array_equal(params[last_bn]["scale"], 0.0 if zero else 1.0)
    for name in params:
      if name != last_bn and (name.startswith("bn") or name.endswith("_bn")):
        np.testing.assert_array_equal(params[name]["scale"], 1.0)


# The flag reaches every block: ResNet with one bottleneck per stage (cheap to init) and
# resnet20 as registered.
@pytest.mark.parametrize("model,last_bn", [
    (resnet.ResNet((1, 1, 1, 1), resnet.Bottleneck, num_classes=10), "bn3"),
    (models.create("resnet20"), "bn2")])
def test_zero_init_residual_models(model, last_bn):
  params = _init(model.clone(zero_init_residual=True), (1, 32, 32, 3))["params"]
  blocks = [k for k in params if k.startswith("layer")]
  assert len(blocks) in (4, 9)
  for k in blocks:
    assert not np.any(params[k][last_bn]["scale"]), k
    np.testing.assert_array_equal(params[k]["bn1"]["scale"], 1.0)
  np.testing.assert_array_equal(params["bn1"]["scale"], 1.0)


def test_googlenet_aux_outputs_only_in_train_and_transform_input():
  model = models.create("googlenet", num_classes=10)
  x = jax.random.uniform(jax.random.key(5), (2, 64, 64, 3))
  variables = _random_variables(model, x.shape)
  plain = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits = plain(variables, x)
  assert isinstance(logits, jax.Array) and logits.shape == (2, 10)
  out, _ = _apply(model, variables, x, train=True)
  assert isinstance(out, GoogLeNetOutputs)
  assert out._fields == ("logits", "aux_logits2", "aux_logits1")
  assert all(o.shape == (2, 10) for o in out)
  assert not np.allclose(out.aux_logits1, out.aux_logits2)

  # transform_input == feeding the re-normalised image to the plain model.
  transformed = model.clone(transform_input=True)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  manual = x * (std / 0.5) + (mean - 0.5) / 0.5
  np.testing.assert_allclose(_apply(transformed, variables, x), plain(variables, manual),
                             rtol=1e-4, atol=1e-5)


def test_googlenet_without_aux_returns_logits_in_train():
  model = models.create("googlenet", num_classes=10, aux_logits=False)
  variables = _shapes(model, (64, 64, 3))
  out, _ = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(0)}), variables)
  assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_bfloat16_forward(name):
  model = models.create(name, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(8), (2, 32, 32, 3))
  variables = _random_variables(model, x.shape)
  out = _apply(model, variables, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, models.info(name).num_classes)
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  _, updates = _apply(model, variables, x, train=True)
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(updates["batch_stats"]))


@pytest.mark.parametrize("name", ["googlenet", "resnet50", "resnet110"])
def test_bfloat16_params_stay_float32(name):
  model = models.create(name, dtype=jnp.bfloat16)
  shape = models.info(name).input_shape
  variables = _shapes(model, shape)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *shape))), variables)
  assert out.dtype == jnp.bfloat16


@pytest.mark.parametrize("name,kwargs", [("resnet20", {"shortcut": "C"}),
                                         ("resnet18", {"num_classes": -1}),
                                         ("googlenet", {"num_classes": -1})])
def test_bad_options_raise(name, kwargs):
  model = models.create(name, **kwargs)
  with pytest.raises(ValueError, match="invalid"):
    _shapes(model, (32, 32, 3))


def test_registry_metadata():
  for name in EXPECTED:
    info = models.info(name)
    assert info.paper and info.paper_result
  assert models.info("resnet50").torchvision == "resnet50"
  assert models.info("googlenet").torchvision == "googlenet"
  assert models.info("resnet110").input_shape == (32, 32, 3)
  assert "6.43" in models.info("resnet110").paper_result
