"""Models on 1-D signals and 3-D volumes / video: exact parameter counts, shapes at any length
and channel count, torchvision's video layouts, and torch's running variance where the layout is
torchvision's. Shapes come from ``jax.eval_shape`` (no FLOPs) except where values matter."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.models import layers, resnet, video
from cnnlab.models.kernels import PLAIN
from cnnlab.models.vgg import VGG

EXPECTED_PARAMS = {   # at each model's registered num_classes and input_shape
    "fcn1d": 264_962, "resnet1d": 504_258,                 # 1 channel, 2 classes (the paper's)
    "r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325,   # 400 classes
    "resnet18_1d": 4_356_904, "resnet34_1d": 7_731_240, "resnet50_1d": 18_003_240,
    "resnet18_3d": 33_673_000, "resnet34_3d": 63_982_632, "resnet50_3d": 48_204_072,
}


def _shapes(model, x, train=False):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=train))


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_count_is_exact_and_recorded(name):
  info = models.info(name)
  x = jnp.zeros((1, *info.input_shape))
  assert layers.count_params(_shapes(models.create(name), x)["params"]) == EXPECTED_PARAMS[name]
  assert info.num_params == EXPECTED_PARAMS[name]
  assert info.paper and info.paper_result
  assert len(info.input_shape) == (2 if name.endswith("1d") else 4)


@pytest.mark.parametrize("name", ["fcn1d", "resnet1d"])
def test_timeseries_models_take_any_length_and_channel_count(name):
  model = models.create(name, num_classes=5, kernels=PLAIN)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 24, 3)), train=False)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  for length in (7, 24, 61):                       # the same weights for every length
    x = jax.random.normal(jax.random.key(length), (2, length, 3))
    assert apply(variables, x).shape == (2, 5)
  features = models.create(name, num_classes=0).apply(variables, jnp.ones((2, 9, 3)))
  assert features.shape == (2, 128)
  with pytest.raises(ValueError, match=r"takes \(N, L, C\) series; got shape \(2, 8, 8, 3\)"):
    model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)))


def test_timeseries_layouts_follow_the_paper():
  fcn = _shapes(models.create("fcn1d"), jnp.zeros((1, 50, 1)))["params"]
  assert [fcn[f"conv{i}"]["kernel"].shape for i in (1, 2, 3)] == [
      (8, 1, 128), (5, 128, 256), (3, 256, 128)]
  res = _shapes(models.create("resnet1d"), jnp.zeros((1, 50, 1)))["params"]
  assert [res[b]["conv1"]["kernel"].shape[0] for b in ("block1", "block2", "block3")] == [8] * 3
  assert [res["block1"][f"conv{i}"]["kernel"].shape for i in (1, 2, 3)] == [
      (8, 1, 64), (5, 64, 64), (3, 64, 64)]
  assert "shortcut_conv" in res["block2"] and "shortcut_conv" not in res["block3"]
  assert set(res["block3"]["shortcut_bn"]) == {"scale", "bias"}


def test_video_midplanes_and_names_mirror_torchvision():
  p = _shapes(models.create("r2plus1d_18"), jnp.zeros((1, 4, 16, 16, 3)))["params"]
  assert p["stem_0"]["kernel"].shape == (1, 7, 7, 3, 45)
  assert p["stem_3"]["kernel"].shape == (3, 1, 1, 45, 64)
  # M = (in * out * 27) // (in * 9 + 3 * out), once per block, for both of its convs.
  mid = (64 * 128 * 27) // (64 * 9 + 3 * 128)
  assert p["layer2_0"]["conv1_0"]["0"]["kernel"].shape == (1, 3, 3, 64, mid)
  assert p["layer2_0"]["conv2_0"]["0"]["kernel"].shape == (1, 3, 3, 128, mid)
  assert p["layer2_0"]["conv2_0"]["3"]["kernel"].shape == (3, 1, 1, mid, 128)
  assert p["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 1, 64, 128)
  m = _shapes(models.create("mc3_18"), jnp.zeros((1, 4, 16, 16, 3)))["params"]
  assert m["layer1_0"]["conv1_0"]["kernel"].shape == (3, 3, 3, 64, 64)
  assert m["layer2_0"]["conv1_0"]["kernel"].shape == (1, 3, 3, 64, 128)


@pytest.mark.parametrize("conv_type,t_out", [("3d", 2), ("2d", 4), ("2plus1d", 2)])
def test_video_block_downsampling_strides_time_only_for_temporal_convs(conv_type, t_out):
  block = video.VideoBasicBlock(planes=8, stride=2, conv_type=conv_type)
  x = jnp.zeros((1, 4, 8, 8, 4))
  out = jax.eval_shape(lambda: block.init_with_output(jax.random.key(0), x)[0])
  assert out.shape == (1, t_out, 4, 4, 8)


@pytest.mark.parametrize("name,shape", [("r3d_18", (2, 4, 16, 16, 3)),
                                        ("resnet18_1d", (2, 64, 1)),
                                        ("resnet18_3d", (2, 16, 16, 16, 1)),
                                        ("resnet50_1d", (2, 64, 2))])
def test_nd_models_output_shapes(name, shape):
  model = models.create(name, num_classes=7)
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros(shape))[0])
  assert out.shape == (2, 7)


@pytest.mark.parametrize("spatial_dims,shape", [(1, (2, 64, 2)), (3, (2, 32, 32, 32, 1))])
def test_vgg_on_other_ranks(spatial_dims, shape):
  model = VGG("A", batch_norm=True, num_classes=7, spatial_dims=spatial_dims)
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0),
                                                                 jnp.zeros(shape)))
  assert out.shape == (2, 7)
  # The fc after the adaptive pool to 7 per dim sees 512 * 7 ** spatial_dims features.
  assert variables["params"]["classifier_0"]["kernel"].shape == (512 * 7 ** spatial_dims, 4096)
  assert variables["params"]["features_0"]["kernel"].shape == (3,) * spatial_dims + (
      shape[-1], 64)


def test_models_reject_input_of_the_wrong_rank():
  with pytest.raises(ValueError, match=r"a 1-D model takes .*got shape \(1, 8, 8, 3\)"):
    models.create("resnet18_1d").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match=r"video ResNets take \(N, T, H, W, C\)"):
    models.create("r3d_18").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="spatial_dims=4 is invalid"):
    resnet.ResNet((1,), resnet.BasicBlock, spatial_dims=4).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 8, 8, 3)))


@pytest.mark.parametrize("model,torch_var", [
    (resnet.ResNet((1,), resnet.BasicBlock, num_classes=3, spatial_dims=1), True),
    (resnet.CifarResNet(1, num_classes=3, spatial_dims=1), False),
])
def test_running_variance_is_torchs_in_torchvision_layouts(model, torch_var):
  x = jax.random.normal(jax.random.key(1), (2, 16, 3)) * 2.0
  variables = model.init(jax.random.key(0), x, train=False)
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda mdl, _: mdl.name == "conv1"))(variables, x)
  conv1 = np.asarray(state["intermediates"]["conv1"]["__call__"][0], np.float64)
  flat = conv1.reshape(-1, conv1.shape[-1])
  n, var = flat.shape[0], flat.var(0)
  expected = 0.9 + 0.1 * (var * n / (n - 1) if torch_var else var)
  np.testing.assert_allclose(np.asarray(state["batch_stats"]["bn1"]["var"]), expected, rtol=1e-4)
