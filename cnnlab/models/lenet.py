"""LeNet-5: a modern variant (``lenet5``) and the 1998 paper's network (``lenet5_1998``).

LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11). The paper's LeNet-5 reaches 0.95% test error on MNIST without
distortions and 0.8% when the training set is augmented with random affine distortions
(§III-C, Fig. 9).

``lenet5`` (class ``LeNet5``) is the form most courses teach today, on raw 28x28x1 MNIST:
conv 6@5x5 (padding 2) + ReLU + 2x2 max-pool, conv 16@5x5 + ReLU + 2x2 max-pool, dense
120-84-classes with ReLU between; 61,706 parameters at 10 classes. Names ``conv1 conv2 fc1 fc2
fc3``; torch's default init; the flatten uses torch's NCHW order so a torch LeNet's weights load.

``lenet5_1998`` (class ``LeNet5_1998``) follows §II-B of the paper on 32x32x1 input (MNIST's
28x28 digits padded by 2, §III-A; the paper also rescales pixels so the background is -0.1 and
the foreground 1.175, which is the data pipeline's business):

  layer  output    trainable params
  C1     28x28x6      156   6 maps of 5x5 convolution
  S2     14x14x6       12   each 2x2 window summed, times one coefficient per map, plus a bias
  C3     10x10x16   1,516   5x5 convolution over the subsets of S2 maps in Table I (60 pairs)
  S4      5x5x16       32   as S2
  C5      1x1x120  48,120   5x5 convolution, full (120 x 16 x 25 + 120)
  F6      84       10,164   fully connected
  output  classes       0   Euclidean RBF units with fixed +-1 codes
  total            60,000

Squashing: §II-A says every unit "in layers up to F6" passes its weighted sum (plus bias)
through the sigmoid squashing function, and §II-B says the same of the subsampling units. We
therefore squash after all six layers C1, S2, C3, S4, C5 and F6 with f(a) = A tanh(S a),
A = 1.7159, S = 2/3 (Appendix A), and not after the RBF output.

C3: the unconnected (S2 map, C3 map) pairs of Table I are not parameters at all. The layer
stores one 5x5 kernel per connected pair (``c3/kernel`` of shape (5, 5, 60)) and scatters it
into a dense (5, 5, 6, 16) kernel whose other entries are constant zeros, so gradients reach
only the 1,500 connected weights.

Initialisation (Appendix A): every weight, biases and subsampling coefficients included, is
drawn from U(-2.4/F, 2.4/F) with F the fan-in of the unit it feeds (bias input not counted):
25 for C1, 4 for S2/S4, 75/100/150 for a C3 map with 3/4/6 inputs, 400 for C5, 120 for F6.

Output: the paper's RBF unit i computes y_i = sum_j (x_j - w_ij)^2 against a fixed code w_i
of +1/-1 values. The paper drew the codes as stylised 7x12 bitmaps of the characters, which it
does not print; we draw our own 7x12 digits below (``codes='digits'``, the default for up to
10 classes). For more classes, ``codes='hash'`` sets bit j of class i's code from
SHA-256("lenet5_1998/{i}"), deterministic on every platform. The codes are a constant of the
computation, not a variable: nothing about them is in ``params`` or any other collection
(``rbf_codes`` returns them). The model outputs -y_i, so the argmax is the predicted class and
softmax cross-entropy over it is a usable loss; ``map_loss`` is the paper's own criterion
(eq. 9). ``head='dense'`` swaps the RBF for an ordinary trainable dense layer (softmax head).

``num_classes=0`` returns the 84-d F6 output (after squashing) for both models; for ``lenet5``
it is the 84-d ReLU output of ``fc2``.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models import ModelInfo, register
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels

_PAPER = ("LeCun, Bottou, Bengio, Haffner 1998, Gradient-based learning applied to document "
          "recognition, Proc. IEEE 86(11):2278-2324")


# --- the modern LeNet-5 -----------------------------------------------------------------------
class LeNet5(nn.Module):
  """Modern LeNet-5 for 28x28x1 input: ReLU, max-pool, dense softmax head. ``s2d``: conv +
  ReLU + pool on the space-to-depth view (``s2d_conv_relu_pool2``) or with ``kernels``' plain
  ops; None (default) = ``uses_s2d(kernels)``. Same parameters and values either way."""
  num_classes: int = 10
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN   # how the convs and pools are computed
  s2d: bool | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    def fc(features, name, fan_in):
      return layers.dense(features, dtype=self.dtype, kernel_init=layers.torch_default_kernel,
                          bias_init=layers.torch_default_bias(fan_in), name=name)

    s2d = uses_s2d(self.kernels) if self.s2d is None else self.s2d
    conv_pool = functools.partial(ConvReluPool, dtype=self.dtype, kernels=self.kernels, s2d=s2d)
    x = x.astype(self.dtype)
    x = conv_pool(6, 2, name="conv1")(x)
    x = conv_pool(16, 0, name="conv2")(x)
    x = layers.flatten_nchw(x)
    x = nn.relu(fc(120, "fc1", x.shape[-1])(x))
    x = nn.relu(fc(84, "fc2", 120)(x))
    if self.num_classes == 0:
      return x
    return fc(self.num_classes, "fc3", 84)(x)


def uses_s2d(kernels: Kernels) -> bool:
  """Space-to-depth for the CPU kernel sets ('cpu', 'cpu+onednn', ...): faster on XLA:CPU."""
  return kernels.name.split("+")[0] == "cpu"


class ConvReluPool(nn.Module):
  """5x5 conv (stride 1, torch's default init) + ReLU + 2x2 max-pool, as one computation with
  a plain conv's parameters (``kernel`` (5, 5, in, features), ``bias``): ``s2d_conv_relu_pool2``
  when ``s2d``, else ``conv_relu_pool2`` with ``kernels``' conv and pool."""
  features: int
  padding: int
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN
  s2d: bool = False

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1] * 25
    kernel = self.param("kernel", layers.torch_default_kernel,
                        (5, 5, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", layers.torch_default_bias(fan_in), (self.features,), jnp.float32)
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    if self.s2d:
      return s2d_conv_relu_pool2(x, kernel, bias, self.padding)
    return conv_relu_pool2(x, kernel, bias, self.padding, self.kernels)


def conv_relu_pool2(x, kernel, bias, padding: int = 0, kernels: Kernels = PLAIN):
  """max_pool(relu(conv(x) + bias), 2, 2) with ``kernels``' ops: the plain formulation."""
  y = kernels.conv(x, kernel, strides=(1, 1), padding=((padding, padding),) * 2,
                   dilation=(1, 1), groups=1)
  return kernels.max_pool(jax.nn.relu(y + bias), (2, 2), (2, 2), ((0, 0), (0, 0)))


def s2d_conv_relu_pool2(x, kernel, bias, padding: int = 0):
  """``conv_relu_pool2`` (2-D, odd square kernel, stride 1) on the 2x2 space-to-depth
  view of the padded input, (N, H/2, W/2, 4C): one VALID convolution with a (k//2 + 1)^2 kernel
  yields, as 4 groups of O channels, the conv values at the four positions of each pooling
  window, and the pool is a max over the groups (max commutes with the bias add and the ReLU,
  both monotone). LeNet's 6- and 16-channel convs take XLA:CPU's slow generic path; here they
  have 24 -> 64 channels at 1.44x the multiply-adds: LeNet-5 train step 2.6x faster on a Zen4
  core."""
  n, h, w, c = x.shape
  k, o = kernel.shape[0], kernel.shape[-1]
  hp, wp = (h + 2 * padding - k + 1) // 2, (w + 2 * padding - k + 1) // 2
  ku = k // 2 + 1
  hs, ws = 2 * (hp + ku - 1), 2 * (wp + ku - 1)
  x = jnp.pad(x, [(0, 0), (padding, hs - h - padding), (padding, ws - w - padding), (0, 0)])
  x = x.reshape(n, hs // 2, 2, ws // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, hs // 2, ws // 2, 4 * c)
  flat = jnp.concatenate([kernel.reshape(k * k, c, o), jnp.zeros((1, c, o), kernel.dtype)])
  big = flat[_s2d_taps(k)]                            # (u, v, a, b, p, q, c, o)
  big = big.transpose(0, 1, 2, 3, 6, 4, 5, 7).reshape(ku, ku, 4 * c, 4 * o)
  y = jax.lax.conv_general_dilated(x, big, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = jnp.max(y.reshape(n, hp, wp, 4, o), axis=3)
  return jax.nn.relu(y + bias)


@functools.lru_cache(maxsize=None)
def _s2d_taps(k: int) -> np.ndarray:
  """taps[u, v, a, b, p, q] = index i*k + j of the original kernel tap that input sub-position
  (a, b) of space-to-depth cell offset (u, v) meets for output sub-position (p, q), or k*k
  (a zero) where there is none: i = 2u + a - p, j = 2v + b - q."""
  ku = k // 2 + 1
  taps = np.full((ku, ku, 2, 2, 2, 2), k * k, np.int32)
  for u, v, a, b, p, q in np.ndindex(*taps.shape):
    i, j = 2 * u + a - p, 2 * v + b - q
    if 0 <= i < k and 0 <= j < k:
      taps[u, v, a, b, p, q] = i * k + j
  return taps


# --- the 1998 network -------------------------------------------------------------------------
SQUASH_A = 1.7159
SQUASH_S = 2.0 / 3.0


def squash(a):
  """The paper's sigmoid, f(a) = 1.7159 tanh(2a/3) (Appendix A)."""
  return SQUASH_A * jnp.tanh(SQUASH_S * a)


# How the weights are drawn: U(-2.4/F^p, 2.4/F^p) with F the fan-in and p from this table.
# 'paper': p = 1, as Appendix A states it; 'sqrt_fan_in': p = 1/2, which keeps the weighted sums'
# spread independent of the fan-in (LeCun et al., "Efficient BackProp", 1998, §4.6 asks for
# std 1/sqrt(F)). With 'paper' the deeper layers start almost linear and their SDLM curvature
# h_kk is far below mu, so SDLM at the paper's eta diverges (see lenet5_1998_mnist.py).
INIT_FAN_IN_POWER = {"paper": 1.0, "sqrt_fan_in": 0.5}


def paper_uniform(fan_in, init_name: str = "paper"):
  """U(-2.4/F^p, 2.4/F^p), p = INIT_FAN_IN_POWER[init_name] (1 for 'paper', Appendix A);
  ``fan_in`` may be an array broadcast against the shape."""
  if init_name not in INIT_FAN_IN_POWER:
    raise ValueError(f"weight_init={init_name!r}; valid: "
                     f"{', '.join(map(repr, INIT_FAN_IN_POWER))}")
  power = INIT_FAN_IN_POWER[init_name]

  def init(key, shape, dtype=jnp.float32):
    bound = jnp.broadcast_to(2.4 / jnp.asarray(fan_in, dtype) ** power, shape)
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * bound
  return init


# Table I: the S2 maps each C3 map takes. Maps 0-5 see 3 neighbouring maps, 6-11 see 4
# neighbouring maps, 12-14 see 4 non-neighbouring ones, and map 15 sees all six.
C3_TABLE = tuple(
    [tuple(sorted((j + d) % 6 for d in range(3))) for j in range(6)]
    + [tuple(sorted((j + d) % 6 for d in range(4))) for j in range(6)]
    + [(0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5)])


def c3_connections() -> np.ndarray:
  """Table I as a (6 S2 maps, 16 C3 maps) boolean matrix."""
  table = np.zeros((6, 16), bool)
  for out, ins in enumerate(C3_TABLE):
    table[list(ins), out] = True
  return table


class Subsampling(nn.Module):
  """S2 / S4: sum of each non-overlapping 2x2 window, times a per-map coefficient, plus a bias."""
  dtype: Any = jnp.float32
  weight_init: str = "paper"

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      raise ValueError(f"subsampling needs even spatial sizes; got {h}x{w}")
    coeff = self.param("coeff", paper_uniform(4, self.weight_init), (c,), jnp.float32)
    bias = self.param("bias", paper_uniform(4, self.weight_init), (c,), jnp.float32)
    s = x.reshape(b, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4))
    return s * coeff.astype(self.dtype) + bias.astype(self.dtype)


class PartialConv(nn.Module):
  """A VALID convolution in which output map o sees only the input maps ``table[o]``."""
  table: tuple = C3_TABLE
  kernel_size: int = 5
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN
  weight_init: str = "paper"

  @nn.compact
  def __call__(self, x):
    num_in = 1 + max(max(ins) for ins in self.table)
    if x.shape[-1] != num_in:
      raise ValueError(f"PartialConv's table needs {num_in} input maps; got {x.shape[-1]}")
    k = self.kernel_size
    in_idx = np.array([i for ins in self.table for i in ins])
    out_idx = np.array([o for o, ins in enumerate(self.table) for _ in ins])
    fan_in = np.array([k * k * len(self.table[o]) for o in out_idx], np.float32)
    kernel = self.param("kernel", paper_uniform(fan_in, self.weight_init),
                        (k, k, len(in_idx)), jnp.float32)
    bias = self.param("bias", paper_uniform(np.array([k * k * len(ins) for ins in self.table],
                                                     np.float32), self.weight_init),
                      (len(self.table),), jnp.float32)
    full = jnp.zeros((k, k, num_in, len(self.table)), jnp.float32)
    full = full.at[:, :, in_idx, out_idx].set(kernel)
    y = self.kernels.conv(x, full.astype(self.dtype), strides=(1, 1),
                          padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1)
    return y + bias.astype(self.dtype)


# Our own 7x12 bitmaps of the digits ('#' = +1, '.' = -1), standing in for the paper's.
_DIGITS = (
    ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#",
     "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...",
     "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."),
    ("..###..", ".#...#.", "#.....#", "......#", ".....#.", "....#..",
     "...#...", "..#....", ".#.....", "#......", "#......", "#######"),
    (".#####.", "#.....#", "......#", "......#", ".....#.", "..###..",
     ".....#.", "......#", "......#", "......#", "#.....#", ".#####."),
    (".....#.", "....##.", "...#.#.", "..#..#.", ".#...#.", "#....#.",
     "#######", ".....#.", ".....#.", ".....#.", ".....#.", ".....#."),
    ("#######", "#......", "#......", "#......", "######.", "......#",
     "......#", "......#", "......#", "......#", "#.....#", ".#####."),
    ("..####.", ".#.....", "#......", "#......", "#.###..", "##...#.",
     "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("#######", "......#", "......#", ".....#.", ".....#.", "....#..",
     "....#..", "...#...", "...#...", "..#....", "..#....", "..#...."),
    ("..###..", ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..",
     ".#...#.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", ".#...##",
     "..###.#", "......#", "......#", ".....#.", "....#..", ".###..."),
)
CODE_LENGTH = 84  # = the 84 units of F6 = a 7x12 bitmap


def rbf_codes(num_classes: int, codes: str = "auto") -> np.ndarray:
  """The fixed (num_classes, 84) +-1 codes of the RBF output layer.

  ``'digits'``: our 7x12 digit bitmaps (at most 10 classes); ``'hash'``: bits of
  SHA-256("lenet5_1998/{class}"); ``'auto'``: digits when num_classes <= 10, else hash.
  """
  if codes not in ("auto", "digits", "hash"):
    raise ValueError(f"codes={codes!r}; valid: 'auto', 'digits', 'hash'")
  if codes == "digits" and num_classes > len(_DIGITS):
    raise ValueError(f"codes='digits' covers at most 10 classes; got num_classes={num_classes}")
  if codes == "digits" or (codes == "auto" and num_classes <= len(_DIGITS)):
    bits = np.array([[ch == "#" for row in d for ch in row] for d in _DIGITS[:num_classes]])
  else:
    rows = []
    for i in range(num_classes):
      digest = hashlib.sha256(f"lenet5_1998/{i}".encode()).digest()
      rows.append(np.unpackbits(np.frombuffer(digest, np.uint8))[:CODE_LENGTH].astype(bool))
    bits = np.stack(rows)
  return np.where(bits, 1.0, -1.0).astype(np.float32).reshape(num_classes, CODE_LENGTH)


def rbf_penalty(features, codes):
  """The Euclidean RBF layer: y_i = ||x - w_i||^2 for each class code w_i (float32)."""
  x = features.astype(jnp.float32)
  return jnp.sum(jnp.square(x[..., None, :] - codes), axis=-1)


def map_loss(outputs, labels, j: float = 1.0):
  """The paper's MAP criterion (eq. 9) on this model's outputs o = -y (RBF penalties y):

      E = mean_p [ y_{D_p} + log(exp(-j) + sum_i exp(-y_i)) ]
        = mean_p [ -o_{D_p} + logsumexp(-j, o_1, ..., o_n) ]

  i.e. cross-entropy with an extra "rubbish" class of constant logit -j, which keeps already
  large penalties from being pushed higher. The paper calls j a positive constant without
  fixing it there; 1.0 is our default.
  """
  outputs = outputs.astype(jnp.float32)
  rubbish = jnp.full(outputs.shape[:-1] + (1,), -j, jnp.float32)
  lse = jax.nn.logsumexp(jnp.concatenate([rubbish, outputs], axis=-1), axis=-1)
  correct = jnp.take_along_axis(outputs, labels[:, None], axis=-1)[:, 0]
  return jnp.mean(lse - correct)


class LeNet5_1998(nn.Module):  # noqa: N801  (the year is part of the name)
  """The 1998 paper's LeNet-5 on 32x32x1 input; see the module docstring."""
  num_classes: int = 10
  head: str = "rbf"          # 'rbf' (paper, fixed codes) or 'dense' (trainable softmax head)
  codes: str = "auto"        # see rbf_codes
  dtype: Any = jnp.float32
  kernels: Kernels = PLAIN   # how the convolutions are computed
  weight_init: str = "paper"   # see INIT_FAN_IN_POWER

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.head not in ("rbf", "dense"):
      raise ValueError(f"head={self.head!r}; valid: 'rbf', 'dense'")
    if x.shape[1:3] != (32, 32):
      raise ValueError(f"lenet5_1998 expects 32x32 input (28x28 MNIST padded by 2, §III-A); "
                       f"got {x.shape[1]}x{x.shape[2]}")

    def conv(features, name, fan_in):
      return layers.conv(features, 5, use_bias=True, dtype=self.dtype,
                         kernel_init=paper_uniform(fan_in, self.weight_init),
                         bias_init=paper_uniform(fan_in, self.weight_init),
                         kernels=self.kernels, name=name)

    def fc(features, name, fan_in):
      return layers.dense(features, dtype=self.dtype,
                          kernel_init=paper_uniform(fan_in, self.weight_init),
                          bias_init=paper_uniform(fan_in, self.weight_init), name=name)

    subsampling = functools.partial(Subsampling, dtype=self.dtype, weight_init=self.weight_init)
    x = x.astype(self.dtype)
    x = squash(conv(6, "c1", 25 * x.shape[-1])(x))            # 28x28x6
    x = squash(subsampling(name="s2")(x))                     # 14x14x6
    x = squash(PartialConv(dtype=self.dtype, kernels=self.kernels, weight_init=self.weight_init,
                           name="c3")(x))                     # 10x10x16
    x = squash(subsampling(name="s4")(x))                     # 5x5x16
    x = squash(conv(120, "c5", 25 * 16)(x))                   # 1x1x120
    x = x.reshape(x.shape[0], -1)
    x = squash(fc(84, "f6", 120)(x))                          # 84
    if self.num_classes == 0:
      return x
    if self.head == "dense":
      return fc(self.num_classes, "fc", 84)(x)
    return -rbf_penalty(x, jnp.asarray(rbf_codes(self.num_classes, self.codes)))


# --- registry ---------------------------------------------------------------------------------
register(
    ModelInfo(name="lenet5", family="lenet", num_params=61_706, input_shape=(28, 28, 1),
              num_classes=10, paper=_PAPER,
              paper_result=("none for this modern variant; the paper's LeNet-5 (lenet5_1998) "
                            "reports 0.95% MNIST test error (§III-C, Fig. 9)"),
              notes="ReLU, 2x2 max-pool, conv1 padding 2 on 28x28 input, softmax dense head"),
    LeNet5)

register(
    ModelInfo(name="lenet5_1998", family="lenet", num_params=60_000, input_shape=(32, 32, 1),
              num_classes=10, paper=_PAPER,
              paper_result=("0.95% MNIST test error without distortions, 0.8% with distorted "
                            "training data (§III-C, Fig. 9)"),
              notes=("paper-faithful: trainable subsampling, C3 table, tanh squashing, "
                     "fixed-code RBF output; head='dense' adds 850 params")),
    LeNet5_1998)
