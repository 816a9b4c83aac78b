"""FCN and DeepLabV3 on a dilated ResNet-50, in torchvision's layouts: ``fcn_resnet50`` and
``deeplabv3_resnet50`` (``torchvision.models.segmentation``), so its weights load unchanged.

Backbone: ResNet-50 (``cnnlab.models.resnet``, v1.5) with ``replace_stride_with_dilation=
(False, True, True)``: stages 3 and 4 keep stride 1 and dilate their 3x3 convolutions by 2 and
4, so the features have output stride 8 (2048 channels from layer4, 1024 from layer3).

Heads (torchvision's, default torch init):

* FCN (Long, Shelhamer, Darrell 2015, "Fully convolutional networks for semantic
  segmentation", CVPR, arXiv:1411.4038; torchvision's ``FCNHead``): 3x3 conv 2048 -> 512
  without bias, BatchNorm, ReLU, dropout 0.1, 1x1 conv to the classes (with bias).
* DeepLabV3 (Chen, Papandreou, Schroff, Adam 2017, "Rethinking atrous convolution for semantic
  image segmentation", arXiv:1706.05587, §3.3 and Fig. 5; torchvision's ``DeepLabHead``):
  atrous spatial pyramid pooling - a 1x1 conv, three 3x3 convs with dilation 12, 24, 36 and
  image pooling (global average, 1x1 conv, broadcast back), each to 256 channels with BatchNorm
  and ReLU - concatenated, projected by a 1x1 conv + BN + ReLU + dropout 0.5; then 3x3 conv +
  BN + ReLU and a 1x1 conv to the classes.
* optional auxiliary FCN head on layer3 (1024 -> 256 -> classes), off by default
  (``aux_loss``, torchvision's argument).

The logits are resized to the input size with torch's bilinear interpolation
(align_corners=False; ``upsampling.resize_linear``) and returned channels-last, (N, H, W,
classes). ``train=True`` with ``aux_loss`` returns ``(logits, aux_logits)`` (both at the input
size); otherwise the logits alone. The aux head always runs while initialising, so its
parameters exist after an eval-mode ``init`` (as GoogLeNet's). ``outputs(x, train, aux=True)``
returns both in any mode. Parameters at 21 classes: 32,957,013 (FCN) and 39,638,869
(DeepLabV3) without the aux head, 35,322,218 and 42,004,074 with it (torchvision's counts).

Names (torchvision's keys, ``.`` -> ``/``, a Sequential index as a module name or ``_k``):

  backbone/conv1, backbone/bn1, backbone/layer{1..4}_{i}/...  <- backbone.conv1, ...
  classifier/0, classifier/1 (BN), classifier/4              <- classifier.0 / .1 / .4 (FCN)
  classifier/0/convs_{k}_{j}, classifier/0/project_{0,1}     <- classifier.0.convs.k.j, ...
  classifier/1, classifier/2 (BN), classifier/4              <- (DeepLabV3)
  aux_classifier/0, aux_classifier/1, aux_classifier/4       <- aux_classifier.*

Any rank works (``spatial_dims``; torchvision's are 2-D).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers, upsampling
from cnnlab.models.kernels import PLAIN, Kernels
from cnnlab.models.resnet import Bottleneck, ResNet

HEADS = ("fcn", "deeplabv3")
ASPP_RATES = (12, 24, 36)          # atrous rates at output stride 8 (§4.1 of DeepLabV3)
ASPP_CHANNELS = 256


def _torch_conv(conv: Callable, features: int, kernel: int, fan_in: int, **kwargs):
  """A conv with torch's default init (the bias drawn with the given fan-in)."""
  return conv(features, kernel, kernel_init=layers.torch_default_kernel,
              bias_init=layers.torch_default_bias(fan_in), **kwargs)


class FCNHead(nn.Module):
  """torchvision's FCNHead: 3x3 conv to in/4 (no bias), BN, ReLU, dropout 0.1, 1x1 conv."""
  num_classes: int
  conv: Callable = layers.conv
  norm: Callable = layers.batch_norm
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, x, train: bool = False):
    inter = x.shape[-1] // 4
    x = _torch_conv(self.conv, inter, 3, 9 * x.shape[-1], padding=1, name="0")(x)
    x = self.norm(train, relu=True, name="1")(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return _torch_conv(self.conv, self.num_classes, 1, inter, use_bias=True, name="4")(x)


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling (DeepLabV3 §3.3), torchvision's names ``convs_k_j`` and
  ``project_j``."""
  rates: Sequence[int] = ASPP_RATES
  features: int = ASPP_CHANNELS
  conv: Callable = layers.conv
  norm: Callable = layers.batch_norm
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    fan_in = x.shape[-1]
    branch = functools.partial(_torch_conv, self.conv, self.features)
    outs = [self.norm(train, relu=True, name="convs_0_1")(
        branch(1, fan_in, name="convs_0_0")(x))]
    for k, rate in enumerate(self.rates, 1):
      y = branch(3, 9 * fan_in, padding=rate, dilation=rate, name=f"convs_{k}_0")(x)
      outs.append(self.norm(train, relu=True, name=f"convs_{k}_1")(y))
    k = len(self.rates) + 1
    pooled = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=True)
    pooled = branch(1, fan_in, name=f"convs_{k}_1")(pooled)
    pooled = self.norm(train, relu=True, name=f"convs_{k}_2")(pooled)
    outs.append(jnp.broadcast_to(pooled, outs[0].shape))   # bilinear from 1 pixel = broadcast
    y = jnp.concatenate(outs, axis=-1)
    y = _torch_conv(self.conv, self.features, 1, y.shape[-1], name="project_0")(y)
    y = self.norm(train, relu=True, name="project_1")(y)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class DeepLabHead(nn.Module):
  """torchvision's DeepLabHead: ASPP, 3x3 conv (no bias) + BN + ReLU, 1x1 conv to classes."""
  num_classes: int
  conv: Callable = layers.conv
  norm: Callable = layers.batch_norm

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = ASPP(conv=self.conv, norm=self.norm, name="0")(x, train)
    x = _torch_conv(self.conv, ASPP_CHANNELS, 3, 9 * x.shape[-1], padding=1, name="1")(x)
    x = self.norm(train, relu=True, name="2")(x)
    return _torch_conv(self.conv, self.num_classes, 1, ASPP_CHANNELS, use_bias=True,
                       name="4")(x)


class SegmentationResNet(nn.Module):
  """FCN / DeepLabV3 on a dilated ResNet; see the module docstring.

  Attributes:
    head: 'fcn' or 'deeplabv3'.
    num_classes: classes of the per-pixel logits (21: PASCAL VOC's, torchvision's default).
    aux_loss: build the auxiliary FCN head on layer3 (returned in training).
    stage_sizes: the backbone's blocks per stage ((3, 4, 6, 3): ResNet-50).
    spatial_dims: 1, 2 or 3.
    dtype / kernels: compute dtype and how convs, pools and BatchNorm are computed.
  """
  head: str = "fcn"
  num_classes: int = 21
  aux_loss: bool = False
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  spatial_dims: int = 2
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN

  def __call__(self, x, train: bool = False):
    with_aux = self.aux_loss and (train or self.is_initializing())
    logits, aux = self.outputs(x, train, aux=with_aux)
    return (logits, aux) if train and self.aux_loss else logits

  @nn.compact
  def outputs(self, x, train: bool = False, aux: bool = True):
    """(logits, aux logits or None), both at the input size; aux only with ``aux_loss``."""
    if self.head not in HEADS:
      raise ValueError(f"head={self.head!r} is invalid; use one of {', '.join(HEADS)}")
    if self.num_classes < 1:
      raise ValueError(f"num_classes={self.num_classes} is invalid; use >= 1")
    features = ResNet(self.stage_sizes, Bottleneck, spatial_dims=self.spatial_dims,
                      replace_stride_with_dilation=(False, True, True), features_only=True,
                      dtype=self.dtype, kernels=self.kernels, name="backbone")(x, train)
    conv = functools.partial(layers.conv, dtype=self.dtype, spatial_dims=self.spatial_dims,
                             kernels=self.kernels)
    norm = functools.partial(layers.batch_norm, unbiased_running_var=True, dtype=self.dtype,
                             kernels=self.kernels)
    head = FCNHead if self.head == "fcn" else DeepLabHead
    size = x.shape[1:-1]
    logits = head(self.num_classes, conv, norm, name="classifier")(features[-1], train)
    logits = upsampling.resize_linear(logits, size)
    if not (aux and self.aux_loss):
      return logits, None
    aux_logits = FCNHead(self.num_classes, conv, norm, name="aux_classifier")(features[-2],
                                                                              train)
    return logits, upsampling.resize_linear(aux_logits, size)


# --- registry ---------------------------------------------------------------------------------
_TORCHVISION_CARD = ("torchvision's COCO_WITH_VOC_LABELS_V1 weights card (COCO val2017, the 20 "
                     "VOC classes + background): ")
_MODELS = {
    "fcn_resnet50": (
        "fcn", 32_957_013,
        "Long, Shelhamer, Darrell 2015, Fully convolutional networks for semantic "
        "segmentation, CVPR (arXiv:1411.4038)",
        "FCN-8s on VGG-16: 62.2 mean IU on PASCAL VOC 2012 test (Table 3); this ResNet-50 "
        "layout is torchvision's, " + _TORCHVISION_CARD + "mIoU 60.5, pixel acc. 91.4"),
    "deeplabv3_resnet50": (
        "deeplabv3", 39_638_869,
        "Chen, Papandreou, Schroff, Adam 2017, Rethinking atrous convolution for semantic "
        "image segmentation (arXiv:1706.05587)",
        "85.7% mIOU on PASCAL VOC 2012 test with ResNet-101 (Table 7); this ResNet-50 layout "
        "is torchvision's, " + _TORCHVISION_CARD + "mIoU 66.4, pixel acc. 92.4"),
}

for _name, (_head, _count, _paper, _result) in _MODELS.items():
  register(
      ModelInfo(name=_name, family="segmentation", task="segment", num_params=_count,
                input_shape=(520, 520, 3), num_classes=21, paper=_paper, paper_result=_result,
                torchvision=_name,
                notes=("torchvision.models.segmentation layout: dilated ResNet-50 (output "
                       "stride 8), logits bilinearly resized to the input; aux_loss=True adds "
                       "the layer3 FCN head (2,365,205 params at 21 classes)")),
      functools.partial(SegmentationResNet, head=_head))
