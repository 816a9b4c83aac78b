"""1-D CNN baselines for time-series classification: ``fcn1d`` and ``resnet1d``.

Wang, Yan, Oates 2017, "Time series classification from scratch with deep neural networks: a
strong baseline" (IJCNN, arXiv:1611.06455), §II-B (FCN) and §II-C (ResNet), Figure 1:

* FCN: three convolution blocks — conv 128 filters of length 8, 256 of length 5, 128 of
  length 3, stride 1, each followed by BatchNorm and ReLU — then global average pooling over
  time and a softmax (dense) layer. No pooling, no dropout.
* ResNet: three residual blocks of 64, 128, 128 maps; each block is the FCN's three convs
  (8, 5, 3) with BatchNorm, ReLU after the first two and, after the add, after the third; the
  shortcut is a 1x1 conv + BatchNorm where the number of maps changes, else a BatchNorm alone
  (as in the authors' Keras code and Ismail Fawaz et al.'s re-implementation); then global
  average pooling and a dense softmax layer.

Details from the reference (Keras) implementations the paper links: 'same' padding (output
length = input length; the odd tap after), convolutions with biases, Keras BatchNorm defaults
(epsilon 1e-3, momentum 0.99), Glorot-uniform weights and zero biases. Univariate input with
2 classes gives 264,962 (FCN) and 504,258 (ResNet) trainable parameters.

Input (N, L, C): any number of channels C (multivariate series) and any length L (the global
average pool makes the classifier independent of L). Padded positions of unequal-length
series count in that average; feed equal-length (or resampled) series for exact results.
``num_classes=0`` returns the pooled features (128 wide).

Names: fcn1d ``conv{1,2,3}``, ``bn{1,2,3}``, ``fc``; resnet1d ``block{1,2,3}/conv{1,2,3}``,
``bn{1,2,3}``, ``shortcut_conv``, ``shortcut_bn``, then ``fc``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels

KERAS_BN_EPSILON = 1e-3
KERAS_BN_MOMENTUM = 0.99
_glorot = nn.initializers.glorot_uniform()


def keras_conv(dtype: Any = jnp.float32, kernels: Kernels = PLAIN) -> Callable:
  """``layers.conv`` with the reference implementation's defaults bound: 'same' padding, bias,
  Glorot-uniform weights, 1-D; call as ``conv(features, kernel, name=...)``."""
  return functools.partial(layers.conv, padding="SAME", use_bias=True, kernel_init=_glorot,
                           spatial_dims=1, dtype=dtype, kernels=kernels)


def keras_norm(dtype: Any = jnp.float32, kernels: Kernels = PLAIN) -> Callable:
  """``layers.batch_norm`` with Keras' defaults bound; call as ``norm(train, relu=..., name=)``."""
  return functools.partial(layers.batch_norm, momentum=KERAS_BN_MOMENTUM,
                           epsilon=KERAS_BN_EPSILON, dtype=dtype, kernels=kernels)


class _Keras1D(nn.Module):
  """What both models share: dtype / kernels, bound once into conv and norm factories."""
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN

  def factories(self) -> tuple[Callable, Callable]:
    return keras_conv(self.dtype, self.kernels), keras_norm(self.dtype, self.kernels)

  def classify(self, x, num_classes: int):
    x = layers.global_avg_pool(x)
    if num_classes == 0:
      return x
    return layers.dense(num_classes, dtype=self.dtype, kernel_init=_glorot,
                        bias_init=nn.initializers.zeros, name="fc")(x)


def _check(x, num_classes: int, what: str) -> None:
  if num_classes < 0:
    raise ValueError(f"num_classes={num_classes} is invalid; use 0 (features) or > 0")
  if x.ndim != 3:
    raise ValueError(f"{what} takes (N, L, C) series; got shape {tuple(x.shape)}")


class FCN1D(_Keras1D):
  """Wang et al.'s fully convolutional network (§II-B); see the module docstring."""
  num_classes: int = 2
  filters: Sequence[int] = (128, 256, 128)
  kernel_sizes: Sequence[int] = (8, 5, 3)

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check(x, self.num_classes, "fcn1d")
    conv, norm = self.factories()
    for i, (f, k) in enumerate(zip(self.filters, self.kernel_sizes), 1):
      x = conv(f, k, name=f"conv{i}")(x)
      x = norm(train, relu=True, name=f"bn{i}")(x)
    return self.classify(x, self.num_classes)


class ResidualBlock1D(nn.Module):
  """Three convs (8, 5, 3) with BatchNorm; the shortcut is added before the last ReLU.
  ``conv`` / ``norm``: the model's bound ``keras_conv`` / ``keras_norm``."""
  features: int = 64
  kernel_sizes: Sequence[int] = (8, 5, 3)
  conv: Callable = keras_conv()
  norm: Callable = keras_norm()

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = x
    last = len(self.kernel_sizes)
    for i, k in enumerate(self.kernel_sizes, 1):
      y = self.conv(self.features, k, name=f"conv{i}")(y)
      if i < last:
        y = self.norm(train, relu=True, name=f"bn{i}")(y)
    shortcut = x
    if x.shape[-1] != self.features:
      shortcut = self.conv(self.features, 1, name="shortcut_conv")(x)
    shortcut = self.norm(train, name="shortcut_bn")(shortcut)
    return self.norm(train, relu=True, name=f"bn{last}")(y, shortcut)


class ResNet1D(_Keras1D):
  """Wang et al.'s residual network (§II-C); see the module docstring."""
  num_classes: int = 2
  features: Sequence[int] = (64, 128, 128)

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check(x, self.num_classes, "resnet1d")
    conv, norm = self.factories()
    for i, f in enumerate(self.features, 1):
      x = ResidualBlock1D(f, conv=conv, norm=norm, name=f"block{i}")(x, train)
    return self.classify(x, self.num_classes)


_PAPER = ("Wang, Yan, Oates 2017, Time series classification from scratch with deep neural "
          "networks: a strong baseline, IJCNN (arXiv:1611.06455)")
_RESULT = ("UCR test accuracy (mean of 5 runs, Ismail Fawaz et al. 2019, DMKD 33(4), "
           "results-ucr-128.csv; see datasets/ucr/README): ")

# name -> (module, params at 1 channel / 2 classes, re-run accuracies, layout)
_MODELS = {
    "fcn1d": (FCN1D, 264_962,
              "GunPoint 1.000, ItalyPowerDemand 0.963, ArrowHead 0.843, JapaneseVowels 0.993",
              "conv 128@8, 256@5, 128@3 + BN + ReLU, global average pool, dense"),
    "resnet1d": (ResNet1D, 504_258,
                 "GunPoint 0.991, ItalyPowerDemand 0.962, ArrowHead 0.838, JapaneseVowels 0.992",
                 "3 residual blocks of 64/128/128 maps, kernels 8/5/3, 1x1 conv + BN shortcut "
                 "where the width changes"),
}

for _name, (_module, _count, _accuracy, _layout) in _MODELS.items():
  register(
      ModelInfo(name=_name, family="timeseries", num_params=_count, input_shape=(150, 1),
                num_classes=2, paper=_PAPER, paper_result=_RESULT + _accuracy,
                notes=f"{_layout}; any length / channel count; params at 1 channel, 2 classes"),
      _module)
