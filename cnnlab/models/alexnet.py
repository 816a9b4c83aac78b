"""AlexNet: torchvision's single-tower layout (``alexnet``) and the 2012 paper's (``alexnet_2012``).

``alexnet`` (class ``AlexNet``) matches ``torchvision.models.alexnet``, whose layout follows the
single-column network of Krizhevsky 2014, "One weird trick for parallelizing convolutional
neural networks" (arXiv:1404.5997) rather than the 2012 paper: convs 64@11x11/4 pad 2,
192@5x5 pad 2, 384@3x3, 256@3x3, 256@3x3 (pad 1), 3x3/2 max-pools after the 1st, 2nd and 5th
conv, an adaptive average pool to 6x6, then dropout 0.5, fc 4096, ReLU, dropout 0.5, fc 4096,
ReLU, fc classes. 61,100,840 parameters at 1000 classes; torch's default init. Names follow the
indices of torchvision's ``nn.Sequential``s, so ``features.3.weight`` is ``features_3/kernel``:

  features_0, features_3, features_6, features_8, features_10   (convs)
  classifier_1, classifier_4, classifier_6                      (fcs)

``alexnet_2012`` (class ``AlexNet2012``) is Krizhevsky, Sutskever, Hinton 2012, "ImageNet
classification with deep convolutional neural networks" (NIPS), §3 and Fig. 2, with the two GPU
towers expressed as grouped convolutions (conv2, conv4, conv5 see only their own tower's maps,
conv3 and the fcs see both). The paper writes 224x224 inputs, but its 11x11 stride-4 conv1 only
yields 55x55 from 227x227, which is what we take. Layer table (1000 classes):

  layer                                   output        params
  conv1 96@11x11/4, ReLU, LRN             55x55x96       34,944
  max-pool 3x3/2                          27x27x96            0
  conv2 256@5x5 pad 2, groups 2, ReLU, LRN 27x27x256    307,456
  max-pool 3x3/2                          13x13x256           0
  conv3 384@3x3 pad 1, ReLU               13x13x384     885,120
  conv4 384@3x3 pad 1, groups 2, ReLU     13x13x384     663,936
  conv5 256@3x3 pad 1, groups 2, ReLU     13x13x256     442,624
  max-pool 3x3/2                          6x6x256             0
  fc6 4096, ReLU, dropout 0.5             4096       37,752,832
  fc7 4096, ReLU, dropout 0.5             4096       16,781,312
  fc8 1000                                1000        4,097,000
  total                                              60,965,224

Local response normalisation (§3.3): b_c = a_c / (k + alpha * sum_{window of n} a^2)^beta with
k=2, n=5, alpha=1e-4, beta=0.75, after the ReLU of conv1 and conv2. ``layers.LocalResponseNorm``
divides its alpha by n (torch's convention), so we pass alpha = 5 * 1e-4 to get the paper's
formula literally. Dropout (§4.2) zeroes the outputs of the fc6 and fc7 neurons (torchvision
instead drops the inputs of its first two fcs); we use inverted dropout, which equals the
paper's "multiply the outputs by 0.5 at test time" in expectation. Init (§5): weights
N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fcs, 0 in conv1, conv3 and fc8.
Names: conv1..conv5, fc6, fc7, fc8.

Paper result: 40.7% top-1 / 18.2% top-5 error for one CNN on ILSVRC-2012 validation (Table 2);
37.5% / 17.0% on the ILSVRC-2010 test set (Table 1).

``num_classes=0`` returns what the last fc would receive, as if it were replaced by an identity:
the 4096-d fc7 output (after its ReLU; for ``alexnet_2012`` also after its dropout in training).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels


class AlexNet(nn.Module):
  """torchvision's AlexNet; see the module docstring."""
  num_classes: int = 1000
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN   # how convs and pools are computed

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv(features, kernel, stride, padding, idx, in_ch):
      return layers.conv(features, kernel, stride, padding, use_bias=True, dtype=self.dtype,
                         kernel_init=layers.torch_default_kernel,
                         bias_init=layers.torch_default_bias(in_ch * kernel * kernel),
                         kernels=self.kernels, name=f"features_{idx}")

    def fc(features, idx, fan_in):
      return layers.dense(features, dtype=self.dtype, kernel_init=layers.torch_default_kernel,
                          bias_init=layers.torch_default_bias(fan_in), name=f"classifier_{idx}")

    pool = functools.partial(layers.max_pool, window=3, stride=2, kernels=self.kernels)
    x = x.astype(self.dtype)
    x = pool(nn.relu(conv(64, 11, 4, 2, 0, x.shape[-1])(x)))
    x = pool(nn.relu(conv(192, 5, 1, 2, 3, 64)(x)))
    x = nn.relu(conv(384, 3, 1, 1, 6, 192)(x))
    x = nn.relu(conv(256, 3, 1, 1, 8, 384)(x))
    x = pool(nn.relu(conv(256, 3, 1, 1, 10, 256)(x)))
    x = layers.flatten_nchw(layers.adaptive_avg_pool(x, 6))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(fc(4096, 1, x.shape[-1])(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(fc(4096, 4, 4096)(x))
    if self.num_classes == 0:
      return x
    return fc(self.num_classes, 6, 4096)(x)


class AlexNet2012(nn.Module):
  """The 2012 paper's two-tower AlexNet with LRN, on 227x227 input; see the module docstring."""
  num_classes: int = 1000
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN   # how convs and pools are computed

  @nn.compact
  def __call__(self, x, train: bool = False):
    weight_init = nn.initializers.normal(0.01)

    def conv(features, kernel, stride, padding, groups, bias, name):
      return layers.conv(features, kernel, stride, padding, groups=groups, use_bias=True,
                         dtype=self.dtype, kernel_init=weight_init,
                         bias_init=nn.initializers.constant(bias), kernels=self.kernels,
                         name=name)

    def fc(features, bias, name):
      return layers.dense(features, dtype=self.dtype, kernel_init=weight_init,
                          bias_init=nn.initializers.constant(bias), name=name)

    # The paper's alpha (no 1/n) expressed in LocalResponseNorm's torch convention (alpha/n).
    lrn = layers.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)

    pool = functools.partial(layers.max_pool, window=3, stride=2, kernels=self.kernels)
    x = x.astype(self.dtype)
    x = pool(lrn(nn.relu(conv(96, 11, 4, 0, 1, 0.0, "conv1")(x))))
    x = pool(lrn(nn.relu(conv(256, 5, 1, 2, 2, 1.0, "conv2")(x))))
    x = nn.relu(conv(384, 3, 1, 1, 1, 0.0, "conv3")(x))
    x = nn.relu(conv(384, 3, 1, 1, 2, 1.0, "conv4")(x))
    x = pool(nn.relu(conv(256, 3, 1, 1, 2, 1.0, "conv5")(x)))
    if x.shape[1:3] != (6, 6):
      raise ValueError("alexnet_2012 expects 227x227 input (6x6 maps after pool5); got an "
                       f"input giving {x.shape[1]}x{x.shape[2]}")
    x = layers.flatten_nchw(x)
    x = nn.relu(fc(4096, 1.0, "fc6")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(fc(4096, 1.0, "fc7")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.num_classes == 0:
      return x
    return fc(self.num_classes, 0.0, "fc8")(x)


register(
    ModelInfo(name="alexnet", family="alexnet", num_params=61_100_840,
              input_shape=(224, 224, 3), num_classes=1000,
              paper=("Krizhevsky 2014, One weird trick for parallelizing convolutional neural "
                     "networks, arXiv:1404.5997 (torchvision's layout); after Krizhevsky, "
                     "Sutskever, Hinton 2012, NIPS"),
              paper_result=("no paper number for this exact layout; torchvision's "
                            "IMAGENET1K_V1 weights card: 56.522% top-1 / 79.066% top-5 accuracy "
                            "(ImageNet-1k val, single 224 crop)"),
              torchvision="alexnet",
              notes="single tower 64-192-384-256-256, no LRN, adaptive 6x6 average pool"),
    AlexNet)

register(
    ModelInfo(name="alexnet_2012", family="alexnet", num_params=60_965_224,
              input_shape=(227, 227, 3), num_classes=1000,
              paper=("Krizhevsky, Sutskever, Hinton 2012, ImageNet classification with deep "
                     "convolutional neural networks, NIPS"),
              paper_result=("40.7% top-1 / 18.2% top-5 error, 1 CNN, ILSVRC-2012 val (Table 2); "
                            "37.5% / 17.0% on ILSVRC-2010 test (Table 1)"),
              torchvision=None,
              notes=("paper layout: two towers as groups=2 in conv2/4/5, LRN after conv1/2, "
                     "overlapping 3x3/2 pools, 227x227 input")),
    AlexNet2012)
