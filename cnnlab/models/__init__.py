"""The model zoo: a registry of landmark CNNs as Flax linen modules.

    from cnnlab import models
    model = models.create("resnet50", num_classes=1000, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
    logits = model.apply(variables, images, train=False)

Every module is channels-last (N, *spatial, C: NHWC images, NLC signals, NTHWC video / NDHWC
volumes), takes ``__call__(x, train: bool)``, computes in ``dtype`` with float32 parameters,
and keeps BatchNorm statistics in the ``batch_stats`` collection. Dropout draws from the
``'dropout'`` rng stream. ``num_classes=0`` returns pooled features (a backbone).

How convolutions, pools and BatchNorm are computed is fixed when the model is built: every
family takes ``kernels`` (``cnnlab.models.kernels``; PLAIN by default); ``create`` passes
``kernels.select()`` (CPU formulations in a single-process CPU run) unless given one.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from cnnlab.config import registry as config_registry


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """Metadata shown next to a registered model, in the manner of torchvision's weight cards."""
  name: str
  family: str
  num_params: int            # trainable parameters with the default num_classes
  input_shape: tuple         # (H, W, C); (L, C) for 1-D; (T|D, H, W, C) for video / volumes
  num_classes: int           # default number of classes
  paper: str                 # citation
  paper_result: str = ""     # the paper's reported number, with where it is in the paper
  torchvision: str | None = None   # name of the torchvision builder with the same layout
  notes: str = ""
  task: str = "classify"     # classify: logits (N, K); segment: logits (N, *spatial, K)


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}


def register(info: ModelInfo, factory: Callable[..., nn.Module]) -> None:
  if info.name in _REGISTRY:
    raise ValueError(f"model {info.name!r} is registered twice")
  _REGISTRY[info.name] = (factory, info)
  config_registry.register("model", info.name)


def names() -> list[str]:
  """Every registered model name, sorted."""
  return sorted(_REGISTRY)


def _lookup(name: str):
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}")
  return _REGISTRY[name]


def info(name: str) -> ModelInfo:
  return _lookup(name)[1]


def create(name: str, **kwargs: Any) -> nn.Module:
  """Builds the named model; keyword arguments override the family's defaults.

  ``kernels`` defaults to ``cnnlab.models.kernels.select()`` (call after an entry point's
  process set-up: it asks JAX for its backend).
  """
  factory, meta = _lookup(name)
  kwargs.setdefault("num_classes", meta.num_classes)
  if "kernels" not in kwargs:
    kwargs["kernels"] = kernels.select()
  return factory(**kwargs)


# Importing the family modules fills the registry (each calls `register` at import time).
from cnnlab.models import kernels  # noqa: E402
from cnnlab.models.lenet import LeNet5, LeNet5_1998  # noqa: E402,F401
from cnnlab.models.alexnet import AlexNet, AlexNet2012  # noqa: E402,F401
from cnnlab.models.vgg import VGG  # noqa: E402,F401
from cnnlab.models.googlenet import GoogLeNet  # noqa: E402,F401
from cnnlab.models.resnet import ResNet, CifarResNet  # noqa: E402,F401
from cnnlab.models.timeseries import FCN1D, ResNet1D  # noqa: E402,F401
from cnnlab.models.video import VideoResNet  # noqa: E402,F401
from cnnlab.models.unet import EncoderUNet, UNet  # noqa: E402,F401
from cnnlab.models.segmentation import SegmentationResNet  # noqa: E402,F401
