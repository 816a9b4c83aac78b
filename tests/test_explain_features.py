"""cnnlab.explain.features: layer names and output shapes for one model of every registered
family (abstract evaluation: no compilation), activations at named layers through
capture_intermediates matching them, bad names listing the valid ones."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.explain import features


def _smallest_of_each_family():
  """The smallest registered model of every (family, input rank): 1-D, 2-D, 3-D alike."""
  chosen = {}
  for name in models.names():
    info = models.info(name)
    key = (info.family, len(info.input_shape))
    if key not in chosen or info.num_params < models.info(chosen[key]).num_params:
      chosen[key] = name
  return sorted(chosen.values())


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)),
                                           train=False))


@pytest.mark.parametrize("name", _smallest_of_each_family())
def test_every_family_lists_its_layers_and_extracts_them(name):
  model = models.create(name)
  shape = tuple(models.info(name).input_shape)
  variables = _abstract_variables(model, shape)
  found = features.layers(model, variables, shape)
  assert len(found) >= 5, name
  assert all(l.shape[0] == 1 for l in found), name
  maps = features.spatial(found)
  assert maps and all(len(l.shape) == len(shape) + 1 for l in maps), name
  # activations through capture_intermediates, for a batch of 2: the listed shapes
  names = tuple(l.name for l in found)
  got = jax.eval_shape(lambda v, x: features.extract(model, v, x, names), variables,
                       jax.ShapeDtypeStruct((2, *shape), jnp.float32))
  assert sorted(got) == sorted(names)     # (pytree outputs come back key-sorted)
  for l in found:
    assert got[l.name].shape == (2, *l.shape[1:]), (name, l.name)
  with pytest.raises(ValueError, match=f"valid: {found[0].name}, {found[1].name}"):
    features.check_layer("no_such_layer", found)


class _Reused(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    conv = nn.Conv(3, (3,), padding="SAME", name="shared")
    x = conv(jnp.tanh(conv(x)))     # one module called twice
    return nn.Dense(2, name="head")(x.mean(axis=1))


def test_extract_computes_the_activations_of_a_1d_model_with_a_reused_layer():
  model = _Reused()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 10, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  found = features.layers(model, variables, (10, 3))
  assert [(l.name, l.kind, l.shape) for l in found] == [
      ("shared", "Conv", (1, 10, 3)), ("shared#2", "Conv", (1, 10, 3)), ("head", "Dense", (1, 2))]
  got = features.extract_checked(model, variables, x, ["shared", "shared#2", "head"])
  conv = lambda z: nn.Conv(3, (3,), padding="SAME").apply(   # noqa: E731
      {"params": variables["params"]["shared"]}, z)
  np.testing.assert_allclose(got["shared"], conv(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["shared#2"], conv(jnp.tanh(conv(x))), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["head"], model.apply(variables, x), rtol=1e-5, atol=1e-6)
  assert features.summary(found).splitlines()[2:] == [
      "shared    Conv    (N, 10, 3)", "shared#2  Conv    (N, 10, 3)", "head      Dense   (N, 2)"]
  with pytest.raises(ValueError, match="'conv' is not a layer of this model; valid: shared, "
                                       "shared#2, head"):
    features.extract_checked(model, variables, x, ["conv"])
  name, maps = features.feature_maps(model, variables, x[0])
  assert name == "shared" and maps.shape == (10, 3)


@pytest.mark.parametrize("name, shape, expected", [
    ("resnet18_3d", (16, 16, 16, 1), "layer2_1"),   # layer3/4 are 1x1x1 at a 16^3 crop
    ("resnet18", (32, 32, 3), "layer3_1"),          # layer4 is 1x1
    ("resnet18", (64, 8, 3), "layer1_1"),           # layer2 is 8x1: flat along the width
    ("resnet18_1d", (32, 1), "layer3_1"),           # layer4 has length 1
    ("fcn1d", (20, 1), "bn3"),                      # no striding: the last feature map
    ("lenet5", (28, 28, 1), "conv2"),               # 5x5
])
def test_gradcam_default_layer_is_the_deepest_map_larger_than_one_in_every_axis(
    name, shape, expected):
  """Grad-CAM's default: the deepest layer whose map has the input's rank and more than one
  position along EVERY spatial axis (a 1x1x1 map gives a flat heat map) — for 1-D, 2-D and
  3-D models alike."""
  from cnnlab.explain import explainers
  model = models.create(name, num_classes=3)
  variables = _abstract_variables(model, shape)
  chosen = explainers.default_layer(model, variables, shape)
  assert chosen == expected
  maps = [l for l in features.spatial(features.layers(model, variables, shape))
          if l.spatial_dims == len(shape) - 1]
  index = [l.name for l in maps].index(chosen)
  assert all(s > 1 for s in maps[index].shape[1:-1])
  assert all(min(l.shape[1:-1]) == 1 for l in maps[index + 1:])   # every deeper map is flat


def test_gradcam_default_layer_says_when_no_map_is_larger_than_one():
  from cnnlab.explain import explainers
  model = models.create("resnet18", num_classes=3)
  variables = _abstract_variables(model, (32, 1, 3))
  with pytest.raises(ValueError, match=r"no layer of ResNet.* larger than 1 in every axis.*"
                                       r"valid: conv1"):
    explainers.default_layer(model, variables, (32, 1, 3))
