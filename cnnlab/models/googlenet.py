"""GoogLeNet (Inception v1), laid out like torchvision's ``googlenet`` (the BatchNorm variant).

Szegedy et al. 2015, "Going deeper with convolutions" (CVPR). ILSVRC 2014 winner: 6.67% top-5
error on the test set with an ensemble of 7 models and 144 crops; a single model evaluated on a
single crop gives 10.07% top-5 on the validation set (Table 3 of the paper).

What follows torchvision rather than the paper, so that torchvision weights load unchanged:

* every convolution is ``BasicConv2d``: conv without bias, BatchNorm (epsilon 1e-3, not torch's
  usual 1e-5), ReLU. The paper predates BatchNorm;
* the "5x5" branch of each Inception block uses a 3x3 kernel (a long-standing torchvision quirk,
  kept for weight compatibility, see pytorch/vision issue #906);
* max-pools use ``ceil_mode=True``; the final pool is an adaptive average pool to 1x1, then
  dropout 0.2 and the classifier;
* the auxiliary heads pool to 4x4 with an adaptive average pool (the paper: 5x5 average pool,
  stride 3, which gives 4x4 at 224 input), then a 1x1 BasicConv2d to 128 channels, flatten in
  torch's NCHW order, fc 1024 + ReLU, dropout 0.7, fc to the classes;
* ``transform_input`` (default off) re-normalises ImageNet-normalised input to the [-1, 1]
  scaling the original (ported) weights expect.

Outputs: ``train=True`` with ``aux_logits=True`` returns ``GoogLeNetOutputs(logits,
aux_logits2, aux_logits1)`` (torchvision's order); otherwise the logits alone.

Auxiliary heads and init: linen creates parameters lazily, so an ``init(..., train=False)`` that
skipped the heads would leave no aux parameters and a later ``train=True`` apply would fail.
The heads therefore always run while initialising (``self.is_initializing()``), whatever
``train`` is, so the variables always hold them when ``aux_logits=True``. Eval-mode ``apply``
never touches them. Parameter counts (1000 classes): 6,624,904 without the aux heads (what
inference uses, torchvision's published count) and 13,004,888 with them.

Parameter names mirror torchvision's state_dict keys (``.`` becomes ``/``, a Sequential index
``k`` becomes the suffix ``_k``):

  conv1/conv/kernel, conv1/bn/{scale,bias}      <- conv1.conv.weight, conv1.bn.{weight,bias}
  conv2, conv3                                   (BasicConv2d, same inner names)
  inception{3a,3b,4a..4e,5a,5b}/
      branch1            <- branch1                  (1x1)
      branch2_0, branch2_1 <- branch2.0, branch2.1   (1x1 reduce, 3x3)
      branch3_0, branch3_1 <- branch3.0, branch3.1   (1x1 reduce, "5x5" that is 3x3)
      branch4_1          <- branch4.1                (pool projection; branch4.0 is the pool)
  aux1/conv/{conv,bn}, aux1/fc1, aux1/fc2       (aux2 likewise)
  fc/{kernel,bias}                               <- fc.{weight,bias}

BatchNorm running statistics sit under the same paths in ``batch_stats`` (``mean``, ``var``).
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels

GoogLeNetOutputs = collections.namedtuple("GoogLeNetOutputs",
                                          ["logits", "aux_logits2", "aux_logits1"])

# torchvision's init_weights: N(0, 0.01) for conv and linear weights. (torch truncates at +-2
# absolute, i.e. 200 standard deviations, so this is a plain normal in practice.)
_weight_init = nn.initializers.normal(0.01)
_BN_EPSILON = 1e-3

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj) per block: Table 1 of the paper.
_INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _torch_linear(dense: Callable, features: int, fan_in: int, name: str) -> nn.Dense:
  """A Linear with torchvision's GoogLeNet init: N(0, 0.01) weights, torch default bias."""
  return dense(features, kernel_init=_weight_init, bias_init=layers.torch_default_bias(fan_in),
               name=name)


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU. ``conv`` / ``norm``: the model's bound
  ``layers.conv`` / ``layers.batch_norm`` (dtype, kernels)."""
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  conv: Callable = layers.conv
  norm: Callable = layers.batch_norm

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.conv(self.features, self.kernel, self.stride, self.padding,
                  kernel_init=_weight_init, name="conv")(x)
    return self.norm(train, epsilon=_BN_EPSILON, relu=True, unbiased_running_var=True,
                     name="bn")(x)


class Inception(nn.Module):
  """Four parallel branches concatenated on channels (Figure 2b of the paper). ``basic``: the
  model's bound ``BasicConv2d``; ``max_pool``: its bound ``layers.max_pool``."""
  ch1x1: int
  ch3x3red: int
  ch3x3: int
  ch5x5red: int
  ch5x5: int
  pool_proj: int
  basic: Callable = BasicConv2d
  max_pool: Callable = layers.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    block = lambda f, k, p, name: self.basic(f, k, padding=p, name=name)
    b1 = block(self.ch1x1, 1, 0, "branch1")(x, train)
    b2 = block(self.ch3x3red, 1, 0, "branch2_0")(x, train)
    b2 = block(self.ch3x3, 3, 1, "branch2_1")(b2, train)
    b3 = block(self.ch5x5red, 1, 0, "branch3_0")(x, train)
    b3 = block(self.ch5x5, 3, 1, "branch3_1")(b3, train)  # 3x3, as torchvision
    b4 = self.max_pool(x, 3, 1, padding=1, ceil_mode=True)
    b4 = block(self.pool_proj, 1, 0, "branch4_1")(b4, train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier on an intermediate feature map (§5 of the paper). ``basic`` /
  ``dense``: the model's bound ``BasicConv2d`` / ``layers.dense``."""
  num_classes: int
  dropout_rate: float = 0.7
  basic: Callable = BasicConv2d
  dense: Callable = layers.dense

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.adaptive_avg_pool(x, 4)
    x = self.basic(128, 1, name="conv")(x, train)
    x = layers.flatten_nchw(x)
    x = nn.relu(_torch_linear(self.dense, 1024, x.shape[-1], "fc1")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return _torch_linear(self.dense, self.num_classes, 1024, "fc2")(x)


class GoogLeNet(nn.Module):
  """GoogLeNet with BatchNorm, torchvision layout. See the module docstring for names.

  Attributes:
    num_classes: classifier outputs; 0 returns the pooled 1024-d features (no aux heads).
    aux_logits: build the two auxiliary classifiers (after 4a and 4d) and return them in train.
    transform_input: map ImageNet-normalised input to the [-1, 1] range of the ported weights.
    dropout_rate / aux_dropout_rate: 0.2 / 0.7 as torchvision (the paper: 0.4 / 0.7).
    dtype: compute dtype; parameters stay float32.
  """
  num_classes: int = 1000
  aux_logits: bool = True
  transform_input: bool = False
  dropout_rate: float = 0.2
  aux_dropout_rate: float = 0.7
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN

  def _transform(self, x):
    mean = jnp.asarray([0.485, 0.456, 0.406], x.dtype)
    std = jnp.asarray([0.229, 0.224, 0.225], x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.num_classes < 0:
      raise ValueError(f"num_classes={self.num_classes} is invalid; use 0 (features) or > 0")
    if self.transform_input:
      x = self._transform(x)
    with_aux = self.aux_logits and self.num_classes > 0
    # Run the heads while initialising even in eval mode, so their parameters always exist.
    run_aux = with_aux and (train or self.is_initializing())
    basic = functools.partial(
        BasicConv2d, conv=functools.partial(layers.conv, dtype=self.dtype, kernels=self.kernels),
        norm=functools.partial(layers.batch_norm, dtype=self.dtype, kernels=self.kernels))
    dense = functools.partial(layers.dense, dtype=self.dtype)
    max_pool = functools.partial(layers.max_pool, kernels=self.kernels)
    conv = lambda f, k, s, p, name: basic(f, k, s, p, name=name)
    inception = lambda key: Inception(*_INCEPTION[key], basic=basic, max_pool=max_pool,
                                      name=f"inception{key}")
    aux = lambda name: InceptionAux(self.num_classes, self.aux_dropout_rate, basic=basic,
                                    dense=dense, name=name)
    pool = lambda x, k: max_pool(x, k, 2, ceil_mode=True)

    x = conv(64, 7, 2, 3, "conv1")(x, train)
    x = pool(x, 3)
    x = conv(64, 1, 1, 0, "conv2")(x, train)
    x = conv(192, 3, 1, 1, "conv3")(x, train)
    x = pool(x, 3)

    x = inception("3a")(x, train)
    x = inception("3b")(x, train)
    x = pool(x, 3)

    x = inception("4a")(x, train)
    aux1 = aux("aux1")(x, train) if run_aux else None
    x = inception("4b")(x, train)
    x = inception("4c")(x, train)
    x = inception("4d")(x, train)
    aux2 = aux("aux2")(x, train) if run_aux else None
    x = inception("4e")(x, train)
    x = pool(x, 2)

    x = inception("5a")(x, train)
    x = inception("5b")(x, train)
    x = layers.global_avg_pool(x)
    if self.num_classes == 0:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = _torch_linear(dense, self.num_classes, x.shape[-1], "fc")(x)
    if train and with_aux:
      return GoogLeNetOutputs(logits, aux2, aux1)
    return logits


_PAPER = "Szegedy et al. 2015, Going deeper with convolutions, CVPR (arXiv:1409.4842)"

register(
    ModelInfo(
        name="googlenet", family="googlenet", num_params=6_624_904,
        input_shape=(224, 224, 3), num_classes=1000, paper=_PAPER,
        paper_result=("ILSVRC 2014 classification: 6.67% top-5 error (7 models, 144 crops, test "
                      "set); single model, single crop: 10.07% top-5 (Table 3)"),
        torchvision="googlenet",
        notes=("num_params counts what inference uses (no aux heads), as torchvision does; "
               "with aux_logits=True the variables also hold aux1/aux2, 13,004,888 params in "
               "all. BatchNorm variant with 3x3 '5x5' branches (torchvision layout).")),
    GoogLeNet)
