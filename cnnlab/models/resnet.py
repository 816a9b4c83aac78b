"""Residual networks: the ImageNet family (torchvision layout, v1.5) and the CIFAR family.

He, Zhang, Ren, Sun 2016, "Deep residual learning for image recognition" (CVPR,
arXiv:1512.03385).

ImageNet models (``ResNet``; resnet18/34/50/101/152) follow torchvision exactly so its weights
load unchanged:

* stem: 7x7/2 conv 64, BN, ReLU, 3x3/2 max-pool (padding 1); four stages of 64/128/256/512
  "planes"; global average pool; fc;
* shortcuts are identities, with a 1x1 projection + BN where the shape changes (the paper's
  option B);
* "v1.5": a bottleneck block strides in its 3x3 conv, not in its first 1x1 conv as the paper
  does. This costs a little speed and gains about half a point of top-1 (NVIDIA's ResNet-50
  v1.5 notes); the parameter count is identical;
* init: kaiming-normal (fan_out, ReLU gain) convs, BN scale 1 / bias 0, torch's default init for
  the fc. ``zero_init_residual`` zero-initialises the last BN scale of every residual branch, so
  each block starts as an identity (Goyal et al. 2017, "Accurate, large minibatch SGD", §5.1).

Parameter names mirror torchvision's state_dict keys (``.`` -> ``/``; a block ``layerS.i``
becomes ``layerS_i``; the ``downsample`` Sequential becomes two named layers):

  conv1, bn1                                     <- conv1, bn1
  layer{1..4}_{i}/conv1, bn1, conv2, bn2[, conv3, bn3]
  layer{1..4}_{i}/downsample_conv, downsample_bn <- layerS.i.downsample.0, .downsample.1
  fc                                             <- fc

CIFAR models (``CifarResNet``; resnet20/32/44/56/110) follow §4.2 of the paper: a 3x3 conv with
16 filters, three stages of n basic blocks at 16/32/64 filters on 32x32/16x16/8x8 maps, global
average pool, a 10-way fc; depth 6n+2. Shortcuts are option A (identity; when the shape changes,
subsample by 2 and zero-pad the new channels: no parameters), as the paper uses for CIFAR.
``shortcut="B"`` swaps in 1x1 projections where the shape changes. Same names as above,
``layer{1..3}_{i}``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels


def _classifier(num_classes: int, fan_in: int, dtype: Any) -> nn.Dense:
  """The final fc with torch.nn.Linear's default init, as torchvision leaves it."""
  return layers.dense(num_classes, dtype=dtype, kernel_init=layers.torch_default_kernel,
                      bias_init=layers.torch_default_bias(fan_in), name="fc")


def _identity(x):
  return x


class _Block(nn.Module):
  """Fields the residual blocks share. ``conv`` and ``norm`` are the layer factories the model
  binds once (``layers.conv`` / ``layers.batch_norm`` with its dtype, rank and kernels; ``norm``
  takes ``train`` first); ``materialize`` is the kernels' fusion barrier, used in training."""
  planes: int
  stride: int = 1
  zero_init_residual: bool = False
  dilation: int = 1              # of the 3x3 conv(s); padding grows with it (torchvision)
  conv: Callable = layers.conv
  norm: Callable = functools.partial(layers.batch_norm, unbiased_running_var=True)
  materialize: Callable = _identity

  def keep(self, train):
    """Materialise activations the backward pass transposes (training only; see
    ``kernels.materialize``)."""
    return self.materialize if train else _identity

  def projection(self, x, features: int, train: bool):
    """Option B shortcut: identity, or a strided 1x1 conv + BN when the shape changes (layers
    of the calling block)."""
    if self.stride == 1 and x.shape[-1] == features:
      return x
    x = self.conv(features, 1, self.stride, name="downsample_conv")(x)
    return self.norm(train, name="downsample_bn")(x)


class BasicBlock(_Block):
  """Two 3x3 convs (Figure 2 of the paper); ``stride`` on the first."""
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    keep, d = self.keep(train), self.dilation
    y = self.conv(self.planes, 3, self.stride, d, dilation=d, name="conv1")(x)
    y = keep(self.norm(train, relu=True, name="bn1")(y))
    y = self.conv(self.planes, 3, 1, d, dilation=d, name="conv2")(y)
    shortcut = self.projection(x, self.planes, train)
    return keep(self.norm(train, relu=True, zero_scale=self.zero_init_residual,
                          name="bn2")(y, shortcut))


class Bottleneck(_Block):
  """1x1 reduce, 3x3, 1x1 expand by 4 (Figure 5 right); v1.5: ``stride`` on the 3x3."""
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    keep, d = self.keep(train), self.dilation
    y = self.conv(self.planes, 1, name="conv1")(x)
    y = keep(self.norm(train, relu=True, name="bn1")(y))
    y = self.conv(self.planes, 3, self.stride, d, dilation=d, name="conv2")(y)
    y = keep(self.norm(train, relu=True, name="bn2")(y))
    y = self.conv(self.planes * self.expansion, 1, name="conv3")(y)
    shortcut = self.projection(x, self.planes * self.expansion, train)
    return keep(self.norm(train, relu=True, zero_scale=self.zero_init_residual,
                          name="bn3")(y, shortcut))


def _check(num_classes: int, spatial_dims: int, x) -> None:
  if num_classes < 0:
    raise ValueError(f"num_classes={num_classes} is invalid; use 0 (features) or > 0")
  if spatial_dims not in (1, 2, 3):
    raise ValueError(f"spatial_dims={spatial_dims} is invalid; use 1, 2 or 3")
  if x.ndim != spatial_dims + 2:
    raise ValueError(f"a {spatial_dims}-D model takes (N, *{spatial_dims} spatial dims, C) "
                     f"input; got shape {tuple(x.shape)}")


def _stage_geometry(dilate: Sequence[bool] | None,
                    num_stages: int) -> list[tuple[int, int, int]]:
  """(stride, first block's dilation, other blocks' dilation) per stage, as torchvision's
  ``_make_layer``: a dilated stage keeps stride 1 and multiplies the running dilation by the
  stride it replaces; its first block keeps the dilation of the stage before. ``dilate``
  None: no dilation."""
  dilate = (False,) * (num_stages - 1) if dilate is None else tuple(dilate)
  if len(dilate) != num_stages - 1:
    raise ValueError(f"replace_stride_with_dilation={tuple(dilate)} needs {num_stages - 1} "
                     "entries (stages 2 onwards)")
  geometry, dilation = [(1, 1, 1)], 1
  for d in dilate:
    previous = dilation
    if d:
      dilation *= 2
    geometry.append((1 if d else 2, previous, dilation))
  return geometry


class ResNet(nn.Module):
  """ImageNet ResNet, torchvision layout (v1.5 bottlenecks). Names: see the module docstring.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block: ``BasicBlock`` or ``Bottleneck``.
    num_classes: classifier outputs; 0 returns the pooled features (512 or 2048 wide).
    zero_init_residual: zero-init the last BN scale in each residual branch.
    dtype: compute dtype; parameters stay float32.
    spatial_dims: 1 (signals, N L C), 2 (images) or 3 (volumes, N D H W C); every kernel,
      stride and pool is the 2-D one's along each spatial dim.
    kernels: how convs, pools and BatchNorm are computed (``cnnlab.models.kernels``).
    replace_stride_with_dilation: per stage from the second on, trade its stride 2 for a
      dilation of 2 (torchvision's argument; (False, True, True) gives output stride 8, the
      FCN / DeepLabV3 backbone); None: no dilation. Parameters are unchanged.
    features_only: return the feature maps ``(stem, layer1, ..., layer4)`` instead of logits
      (the stem's after its ReLU, before the max-pool; strides 2, 4, 8, 16, 32 without
      dilation), as timm's ``features_only``: the encoder of a segmentation network. No ``fc``
      is built.
  """
  stage_sizes: Sequence[int]
  block: Any
  num_classes: int = 1000
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  spatial_dims: int = 2
  kernels: Kernels = PLAIN
  replace_stride_with_dilation: Sequence[bool] | None = None
  features_only: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check(self.num_classes, self.spatial_dims, x)
    geometry = _stage_geometry(self.replace_stride_with_dilation, len(self.stage_sizes))
    conv = functools.partial(layers.conv, dtype=self.dtype, spatial_dims=self.spatial_dims,
                             kernels=self.kernels)
    norm = functools.partial(layers.batch_norm, dtype=self.dtype, unbiased_running_var=True,
                             kernels=self.kernels)
    x = conv(64, 7, 2, 3, name="conv1")(x)
    features = [norm(train, relu=True, name="bn1")(x)]
    x = layers.max_pool(features[0], 3, 2, padding=1, kernels=self.kernels)
    x = self.kernels.materialize(x) if train else x
    for s, (num_blocks, (stride, first, rest)) in enumerate(zip(self.stage_sizes, geometry)):
      for i in range(num_blocks):
        x = self.block(64 * 2 ** s, stride if i == 0 else 1, self.zero_init_residual,
                       first if i == 0 else rest, conv=conv, norm=norm,
                       materialize=self.kernels.materialize, name=f"layer{s + 1}_{i}")(x, train)
      features.append(x)
    if self.features_only:
      return tuple(features)
    x = layers.global_avg_pool(x)
    if self.num_classes == 0:
      return x
    return _classifier(self.num_classes, x.shape[-1], self.dtype)(x)


def _option_a(x, features: int, stride: int):
  """Option A shortcut: subsample spatially by ``stride``, zero-pad the extra channels."""
  if stride > 1:
    x = x[(slice(None), *(slice(None, None, stride),) * (x.ndim - 2), slice(None))]
  extra = features - x.shape[-1]
  if extra > 0:
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(extra // 2, extra - extra // 2)])
  return x


class CifarBasicBlock(_Block):
  """The CIFAR basic block: two 3x3 convs, option A or B shortcut."""
  shortcut: str = "A"

  @nn.compact
  def __call__(self, x, train: bool = False):
    keep = self.keep(train)
    y = self.conv(self.planes, 3, self.stride, 1, name="conv1")(x)
    y = keep(self.norm(train, relu=True, name="bn1")(y))
    y = self.conv(self.planes, 3, 1, 1, name="conv2")(y)
    if self.shortcut == "A":
      shortcut = _option_a(x, self.planes, self.stride)
    else:
      shortcut = self.projection(x, self.planes, train)
    return keep(self.norm(train, relu=True, zero_scale=self.zero_init_residual,
                          name="bn2")(y, shortcut))


class CifarResNet(nn.Module):
  """CIFAR-10 ResNet of depth 6n+2 (§4.2 of the paper). Names: see the module docstring.

  Attributes:
    blocks_per_stage: n; the depth is 6n + 2 (n=3 gives ResNet-20).
    num_classes: classifier outputs; 0 returns the pooled 64-d features.
    shortcut: "A" (parameter-free, the paper's CIFAR choice) or "B" (1x1 projections).
    zero_init_residual: zero-init the last BN scale in each residual branch.
    dtype: compute dtype; parameters stay float32.
    spatial_dims: 1, 2 or 3 (see ``ResNet``).
    kernels: how convs, pools and BatchNorm are computed (``cnnlab.models.kernels``).
  """
  blocks_per_stage: int
  num_classes: int = 10
  shortcut: str = "A"
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  spatial_dims: int = 2
  kernels: Kernels = PLAIN

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.shortcut not in ("A", "B"):
      raise ValueError(f"shortcut={self.shortcut!r} is invalid; use 'A' or 'B'")
    _check(self.num_classes, self.spatial_dims, x)
    conv = functools.partial(layers.conv, dtype=self.dtype, spatial_dims=self.spatial_dims,
                             kernels=self.kernels)
    norm = functools.partial(layers.batch_norm, dtype=self.dtype, kernels=self.kernels)
    x = conv(16, 3, 1, 1, name="conv1")(x)
    x = norm(train, relu=True, name="bn1")(x)
    x = self.kernels.materialize(x) if train else x
    for s, planes in enumerate((16, 32, 64)):
      for i in range(self.blocks_per_stage):
        stride = 2 if s > 0 and i == 0 else 1
        x = CifarBasicBlock(planes, stride, self.zero_init_residual, conv=conv, norm=norm,
                            materialize=self.kernels.materialize, shortcut=self.shortcut,
                            name=f"layer{s + 1}_{i}")(x, train)
    x = layers.global_avg_pool(x)
    if self.num_classes == 0:
      return x
    return _classifier(self.num_classes, x.shape[-1], self.dtype)(x)


# --- registry ---------------------------------------------------------------------------------
_PAPER = ("He, Zhang, Ren, Sun 2016, Deep residual learning for image recognition, CVPR "
          "(arXiv:1512.03385)")

# name -> (block, stage sizes, params at 1000 classes, paper result)
_IMAGENET = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 11_689_512,
                 "27.88% top-1 error, 10-crop, ImageNet val (Table 2; option A shortcuts)"),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 21_797_672,
                 "24.52% top-1 / 7.46% top-5 error, 10-crop (Table 3, ResNet-34 B); "
                 "21.84 / 5.71 single-model multi-scale (Table 4)"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 25_557_032,
                 "22.85% top-1 / 6.71% top-5 error, 10-crop (Table 3); "
                 "20.74 / 5.25 single-model multi-scale (Table 4)"),
    "resnet101": (Bottleneck, (3, 4, 23, 3), 44_549_160,
                  "21.75% top-1 / 6.05% top-5 error, 10-crop (Table 3); "
                  "19.87 / 4.60 single-model multi-scale (Table 4)"),
    "resnet152": (Bottleneck, (3, 8, 36, 3), 60_192_808,
                  "21.43% top-1 / 5.71% top-5 error, 10-crop (Table 3); "
                  "19.38 / 4.49 single-model multi-scale (Table 4)"),
}

for _name, (_block, _stages, _count, _result) in _IMAGENET.items():
  register(
      ModelInfo(name=_name, family="resnet", num_params=_count, input_shape=(224, 224, 3),
                num_classes=1000, paper=_PAPER, paper_result=_result, torchvision=_name,
                notes=("v1.5 (stride in the bottleneck's 3x3)" if _block is Bottleneck else
                       "basic blocks; option B shortcuts as torchvision")),
      functools.partial(ResNet, stage_sizes=_stages, block=_block))

# The torchvision family on signals and volumes: every 2-D kernel, stride and pool becomes its
# 1-D / 3-D counterpart (7-tap stem stride 2, 3-tap max-pool, ...). 1 input channel here.
# name -> (spatial dims, depth, params at 1000 classes with 1 input channel)
_ND = {
    "resnet18_1d": (1, "resnet18", 4_356_904), "resnet34_1d": (1, "resnet34", 7_731_240),
    "resnet50_1d": (1, "resnet50", 18_003_240),
    "resnet18_3d": (3, "resnet18", 33_673_000), "resnet34_3d": (3, "resnet34", 63_982_632),
    "resnet50_3d": (3, "resnet50", 48_204_072),
}

for _name, (_dims, _depth, _count) in _ND.items():
  _block, _stages = _IMAGENET[_depth][:2]
  register(
      ModelInfo(name=_name, family="resnet", num_params=_count,
                input_shape=(1024, 1) if _dims == 1 else (64, 64, 64, 1), num_classes=1000,
                paper=_PAPER,
                paper_result=(f"none for {_dims}-D input; the 2-D {_depth}: "
                              + _IMAGENET[_depth][3]),
                torchvision=None,
                notes=(f"torchvision's {_depth} layout with {_dims}-D convolutions and pools "
                       f"(spatial_dims={_dims}); any input size and channel count")),
      functools.partial(ResNet, stage_sizes=_stages, block=_block, spatial_dims=_dims))

# name -> (n, params with option A at 10 classes, Table 6 of the paper)
_CIFAR = {
    "resnet20": (3, 269_722, "8.75% test error on CIFAR-10, 0.27M params (Table 6)"),
    "resnet32": (5, 464_154, "7.51% test error on CIFAR-10, 0.46M params (Table 6)"),
    "resnet44": (7, 658_586, "7.17% test error on CIFAR-10, 0.66M params (Table 6)"),
    "resnet56": (9, 853_018, "6.97% test error on CIFAR-10, 0.85M params (Table 6)"),
    "resnet110": (18, 1_727_962, ("6.43% test error on CIFAR-10, best of 5 runs; "
                                  "6.61 +- 0.16 mean +- std, 1.7M params (Table 6)")),
}

for _name, (_n, _count, _result) in _CIFAR.items():
  register(
      ModelInfo(name=_name, family="resnet_cifar", num_params=_count, input_shape=(32, 32, 3),
                num_classes=10, paper=_PAPER, paper_result=_result, torchvision=None,
                notes=(f"depth {6 * _n + 2}, option A shortcuts (parameter free), §4.2; "
                       "shortcut='B' adds 2,752 parameters (1x1 projections + BN)")),
      functools.partial(CifarResNet, blocks_per_stage=_n))
