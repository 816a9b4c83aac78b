"""Video ResNets in torchvision's layout: ``r3d_18``, ``mc3_18``, ``r2plus1d_18``.

Tran, Wang, Torresani, Ray, LeCun, Paluri 2018, "A closer look at spatiotemporal convolutions
for action recognition" (CVPR, arXiv:1711.11248): ResNet-18 on clips with

* R3D: every convolution 3x3x3 (t x h x w);
* MC3 ("mixed convolutions"): 3-D convolutions in the stem and the first stage, 2-D (1x3x3)
  ones in stages 2-4, whose downsampling then strides only in space;
* R(2+1)D: every 3x3x3 convolution split into a 1x3x3 spatial convolution to M_i maps,
  BatchNorm, ReLU, and a 3x1x1 temporal one, with M_i = floor(t d^2 N_{i-1} N_i /
  (d^2 N_{i-1} + t N_i)) (§3.5, eq. 1) so that the pair has the parameters of the 3-D
  convolution; torchvision computes M_i once per block, from the block's input and output
  widths, and uses it for both of the block's convolutions.

As in torchvision (``torchvision.models.video.resnet``): stem conv 3x7x7 / stride 1x2x2 /
padding 1x3x3 to 64 maps (R(2+1)D: 1x7x7 to 45 maps, BN, ReLU, then 3x1x1 to 64) + BN + ReLU,
no max-pool; four stages of two basic blocks at 64/128/256/512 maps, stride 2 from stage 2 on;
a 1x1x1 conv + BN shortcut where the shape changes; global average pool; fc. BatchNorm
(eps 1e-5, torch's running variance), convs without bias, kaiming-normal (fan_out) convs, fc
N(0, 0.01) with zero bias. 33,371,472 / 11,695,440 / 31,505,325 parameters at 400 classes
(Kinetics-400).

Input: (N, T, H, W, C) clips, channels last (torchvision takes N, C, T, H, W).

Parameter names mirror torchvision's state_dict keys (``.`` -> ``/``; a trailing index
``name.k`` -> ``name_k``, as in ``cnnlab.models.resnet``):

  stem_0, stem_1 [, stem_3, stem_4]             <- stem.0, stem.1 [, stem.3, stem.4]
  layerS_i/conv1_0, conv1_1 (BN), conv2_0, conv2_1  <- layerS.i.conv1.0, conv1.1, ...
  layerS_i/convK_0/{0, 1, 3} for R(2+1)D        <- layerS.i.convK.0.{0, 1, 3}
  layerS_i/downsample_conv, downsample_bn       <- layerS.i.downsample.0, downsample.1
  fc                                            <- fc
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels

CONV_TYPES = ("3d", "2d", "2plus1d")   # Conv3DSimple, Conv3DNoTemporal, Conv2Plus1D


def _identity(x):
  return x


class _Block(nn.Module):
  """Layer factories the model binds once: ``conv`` (``layers.conv``, 3-D, with its dtype and
  kernels), ``norm`` (``layers.batch_norm`` with torch's running variance; ``train`` first)
  and ``materialize`` (the kernels' fusion barrier, used in training)."""
  conv: Callable = functools.partial(layers.conv, spatial_dims=3)
  norm: Callable = functools.partial(layers.batch_norm, unbiased_running_var=True)
  materialize: Callable = _identity


class Conv2Plus1D(_Block):
  """1 x 3 x 3 spatial conv to ``midplanes`` maps, BN, ReLU, 3 x 1 x 1 temporal conv."""
  features: int = 64
  midplanes: int = 64
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    s = self.stride
    x = self.conv(self.midplanes, (1, 3, 3), (1, s, s), (0, 1, 1), name="0")(x)
    x = self.norm(train, relu=True, name="1")(x)
    return self.conv(self.features, (3, 1, 1), (s, 1, 1), (1, 0, 0), name="3")(x)


class VideoBasicBlock(_Block):
  """Two convolutions of ``conv_type`` with BN; ``stride`` on the first; option B shortcut."""
  planes: int = 64
  stride: int = 1
  conv_type: str = "3d"

  def _conv(self, x, train, features, midplanes, stride, name):
    if self.conv_type == "2plus1d":
      return Conv2Plus1D(self.conv, self.norm, features=features, midplanes=midplanes,
                         stride=stride, name=name)(x, train)
    if self.conv_type == "2d":
      return self.conv(features, (1, 3, 3), (1, stride, stride), (0, 1, 1), name=name)(x)
    return self.conv(features, 3, stride, 1, name=name)(x)

  @nn.compact
  def __call__(self, x, train: bool = False):
    keep = self.materialize if train else _identity
    inplanes = x.shape[-1]
    midplanes = (inplanes * self.planes * 27) // (inplanes * 9 + 3 * self.planes)
    y = self._conv(x, train, self.planes, midplanes, self.stride, "conv1_0")
    y = keep(self.norm(train, relu=True, name="conv1_1")(y))
    y = self._conv(y, train, self.planes, midplanes, 1, "conv2_0")
    shortcut = x
    if self.stride != 1 or inplanes != self.planes:
      s = self.stride
      ds_stride = (1, s, s) if self.conv_type == "2d" else (s, s, s)
      shortcut = self.conv(self.planes, 1, ds_stride, 0, name="downsample_conv")(x)
      shortcut = self.norm(train, name="downsample_bn")(shortcut)
    return keep(self.norm(train, relu=True, name="conv2_1")(y, shortcut))


class VideoResNet(nn.Module):
  """torchvision's VideoResNet with basic blocks; see the module docstring.

  Attributes:
    conv_types: the convolution of each of the four stages ('3d', '2d' or '2plus1d').
    stage_sizes: blocks per stage.
    stem: '3d' (3x7x7 conv) or '2plus1d' (1x7x7 to 45 maps, then 3x1x1).
    num_classes: classifier outputs; 0 returns the pooled 512-d features.
    dtype: compute dtype; parameters stay float32.
    kernels: how convs and BatchNorm are computed (``cnnlab.models.kernels``).
  """
  conv_types: Sequence[str] = ("3d",) * 4
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stem: str = "3d"
  num_classes: int = 400
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN

  def _stem(self, x, train, conv, norm):
    if self.stem == "2plus1d":
      x = conv(45, (1, 7, 7), (1, 2, 2), (0, 3, 3), name="stem_0")(x)
      x = norm(train, relu=True, name="stem_1")(x)
      x = conv(64, (3, 1, 1), 1, (1, 0, 0), name="stem_3")(x)
      return norm(train, relu=True, name="stem_4")(x)
    x = conv(64, (3, 7, 7), (1, 2, 2), (1, 3, 3), name="stem_0")(x)
    return norm(train, relu=True, name="stem_1")(x)

  def _check(self, x) -> None:
    if self.num_classes < 0:
      raise ValueError(f"num_classes={self.num_classes} is invalid; use 0 (features) or > 0")
    bad = [t for t in (*self.conv_types, self.stem) if t not in CONV_TYPES]
    if bad or self.stem == "2d":
      raise ValueError(f"video ResNet conv type {(bad or ['2d'])[0]!r} is invalid; stages take "
                       f"{', '.join(CONV_TYPES)}, the stem '3d' or '2plus1d'")
    if x.ndim != 5:
      raise ValueError(f"video ResNets take (N, T, H, W, C) clips; got shape {tuple(x.shape)}")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self._check(x)
    conv = functools.partial(layers.conv, spatial_dims=3, dtype=self.dtype,
                             kernels=self.kernels)
    norm = functools.partial(layers.batch_norm, unbiased_running_var=True, dtype=self.dtype,
                             kernels=self.kernels)
    x = self._stem(x, train, conv, norm)
    for s, (num_blocks, conv_type) in enumerate(zip(self.stage_sizes, self.conv_types)):
      for i in range(num_blocks):
        x = VideoBasicBlock(conv, norm, self.kernels.materialize, planes=64 * 2 ** s,
                            stride=2 if s > 0 and i == 0 else 1, conv_type=conv_type,
                            name=f"layer{s + 1}_{i}")(x, train)
    x = layers.global_avg_pool(x)
    if self.num_classes == 0:
      return x
    return layers.dense(self.num_classes, dtype=self.dtype,
                        kernel_init=nn.initializers.normal(0.01),
                        bias_init=nn.initializers.zeros, name="fc")(x)


_PAPER = ("Tran, Wang, Torresani, Ray, LeCun, Paluri 2018, A closer look at spatiotemporal "
          "convolutions for action recognition, CVPR (arXiv:1711.11248)")

# name -> (stage conv types, stem, params at 400 classes, torchvision's KINETICS400_V1 weights
# card acc@1 / acc@5: clip_len 16, 5 clips per video; torchvision/models/video/resnet.py).
_VARIANTS = {
    "r3d_18": (("3d",) * 4, "3d", 33_371_472, "63.200 / 83.479"),
    "mc3_18": (("3d",) + ("2d",) * 3, "3d", 11_695_440, "63.960 / 84.130"),
    "r2plus1d_18": (("2plus1d",) * 4, "2plus1d", 31_505_325, "67.463 / 86.175"),
}
_RESULT = ("the paper compares the 18-layer R3D, MC3 and R(2+1)D on Kinetics trained from "
           "scratch (§4.2, Table 2; figures not transcribed here); torchvision's "
           "KINETICS400_V1 weights card, Kinetics-400 val video top-1 / top-5: ")

for _name, (_types, _stem, _count, _card) in _VARIANTS.items():
  register(
      ModelInfo(name=_name, family="video_resnet", num_params=_count,
                input_shape=(16, 112, 112, 3), num_classes=400, paper=_PAPER,
                paper_result=_RESULT + _card, torchvision=f"video.{_name}",
                notes=f"torchvision layout (video.{_name}); input (N, T, H, W, C)"),
      functools.partial(VideoResNet, conv_types=_types, stem=_stem))
