"""FCN and DeepLabV3 on the dilated ResNet-50: torchvision's parameter counts with and without
the aux head, output stride 8, per-pixel logits at the input size in train and eval, and
parity with torchvision (both heads, every fixture, relative 1e-4 per pixel); the ResNet and
VGG ``features_only`` / dilation options leave the classifiers as they were.

The plain parity fixtures (tests/fixtures/torchvision/*resnet50_*x*.npz) also run in
tests/test_interop_torchvision.py and, exported back, in tests/test_parity_export.py; the ones
with the aux head live in tests/fixtures/torchvision_segmentation/.
"""
from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.interop import torchvision as tv
from cnnlab.models import layers, resnet
from cnnlab.models.vgg import VGG
import make_torchvision_fixtures as fx

RELATIVE = 1e-4
SEGMENTATION_FIXTURES = sorted(
    [p for p in glob.glob(os.path.join(fx.FIXTURE_DIR, "*.npz"))
     if os.path.basename(p).startswith(fx.SEGMENTATION)]
    + glob.glob(os.path.join(fx.SEGMENTATION_DIR, "*.npz")))


def _init_shapes(model, shape, train=False):
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.eval_shape(lambda: model.init_with_output(rngs, jnp.zeros(shape), train=train))


@pytest.mark.parametrize("name,count,with_aux", [("fcn_resnet50", 32_957_013, 35_322_218),
                                                 ("deeplabv3_resnet50", 39_638_869,
                                                  42_004_074)])
def test_param_counts_are_torchvisions(name, count, with_aux):
  info = models.info(name)
  assert info.num_params == count and info.torchvision == name and info.num_classes == 21
  shape = (2, 75, 101, 3)
  for aux, expected in ((False, count), (True, with_aux)):
    model = models.create(name, aux_loss=aux)
    out, v = _init_shapes(model, shape)                  # eval-mode init builds the aux head
    assert layers.count_params(v["params"]) == expected
    assert out.shape == (2, 75, 101, 21) and ("aux_classifier" in v["params"]) == aux
    train_out, _ = _init_shapes(model, shape, train=True)
    shapes = jax.tree.map(lambda a: a.shape, train_out)
    assert shapes == (((2, 75, 101, 21),) * 2 if aux else (2, 75, 101, 21))


def test_dilated_backbone_has_output_stride_8_and_the_same_parameters():
  x = (1, 64, 96, 3)
  dilated = resnet.ResNet((3, 4, 6, 3), resnet.Bottleneck, features_only=True,
                          replace_stride_with_dilation=(False, True, True))
  plain = resnet.ResNet((3, 4, 6, 3), resnet.Bottleneck, features_only=True)
  feats, v_dilated = _init_shapes(dilated, x)
  plain_feats, v_plain = _init_shapes(plain, x)
  assert [f.shape[1:] for f in feats] == [(32, 48, 64), (16, 24, 256), (8, 12, 512),
                                          (8, 12, 1024), (8, 12, 2048)]
  assert [f.shape[1:3] for f in plain_feats] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
  assert jax.tree.map(lambda a: a.shape, v_dilated) == jax.tree.map(lambda a: a.shape, v_plain)
  classifier = _init_shapes(models.create("resnet50"), x)[1]["params"]
  assert set(classifier) - set(v_plain["params"]) == {"fc"}
  with pytest.raises(ValueError, match=r"replace_stride_with_dilation=\(True,\) needs 3"):
    _init_shapes(resnet.ResNet((1, 1, 1, 1), resnet.BasicBlock,
                               replace_stride_with_dilation=(True,)), x)


def test_dilation_follows_torchvisions_make_layer():
  assert resnet._stage_geometry((False, True, True), 4) == [(1, 1, 1), (2, 1, 1), (1, 1, 2),
                                                           (1, 2, 4)]
  assert resnet._stage_geometry((False, False, False), 4) == [(1, 1, 1)] + [(2, 1, 1)] * 3


def test_vgg_features_only_returns_the_maps_before_each_pool():
  feats, v = _init_shapes(VGG("A", batch_norm=True, features_only=True), (1, 32, 48, 3))
  assert [f.shape[1:] for f in feats] == [(32, 48, 64), (16, 24, 128), (8, 12, 256),
                                          (4, 6, 512), (2, 3, 512)]
  assert not any(k.startswith("classifier") for k in v["params"])


def test_segmentation_rejects_bad_arguments():
  with pytest.raises(ValueError, match="head='pspnet' is invalid"):
    _init_shapes(models.create("fcn_resnet50", head="pspnet"), (1, 32, 32, 3))


def _parity(path):
  f = fx.load_fixture(path)
  weights = fx.synthetic_state_dict(f["weight_seed"], f["keys"], f["shapes"])
  assert fx.checksum(weights) == pytest.approx(f["checksum"], rel=1e-12)
  model, variables = tv.build(weights)
  assert model.num_classes == f["logits"].shape[-1] and model.aux_loss == ("aux_logits" in f)
  x = np.moveaxis(fx.synthetic_inputs(f["input_seed"], f["input_shape"]), 1, -1)
  return f, jax.jit(lambda v, x: model.apply(v, x, aux=True, method="outputs"))(variables, x)


@pytest.mark.slow
@pytest.mark.parametrize("path", SEGMENTATION_FIXTURES,
                         ids=lambda p: os.path.basename(p)[:-4])
def test_per_pixel_parity_with_torchvision(path):
  f, (logits, aux) = _parity(path)
  pairs = [("out", logits, f["logits"])]
  if "aux_logits" in f:
    pairs.append(("aux", aux, f["aux_logits"]))
  for what, mine, theirs in pairs:
    assert mine.shape == theirs.shape                      # (N, H, W, classes), input size
    err = float(np.abs(np.asarray(mine) - theirs).max() / np.abs(theirs).max())
    print(f"{os.path.basename(path)} {what}: max |cnnlab - torchvision| / max |.| = {err:.2e}")
    assert err <= RELATIVE


def test_every_segmentation_model_has_fixtures_of_two_sizes_and_with_aux():
  sizes, aux = {}, set()
  for path in SEGMENTATION_FIXTURES:
    f = fx.load_fixture(path)
    sizes.setdefault(f["model"], set()).add(f["input_shape"][2:])
    if "aux_logits" in f:
      aux.add(f["model"])
  assert set(sizes) == set(tv.SEGMENTATION) == aux
  for model, shapes in sizes.items():   # several sizes, one of them odd
    assert len(shapes) >= 2 and any(h % 2 or w % 2 for h, w in shapes), (model, shapes)


def test_interop_reads_the_segmentation_layout():
  for path in SEGMENTATION_FIXTURES:
    f = fx.load_fixture(path)
    assert tv.infer_model_name(dict.fromkeys(f["keys"])) == f["model"]
  v = {"params": {"classifier": {"4": {"kernel": np.zeros((1, 1, 512, 7))}},
                  "aux_classifier": {}}}
  assert tv.torchvision_kwargs(v, "fcn_resnet50") == {
      "num_classes": 7, "aux_loss": True, "weights_backbone": None}
  with pytest.raises(ValueError, match="no classifier"):
    tv.torchvision_kwargs({"params": {}}, "deeplabv3_resnet50")
