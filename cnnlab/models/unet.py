"""U-Net (``unet``) and 3-D U-Net (``unet3d``): one rank-generic network, and U-Net with a zoo
classifier as its encoder (``unet`` with ``encoder='resnet34'`` etc.).

Ronneberger, Fischer, Brox 2015, "U-Net: Convolutional networks for biomedical image
segmentation" (MICCAI, arXiv:1505.04597), Fig. 1 and §2: a contracting path of levels of two
3x3 convolutions, each followed by a ReLU, and a 2x2 max-pool (stride 2) between levels, the
channels doubling after each pool (64 ... 1024); an expanding path of 2x2 "up-convolutions"
(``upsampling.ConvTranspose``) that halve the channels, concatenation with the contracting
path's map of the same level, and two 3x3 convolutions + ReLU; a final 1x1 convolution to the
classes. 1 input channel, 2 classes, 64 base channels, depth 4 (four pools): 31,030,658
parameters. Init (§3): N(0, 2/N) with N the inputs of one unit (He), zero biases.

``padding='valid'`` is the paper's: unpadded convolutions, so the output is smaller than the
input (572 -> 388 in Fig. 1, a margin of 92 on each side) and every skip is centre-cropped to
the up-convolution's output. Tiled "overlap-tile" inference (§2, Fig. 2) feeds tiles larger
than the output by that margin: ``output_size`` / ``margin`` / ``valid_input_size`` give the
geometry. ``padding='same'`` (the default) pads every 3x3 convolution by 1, so the output has
the input's size; an input not divisible by 2**depth works too (each up-convolution's output
is zero-padded at its end to the skip's size, which is where floor-mode pooling dropped
pixels).

Çiçek, Abdulkadir, Lienkamp, Brox, Ronneberger 2016, "3D U-Net: Learning dense volumetric
segmentation from sparse annotation" (MICCAI, arXiv:1606.06650), §2 and Fig. 2: the same
network at rank 3 with 3x3x3 convolutions and 2x2x2 pools / up-convolutions, depth 3, 3
input channels and 3 labels (input tile 132x132x116 -> output 44x44x28, valid convolutions),
BatchNorm before each ReLU, and channels doubled *before* each pool (each level's first
convolution has half the channels of its second: 32, 64 | 64, 128 | 128, 256 | 256, 512) with
up-convolutions that keep their channel count (``double_before_pool``). The paper states
19,069,955 parameters; that is exactly the convolutions with biases, the up-convolutions
without, and BatchNorm without a learned scale and shift (Caffe's BatchNorm layer): what
``unet3d`` builds (``up_bias=False``, ``norm_affine=False``).

Parameter names: ``enc{l}/conv{1,2}`` (+ ``bn{1,2}`` with BatchNorm) for the contracting
levels l = 0 .. depth (``enc{depth}`` is the bottom), ``dec{l}/upconv`` and
``dec{l}/conv{1,2}`` (+ ``bn{1,2}``) for the expanding levels l = depth-1 .. 0, ``head``.

With ``encoder=<classifier name>`` (``EncoderUNet``) the contracting path is that classifier
(ResNet or VGG, any depth and rank, see ``ENCODER_FAMILIES``) in ``features_only`` mode, its
parameters carrying exactly the classifier's names (``conv1/kernel``, ``layer1_0/...``,
``features_0/...``; its ``fc`` / classifier absent) so ``--config.init_from`` of a classifier
run or torchvision weights fills them by path and shape. Then come ``dec{i}`` blocks
(up-convolution to ``decoder_channels[i]``, concat with the next shallower feature map, two
3x3 conv + BN + ReLU), blocks without a skip until the input resolution is reached (ResNet's
stem has stride 2), and the 1x1 ``head``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, create, info, names, register
from cnnlab.models import layers, upsampling
from cnnlab.models.kernels import PLAIN, Kernels

PADDINGS = ("same", "valid")
ENCODER_FAMILIES = ("resnet", "vgg")   # registry families with a features_only mode
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")   # §3 of the paper


# --- geometry (valid convolutions) ------------------------------------------------------------
def output_size(size: int, depth: int = 4, padding: str = "valid") -> int:
  """The output length along one spatial dim for an input of ``size``: ``size`` itself with
  'same' padding; with 'valid', two 3x3 convs lose 4 per level, every pool needs an even
  length and every length must stay positive (ValueError naming the size otherwise).
  ``output_size(572) == 388`` (Fig. 1)."""
  _check_padding(padding)
  if padding == "same":
    return size
  n = size
  for level in range(depth):
    n -= 4
    if n < 2 or n % 2:
      raise ValueError(f"input size {size} is not valid for a depth-{depth} U-Net with valid "
                       f"convolutions (level {level} pools a length of {n}); try "
                       f"{valid_input_size(size, depth)}")
    n //= 2
  n = _expand(n - 4, depth)
  if n < 1:
    raise ValueError(f"input size {size} is too small for a depth-{depth} U-Net with valid "
                     f"convolutions; the smallest is {valid_input_size(1, depth)}")
  return n


def _expand(bottom: int, depth: int) -> int:
  """The output length from the bottom level's: each expanding level doubles and loses 4;
  0 where a length would drop below 1."""
  n = bottom
  for _ in range(depth):
    if n < 1:
      return 0
    n = 2 * n - 4
  return max(n, 0)


def valid_input_size(size: int, depth: int = 4) -> int:
  """The smallest input length >= ``size`` a valid-padding U-Net of ``depth`` accepts (the
  valid lengths are 2**depth * k + c for a constant c, from a large enough k on)."""
  bottom = 1
  while True:
    n = bottom + 4
    for _ in range(depth):
      n = 2 * n + 4
    if n >= size and _expand(bottom, depth) >= 1:
      return n
    bottom += 1


def margin(depth: int = 4) -> int:
  """Pixels lost on each side with valid convolutions: (input - output) / 2, the same for
  every valid size (92 for depth 4: the overlap-tile border of Fig. 2)."""
  size = valid_input_size(1, depth)
  return (size - output_size(size, depth)) // 2


def _check_padding(padding: str) -> None:
  if padding not in PADDINGS:
    raise ValueError(f"padding={padding!r} is invalid; use one of {', '.join(PADDINGS)}")


def centre_crop(x, size: Sequence[int]):
  """The central ``size`` of each spatial dim (the paper's cropping of the skips)."""
  starts = [(n - m) // 2 for n, m in zip(x.shape[1:-1], size)]
  return x[(slice(None), *(slice(s, s + m) for s, m in zip(starts, size)), slice(None))]


def fit_end(x, size: Sequence[int]):
  """Crops or zero-pads each spatial dim at its end to ``size``."""
  x = x[(slice(None), *(slice(0, m) for m in size), slice(None))]
  pads = [(0, 0)] + [(0, m - n) for n, m in zip(x.shape[1:-1], size)] + [(0, 0)]
  return jnp.pad(x, pads) if any(p != (0, 0) for p in pads) else x


# --- blocks ---------------------------------------------------------------------------------
def conv_pair(x, features: Sequence[int], train: bool, conv: Callable, norm: Callable | None):
  """Two 3x3 convolutions (``conv1``, ``conv2`` of the calling module), each followed by
  [BatchNorm (``bn1``, ``bn2``) and] ReLU; ``norm`` None: no BatchNorm."""
  for i, f in enumerate(features, 1):
    x = conv(f, 3, name=f"conv{i}")(x)
    x = nn.relu(x) if norm is None else norm(train, relu=True, name=f"bn{i}")(x)
  return x


class DownBlock(nn.Module):
  """A contracting level: ``conv_pair`` at widths ``features``. ``conv`` / ``norm``: the
  model's bound factories."""
  features: Sequence[int]
  conv: Callable = layers.conv
  norm: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    return conv_pair(x, self.features, train, self.conv, self.norm)


class UpBlock(nn.Module):
  """An expanding level: 2x up-convolution to ``up_features``, concatenation with ``skip``
  (centre-cropped to it with 'valid' padding; else the up-convolution's output is fitted to
  the skip), ``conv_pair`` at ``features``. No skip: up-convolution and convs only."""
  up_features: int
  features: int
  padding: str = "same"
  conv: Callable = layers.conv
  norm: Callable | None = None
  upconv: Callable = upsampling.conv_transpose

  @nn.compact
  def __call__(self, x, skip=None, train: bool = False):
    x = self.upconv(self.up_features, 2, name="upconv")(x)
    if skip is not None:
      if self.padding == "valid":
        skip = centre_crop(skip, x.shape[1:-1])
      else:
        x = fit_end(x, skip.shape[1:-1])
      x = jnp.concatenate([skip.astype(x.dtype), x], axis=-1)
    return conv_pair(x, (self.features,) * 2, train, self.conv, self.norm)


def _check_input(x, spatial_dims: int, num_classes: int) -> None:
  if spatial_dims not in (1, 2, 3):
    raise ValueError(f"spatial_dims={spatial_dims} is invalid; use 1, 2 or 3")
  if x.ndim != spatial_dims + 2:
    raise ValueError(f"a {spatial_dims}-D U-Net takes (N, *{spatial_dims} spatial dims, C) "
                     f"input; got shape {tuple(x.shape)}")
  if num_classes < 0:
    raise ValueError(f"num_classes={num_classes} is invalid; use 0 (features) or > 0")


def _head(x, num_classes: int, spatial_dims: int, dtype: Any, kernels: Kernels):
  """The final 1x1 convolution to the classes (``head``); num_classes=0 returns ``x``."""
  if num_classes == 0:
    return x
  return layers.conv(num_classes, 1, use_bias=True, dtype=dtype, kernel_init=he_normal,
                     spatial_dims=spatial_dims, kernels=kernels, name="head")(x)


# --- the network ------------------------------------------------------------------------------
class UNet(nn.Module):
  """U-Net / 3-D U-Net; see the module docstring.

  Attributes:
    num_classes: output channels (logits); 0 returns the last 3x3 conv's features.
    base_channels: channels of the first level (64; the 3-D U-Net's 32).
    depth: number of poolings (4; the 3-D U-Net's 3).
    padding: 'same' (output = input size) or 'valid' (the paper's; see ``output_size``).
    batch_norm: BatchNorm between each 3x3 conv and its ReLU (off in the 2015 paper).
    norm_affine: BatchNorm with a learned scale and shift (torch's ``affine``).
    double_before_pool: the 3-D U-Net's channel plan (see the module docstring).
    up_bias: biases in the up-convolutions.
    dropout_rate: dropout at the end of the contracting path (§3.1 of the paper names it
      without a rate; 0 = none).
    spatial_dims: 1, 2 or 3.
    dtype / kernels: compute dtype and how convs, pools and BatchNorm are computed.
  """
  num_classes: int = 2
  base_channels: int = 64
  depth: int = 4
  padding: str = "same"
  batch_norm: bool = False
  norm_affine: bool = True
  double_before_pool: bool = False
  up_bias: bool = True
  dropout_rate: float = 0.0
  spatial_dims: int = 2
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN

  def output_spatial(self, spatial: Sequence[int]) -> tuple[int, ...]:
    """The output's spatial shape for an input of spatial shape ``spatial``."""
    return tuple(output_size(n, self.depth, self.padding) for n in spatial)

  def widths(self) -> list[tuple[int, int]]:
    """(first, second) conv widths of each contracting level 0 .. depth."""
    b = self.base_channels
    if self.double_before_pool:
      return [(b * 2 ** level, b * 2 ** (level + 1)) for level in range(self.depth + 1)]
    return [(b * 2 ** level,) * 2 for level in range(self.depth + 1)]

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_input(x, self.spatial_dims, self.num_classes)
    _check_padding(self.padding)
    self.output_spatial(x.shape[1:-1])                   # refuses invalid 'valid' sizes
    conv = functools.partial(layers.conv, padding=1 if self.padding == "same" else 0,
                             use_bias=True, kernel_init=he_normal, dtype=self.dtype,
                             spatial_dims=self.spatial_dims, kernels=self.kernels)
    norm = (functools.partial(layers.batch_norm, unbiased_running_var=True,
                              use_scale=self.norm_affine, use_bias=self.norm_affine,
                              dtype=self.dtype, kernels=self.kernels)
            if self.batch_norm else None)
    upconv = functools.partial(upsampling.conv_transpose, use_bias=self.up_bias,
                               dtype=self.dtype, spatial_dims=self.spatial_dims,
                               kernels=self.kernels)
    widths, skips = self.widths(), []
    x = x.astype(self.dtype)
    for level in range(self.depth):
      skips.append(DownBlock(widths[level], conv, norm, name=f"enc{level}")(x, train))
      x = layers.max_pool(skips[-1], 2, 2, kernels=self.kernels)
    x = DownBlock(widths[self.depth], conv, norm, name=f"enc{self.depth}")(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for level in reversed(range(self.depth)):
      up = x.shape[-1] if self.double_before_pool else x.shape[-1] // 2
      x = UpBlock(up, widths[level][1], self.padding, conv, norm, upconv,
                  name=f"dec{level}")(x, skips[level], train)
    return _head(x, self.num_classes, self.spatial_dims, self.dtype, self.kernels)


# --- U-Net on a zoo classifier ----------------------------------------------------------------
def encoder_names() -> list[str]:
  """Registered classifiers that can be a U-Net's encoder (families ``ENCODER_FAMILIES``)."""
  return [n for n in names() if info(n).family in ENCODER_FAMILIES]


class EncoderUNet(nn.Module):
  """U-Net whose contracting path is the zoo classifier ``encoder``; see the module docstring.

  Attributes:
    encoder: a registered ResNet or VGG name (``encoder_names()``), e.g. 'resnet34',
      'vgg16_bn', 'resnet18_3d'.
    num_classes: output channels (logits); 0 returns the last decoder block's features.
    decoder_channels: widths of the decoder blocks, deepest first (as many are used as there
      are up-convolutions: 5 for a ResNet, 4 for a VGG).
    batch_norm: BatchNorm in the decoder's convs (the encoder keeps its own).
    spatial_dims: the encoder's rank; None keeps the registered model's (2, or 1 / 3 for the
      ``_1d`` / ``_3d`` ResNets).
    dtype / kernels: compute dtype and kernels, for the encoder too.
  """
  encoder: str = "resnet34"
  num_classes: int = 2
  decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)
  batch_norm: bool = True
  spatial_dims: int | None = None
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN

  def setup(self):
    if self.encoder not in encoder_names():
      raise ValueError(f"encoder={self.encoder!r} is not a supported U-Net encoder; use one "
                       f"of {', '.join(encoder_names())}")
    rank = {} if self.spatial_dims is None else {"spatial_dims": self.spatial_dims}
    self.backbone = create(self.encoder, num_classes=0, features_only=True, dtype=self.dtype,
                           kernels=self.kernels, **rank)
    nn.share_scope(self, self.backbone)   # the classifier's own parameter names, at the top

  @nn.compact
  def __call__(self, x, train: bool = False):
    rank = x.ndim - 2
    _check_input(x, self.spatial_dims or rank, self.num_classes)
    features = list(self.backbone(x, train))
    conv = functools.partial(layers.conv, padding=1, kernel_init=he_normal, dtype=self.dtype,
                             spatial_dims=rank, kernels=self.kernels)
    norm = (functools.partial(layers.batch_norm, unbiased_running_var=True, dtype=self.dtype,
                              kernels=self.kernels) if self.batch_norm else None)
    conv = conv if self.batch_norm else functools.partial(conv, use_bias=True)
    upconv = functools.partial(upsampling.conv_transpose, dtype=self.dtype, spatial_dims=rank,
                               kernels=self.kernels)
    y, skips = features[-1], features[-2::-1]
    steps = len(skips) + (1 if skips and skips[-1].shape[1] < x.shape[1] else 0)
    if len(self.decoder_channels) < steps:
      raise ValueError(f"decoder_channels={tuple(self.decoder_channels)} has "
                       f"{len(self.decoder_channels)} widths; {self.encoder} needs {steps}")
    for i in range(steps):
      skip = skips[i] if i < len(skips) else None
      y = UpBlock(self.decoder_channels[i], self.decoder_channels[i], "same", conv, norm,
                  upconv, name=f"dec{i}")(y, skip, train)
    y = fit_end(y, x.shape[1:-1])
    return _head(y, self.num_classes, rank, self.dtype, self.kernels)


def build(encoder: str | None = None, **kwargs) -> nn.Module:
  """The ``unet`` registry entry: ``UNet`` (the paper's), or ``EncoderUNet`` on ``encoder``."""
  if encoder is None:
    return UNet(**kwargs)
  return EncoderUNet(encoder, **kwargs)


# --- registry ---------------------------------------------------------------------------------
_PAPER = ("Ronneberger, Fischer, Brox 2015, U-Net: Convolutional networks for biomedical image "
          "segmentation, MICCAI (arXiv:1505.04597)")
_PAPER_3D = ("Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger 2016, 3D U-Net: Learning dense "
             "volumetric segmentation from sparse annotation, MICCAI (arXiv:1606.06650)")

register(
    ModelInfo(name="unet", family="unet", task="segment", num_params=31_030_658,
              input_shape=(512, 512, 1),
              num_classes=2, paper=_PAPER,
              paper_result=("ISBI 2012 EM segmentation challenge: warping error 0.000353, Rand "
                            "error 0.0382, pixel error 0.0611 (Table 1); IoU 0.9203 on "
                            "PhC-U373 and 0.7756 on DIC-HeLa, ISBI 2015 cell tracking "
                            "(Table 2)"),
              notes=("Fig. 1: depth 4, 64 base channels, 2x2 up-convolutions, 1 input "
                     "channel; padding='same' by default ('valid' is the paper's, 572 -> 388); "
                     "encoder='resnet34' etc. puts a zoo classifier in the contracting path")),
    build)

register(
    ModelInfo(name="unet3d", family="unet", task="segment", num_params=19_069_955,
              input_shape=(116, 132, 132, 3), num_classes=3, paper=_PAPER_3D,
              paper_result=("Xenopus kidney, IoU of semi- and fully-automated segmentation "
                            "(§3, Tables 1 and 2; figures not transcribed here)"),
              notes=("§2 / Fig. 2: rank 3, depth 3, 32 base channels doubled before each "
                     "pool, BatchNorm (no learned affine) before each ReLU, up-convolutions "
                     "without bias; 19,069,955 parameters as the paper states; valid "
                     "convolutions give 132x132x116 -> 44x44x28 (x, y, z; here D, H, W = 116, 132, 132, "
                     "padding='valid')")),
    functools.partial(UNet, base_channels=32, depth=3, batch_norm=True, norm_affine=False,
                      double_before_pool=True, up_bias=False, spatial_dims=3))
