"""VGG: configurations A, B, D, E (vgg11/13/16/19) with and without BatchNorm, torchvision layout.

Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition" (ICLR, arXiv:1409.1556), Table 1. Every conv is 3x3 with padding 1 and a ReLU;
2x2/2 max-pools close each stage; then, as in torchvision, an adaptive average pool to 7x7
(an identity at 224x224 input), flatten, fc 4096, ReLU, dropout 0.5, fc 4096, ReLU,
dropout 0.5, fc classes. The ``_bn`` variants put a BatchNorm between each conv and its ReLU;
they are torchvision's addition (the paper predates BatchNorm) and keep the conv biases.

Init, as torchvision: convs kaiming-normal (fan_out, ReLU gain) with zero bias, BN scale 1 and
bias 0, fcs N(0, 0.01) with zero bias. (The paper initialised the deeper nets from the trained
configuration A, or, after submission, with Glorot init, §3.1.)

Parameter names follow the indices of torchvision's ``nn.Sequential``s (conv, [BN,] ReLU per
layer, one index per max-pool), so ``features.0.weight`` is ``features_0/kernel`` and vgg16's
last conv is ``features_28``; with BN, ``features.1`` is the BatchNorm ``features_1`` (``scale``,
``bias`` in params; ``mean``, ``var`` in batch_stats). The fcs are ``classifier_0``,
``classifier_3`` and ``classifier_6``.

``num_classes=0`` returns what the last fc would receive, as if it were replaced by an
identity: the 4096-d output of the second hidden fc after ReLU and dropout.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels

# Table 1 of the paper: conv widths, "M" for a max-pool.
CONFIGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """A VGG configuration from Table 1 of the paper; see the module docstring.

  ``features_only``: return the feature maps just before each max-pool (five of them, at
  strides 1, 2, 4, 8 and 16: 64, 128, 256, 512, 512 channels) instead of logits, as timm's
  ``features_only``; the classifier is not built. The encoder of a U-Net.
  """
  config: str = "D"
  batch_norm: bool = False
  num_classes: int = 1000
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  spatial_dims: int = 2      # 1 (N L C), 2 (N H W C) or 3 (N D H W C)
  kernels: Kernels = PLAIN   # how convs, pools and BatchNorm are computed
  features_only: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.config not in CONFIGS:
      raise ValueError(f"VGG config={self.config!r}; valid: {', '.join(CONFIGS)}")
    if self.spatial_dims not in (1, 2, 3) or x.ndim != self.spatial_dims + 2:
      raise ValueError(f"VGG spatial_dims={self.spatial_dims} (valid: 1, 2, 3) takes input of "
                       f"rank spatial_dims + 2; got shape {tuple(x.shape)}")
    conv = functools.partial(layers.conv, kernel=3, stride=1, padding=1, use_bias=True,
                             dtype=self.dtype, spatial_dims=self.spatial_dims,
                             kernels=self.kernels)
    norm = functools.partial(layers.batch_norm, train, dtype=self.dtype, relu=True,
                             unbiased_running_var=True, kernels=self.kernels)
    x = x.astype(self.dtype)
    features = []
    idx = 0  # index in torchvision's `features` Sequential
    for v in CONFIGS[self.config]:
      if v == "M":
        features.append(x)
        x = layers.max_pool(x, 2, 2, kernels=self.kernels)
        idx += 1
        continue
      x = conv(v, name=f"features_{idx}")(x)
      x = norm(name=f"features_{idx + 1}")(x) if self.batch_norm else nn.relu(x)
      idx += 3 if self.batch_norm else 2
    if self.features_only:
      return tuple(features)
    return self._classify(x, train)

  def _classify(self, x, train: bool):
    def fc(features, idx):
      return layers.dense(features, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
                          bias_init=nn.initializers.zeros, name=f"classifier_{idx}")

    x = layers.flatten_channels_first(layers.adaptive_avg_pool(x, 7))
    x = nn.relu(fc(4096, 0)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(fc(4096, 3)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.num_classes == 0:
      return x
    return fc(self.num_classes, 6)(x)


_PAPER = ("Simonyan, Zisserman 2015, Very deep convolutional networks for large-scale image "
          "recognition, ICLR (arXiv:1409.1556)")

# name -> (config, params without / with BN at 1000 classes, the paper's result)
_VARIANTS = {
    "vgg11": ("A", 132_863_336, 132_868_840,
              "config A: 29.6% top-1 / 10.4% top-5 error, ILSVRC-2012 val, single scale "
              "(Table 3)"),
    "vgg13": ("B", 133_047_848, 133_053_736,
              "config B: 28.7% top-1 / 9.9% top-5 error, ILSVRC-2012 val, single scale "
              "(Table 3)"),
    "vgg16": ("D", 138_357_544, 138_365_992,
              "config D, scale jittering [256;512]: 25.6% / 8.1% top-1 / top-5 error single "
              "scale (Table 3), 24.8% / 7.5% multi-scale (Table 4), ILSVRC-2012 val"),
    "vgg19": ("E", 143_667_240, 143_678_248,
              "config E, scale jittering [256;512]: 25.5% / 8.0% top-1 / top-5 error single "
              "scale (Table 3), 24.8% / 7.5% multi-scale (Table 4), ILSVRC-2012 val"),
}

# torchvision's IMAGENET1K_V1 weight cards (acc@1 / acc@5, single 224 crop): not paper numbers.
_TORCHVISION_ACC = {
    "vgg11": "69.020 / 88.628", "vgg11_bn": "70.370 / 89.810",
    "vgg13": "69.928 / 89.246", "vgg13_bn": "71.586 / 90.374",
    "vgg16": "71.592 / 90.382", "vgg16_bn": "73.360 / 91.516",
    "vgg19": "72.376 / 90.876", "vgg19_bn": "74.218 / 91.842",
}

for _name, (_config, _count, _count_bn, _result) in _VARIANTS.items():
  for _bn in (False, True):
    _full = _name + ("_bn" if _bn else "")
    register(
        ModelInfo(name=_full, family="vgg", num_params=_count_bn if _bn else _count,
                  input_shape=(224, 224, 3), num_classes=1000, paper=_PAPER,
                  paper_result=(_result + ("; the paper has no BN variant" if _bn else "")),
                  torchvision=_full,
                  notes=(f"configuration {_config}{' + BatchNorm' if _bn else ''}; torchvision "
                         f"weights card acc@1 / acc@5: {_TORCHVISION_ACC[_full]}")),
        functools.partial(VGG, config=_config, batch_norm=_bn))
