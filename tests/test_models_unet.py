"""U-Net, 3-D U-Net and U-Net on a zoo classifier: exact parameter counts, the paper's valid
geometry (Fig. 1 / Fig. 2 sizes, the overlap-tile margin), any input size with 'same' padding,
every rank, the CPU kernels against the plain ones in a train step, and an encoder that carries
its classifier's parameter names. Counts and shapes come from ``jax.eval_shape``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cnnlab import models
from cnnlab.models import layers, unet
from cnnlab.models.kernels import CPU, PLAIN


def _init_shapes(model, shape, train=False):
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.eval_shape(lambda: model.init_with_output(rngs, jnp.zeros(shape), train=train))


@pytest.mark.parametrize("name,count", [("unet", 31_030_658), ("unet3d", 19_069_955)])
def test_param_counts_are_the_papers(name, count):
  info = models.info(name)
  out, variables = _init_shapes(models.create(name), (1, *info.input_shape))
  assert layers.count_params(variables["params"]) == count == info.num_params
  assert out.shape == (1, *info.input_shape[:-1], info.num_classes)   # 'same' by default
  assert info.paper and info.paper_result


def test_unet_layout_follows_fig1():
  _, v = _init_shapes(models.create("unet"), (1, 64, 64, 1))
  p = v["params"]
  assert [p[f"enc{l}"]["conv2"]["kernel"].shape[-1] for l in range(5)] == [64, 128, 256, 512,
                                                                            1024]
  assert p["dec3"]["upconv"]["kernel"].shape == (2, 2, 1024, 512)     # halves the channels
  assert p["dec3"]["conv1"]["kernel"].shape == (3, 3, 1024, 512)      # after the concat
  assert p["head"]["kernel"].shape == (1, 1, 64, 2) and "batch_stats" not in v


def test_unet3d_layout_follows_fig2():
  _, v = _init_shapes(models.create("unet3d"), (1, 16, 16, 16, 3))
  p = v["params"]
  assert [tuple(p[f"enc{l}"][c]["kernel"].shape[-1] for c in ("conv1", "conv2"))
          for l in range(4)] == [(32, 64), (64, 128), (128, 256), (256, 512)]
  assert p["dec2"]["upconv"]["kernel"].shape == (2, 2, 2, 512, 512)   # keeps the channels
  assert "bias" not in p["dec2"]["upconv"] and p["dec2"]["conv1"]["kernel"].shape[-2] == 768
  assert "bn1" not in p["enc0"] and set(v["batch_stats"]["enc0"]["bn1"]) == {"mean", "var"}


@pytest.mark.parametrize("name,shape,out", [
    ("unet", (1, 572, 572, 1), (388, 388)),                   # Fig. 1
    ("unet3d", (1, 116, 132, 132, 3), (28, 44, 44)),          # Fig. 2 (z, y, x)
])
def test_valid_padding_gives_the_papers_sizes(name, shape, out):
  model = models.create(name, padding="valid")
  y, _ = _init_shapes(model, shape)
  assert y.shape[1:-1] == out == model.output_spatial(shape[1:-1])


def test_valid_geometry_functions():
  assert unet.output_size(572) == 388 and unet.margin(4) == 92
  assert unet.margin(3) == 44 and unet.output_size(132, 3) == 44
  assert unet.output_size(100, padding="same") == 100
  for size in (1, 140, 189, 500):
    valid = unet.valid_input_size(size)
    assert valid >= size and unet.output_size(valid) == valid - 2 * unet.margin(4)
    assert valid - 16 < size or valid == unet.valid_input_size(1)   # the smallest one
  with pytest.raises(ValueError, match=r"input size 570 is not valid .* try 572"):
    unet.output_size(570)
  with pytest.raises(ValueError, match=r"padding='full' is invalid; use one of same, valid"):
    unet.output_size(572, padding="full")
  with pytest.raises(ValueError, match="input size 570 is not valid"):
    _init_shapes(models.create("unet", padding="valid"), (1, 570, 570, 1))


def test_valid_skip_is_centre_cropped():
  x = jnp.arange(2 * 6 * 6 * 1.0).reshape(2, 6, 6, 1)
  np.testing.assert_array_equal(unet.centre_crop(x, (2, 4)), x[:, 2:4, 1:5])
  np.testing.assert_array_equal(unet.fit_end(x, (4, 8))[:, :, 6:], 0)
  np.testing.assert_array_equal(unet.fit_end(x, (4, 8))[:, :, :6], x[:, :4])


@pytest.mark.parametrize("spatial_dims,shape", [(1, (2, 37, 2)), (2, (2, 75, 101, 1)),
                                                (3, (1, 9, 17, 12, 1))])
def test_same_padding_keeps_any_size_at_any_rank(spatial_dims, shape):
  model = unet.UNet(num_classes=3, base_channels=4, depth=3, spatial_dims=spatial_dims)
  y, v = _init_shapes(model, shape)
  assert y.shape == (*shape[:-1], 3)
  assert v["params"]["enc0"]["conv1"]["kernel"].shape == (3,) * spatial_dims + (shape[-1], 4)


def test_options_batch_norm_dropout_features():
  plain = layers.count_params(_init_shapes(unet.UNet(base_channels=4, depth=2),
                                           (1, 16, 16, 1))[1]["params"])
  _, v = _init_shapes(unet.UNet(base_channels=4, depth=2, batch_norm=True), (1, 16, 16, 1))
  convs = 2 * 3 + 2 * 2                                   # 3x3 convs: 2 per level
  widths = [4, 4, 8, 8, 16, 16, 8, 8, 4, 4]
  assert len(widths) == convs
  assert layers.count_params(v["params"]) == plain + 2 * sum(widths)   # scale + bias each
  y, _ = _init_shapes(unet.UNet(num_classes=0, base_channels=4, depth=2), (1, 16, 16, 1))
  assert y.shape == (1, 16, 16, 4)
  model = unet.UNet(base_channels=4, depth=2, dropout_rate=0.5)
  x = jnp.ones((1, 16, 16, 1))
  variables = jax.jit(lambda: model.init(jax.random.key(0), x))()
  run = jax.jit(lambda seed, train: model.apply(variables, x, train=train,
                                                rngs={"dropout": jax.random.key(seed)}),
                static_argnums=1)
  assert not np.allclose(run(1, True), run(2, True))     # dropout acts in training
  np.testing.assert_array_equal(run(1, False), run(2, False))


def test_unet_rejects_bad_input():
  with pytest.raises(ValueError, match=r"a 2-D U-Net takes .* got shape \(1, 8, 8, 8, 1\)"):
    _init_shapes(unet.UNet(base_channels=4, depth=1), (1, 8, 8, 8, 1))
  with pytest.raises(ValueError, match="encoder='resnet20' is not a supported U-Net encoder"):
    _init_shapes(models.create("unet", encoder="resnet20"), (1, 32, 32, 3))


def _train_loss_and_grads(model, x, labels):
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats"])
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1)), updates
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


@pytest.mark.parametrize("build,shape", [
    (lambda k: unet.UNet(base_channels=4, depth=2, batch_norm=True, kernels=k), (2, 13, 10, 1)),
    pytest.param(lambda k: unet.UNet(base_channels=4, depth=1, padding="valid", spatial_dims=3,
                                     kernels=k), (1, 22, 22, 22, 1), marks=pytest.mark.slow),
    pytest.param(lambda k: models.create("unet", encoder="resnet18",
                                         decoder_channels=(8, 8, 8, 8, 8), kernels=k),
                 (2, 33, 30, 3), marks=pytest.mark.slow),
], ids=["unet_bn_odd", "unet3d_valid", "resnet18_encoder"])
def test_train_step_cpu_kernels_equal_plain(build, shape):
  model = build(PLAIN)
  out_spatial = (model.output_spatial(shape[1:-1]) if isinstance(model, unet.UNet)
                 else shape[1:-1])
  x = jax.random.normal(jax.random.key(3), shape)
  labels = jax.random.randint(jax.random.key(4), (shape[0], *out_spatial), 0, 2)
  (loss_p, upd_p), grads_p = _train_loss_and_grads(model, x, labels)
  (loss_c, upd_c), grads_c = _train_loss_and_grads(build(CPU), x, labels)
  assert jax.tree.structure(grads_p) == jax.tree.structure(grads_c)
  for a, b in zip(jax.tree.leaves((loss_c, upd_c, grads_c)),
                  jax.tree.leaves((loss_p, upd_p, grads_p)), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)


# --- U-Net on a zoo classifier ------------------------------------------------------------------
def _flat_shapes(tree) -> dict:
  return {"/".join(p): tuple(v.shape) for p, v in traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize("encoder,head", [("resnet34", "fc"), ("vgg16_bn", "classifier_")])
def test_encoder_carries_the_classifiers_names(encoder, head):
  shape = (1, 64, 64, 3)
  y, v = _init_shapes(models.create("unet", encoder=encoder, num_classes=4), shape)
  assert y.shape == (1, 64, 64, 4)
  _, classifier = _init_shapes(models.create(encoder), shape)
  for collection in ("params", "batch_stats"):
    mine = _flat_shapes(v[collection])
    theirs = {p: s for p, s in _flat_shapes(classifier[collection]).items()
              if not p.startswith(head)}
    assert {p: mine[p] for p in theirs if p in mine} == theirs       # same paths and shapes
    assert all(p.startswith(("dec", "head")) for p in set(mine) - set(theirs))


@pytest.mark.slow
def test_encoder_loads_classifier_weights_by_path():
  """What --config.init_from does: copy every classifier variable whose path the U-Net has."""
  x = jax.random.normal(jax.random.key(0), (1, 40, 44, 3))
  classifier = models.create("resnet18", kernels=PLAIN)
  source = jax.jit(lambda: classifier.init(jax.random.key(5), x))()
  model = models.create("unet", encoder="resnet18", kernels=PLAIN)
  target = jax.jit(lambda: model.init(jax.random.key(6), x))()
  flat_t, flat_s = traverse_util.flatten_dict(target), traverse_util.flatten_dict(source)
  shared = [p for p in flat_s if p in flat_t]
  assert len(shared) == len(flat_s) - 2                   # all but fc/kernel, fc/bias
  loaded = traverse_util.unflatten_dict({**flat_t, **{p: flat_s[p] for p in shared}})
  stem = lambda v: classifier.apply(v, x, mutable=["intermediates"],
                                    capture_intermediates=lambda m, _: m.name == "layer4_1")
  feats = model.apply(loaded, x, mutable=["intermediates"],
                      capture_intermediates=lambda m, _: m.name == "layer4_1")[1]
  want = stem(source)[1]["intermediates"]["layer4_1"]["__call__"][0]
  np.testing.assert_allclose(feats["intermediates"]["layer4_1"]["__call__"][0], want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder,shape", [("resnet50", (1, 75, 101, 3)),
                                           ("vgg11", (2, 50, 34, 1)),
                                           ("resnet18_3d", (1, 20, 24, 17, 1)),
                                           ("resnet18_1d", (2, 45, 2))])
def test_encoder_unet_output_at_input_resolution(encoder, shape):
  y, _ = _init_shapes(models.create("unet", encoder=encoder, num_classes=3), shape)
  assert y.shape == (*shape[:-1], 3)


def test_encoder_names_and_decoder_width_check():
  names = unet.encoder_names()
  assert {"resnet18", "resnet34", "resnet50", "vgg16", "vgg16_bn", "resnet18_3d"} <= set(names)
  assert "resnet20" not in names and "googlenet" not in names
  with pytest.raises(ValueError, match=r"decoder_channels=\(8, 8\) has 2 widths; resnet18 "
                                       r"needs 5"):
    _init_shapes(models.create("unet", encoder="resnet18", decoder_channels=(8, 8)),
                 (1, 32, 32, 3))
