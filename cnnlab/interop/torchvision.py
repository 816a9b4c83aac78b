"""torchvision weights in and out of cnnlab's linen models.

    from cnnlab.interop import torchvision as tv
    model, variables = tv.build(tv.read_state_dict("googlenet.pth"), torchvision_pretrained=True)
    logits = model.apply(variables, images_nhwc, train=False)
    ...                                         # fine-tune in cnnlab, then back to torch:
    tv.save(variables, "resnet50", "resnet50.safetensors")
    # torch: torchvision.models.resnet50().load_state_dict(safetensors.torch.load_file(...))

Supported: every cnnlab model built in torchvision's layout (``models.info(name).torchvision``):
alexnet, vgg11/13/16/19 and their ``_bn`` variants, googlenet, resnet18/34/50/101/152, the
video ResNets r3d_18, mc3_18, r2plus1d_18 (``torchvision.models.video``) where registered, and
the segmentation networks fcn_resnet50, deeplabv3_resnet50 (``torchvision.models.segmentation``;
keys ``backbone.*``, ``classifier.*``, ``aux_classifier.*``).

Names. cnnlab's parameter paths mirror torchvision's state_dict keys: the dots between modules
become path separators, a Sequential index joins its parent with an underscore
(``features.0`` -> ``features_0``, ``layer1.0`` -> ``layer1_0``, ``conv1.0.3`` ->
``conv1_0_3``), and a ResNet block's ``downsample.0`` / ``downsample.1`` are
``downsample_conv`` / ``downsample_bn``. The rule runs one way, from each cnnlab variable to
its torchvision key, so ``convert`` and ``export`` share it and are inverses by construction.

Values.
* Conv ``weight`` (O, I, *k) <-> ``kernel`` (*k, I, O) (OIHW <-> HWIO; OITHW <-> THWIO).
* Linear ``weight`` (O, I) <-> ``kernel`` (I, O), a plain transpose. This holds for the first
  dense layer of AlexNet/VGG (and GoogLeNet's aux heads) too: those models flatten their NHWC
  maps in torch's NCHW order (``layers.flatten_nchw``), so no permutation is needed.
* BatchNorm ``weight``/``bias`` <-> ``params`` ``scale``/``bias``; ``running_mean`` /
  ``running_var`` <-> ``batch_stats`` ``mean`` / ``var``. ``num_batches_tracked`` is dropped
  on the way in and written (int64 scalar, default 0) on the way out: torch only reads it when
  a BatchNorm's ``momentum`` is None, which torchvision's never is.

The cnnlab model is sized like the weights: class count read off the classifier, GoogLeNet's
aux heads and the segmentation networks' ``aux_classifier`` present exactly when the weights
have them. Variable shapes come from
``jax.eval_shape`` (nothing is computed); any missing, unexpected or mis-shaped entry raises a
ValueError naming them (in torchvision's terms for ``convert``, cnnlab's for ``export``).

GoogLeNet's ``transform_input``: torchvision's builder turns it on whenever it is given
pretrained weights (they were ported from a model fed [-1, 1] inputs), so
``build(..., torchvision_pretrained=True)`` and ``model_kwargs`` do the same; a state dict
cannot tell which it is, so the caller says. ``torchvision_kwargs`` gives the torchvision
builder arguments that rebuild an exported model (class count, aux heads, transform_input).
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnnlab import models
from cnnlab.interop.state_dict_files import read_state_dict, to_numpy, write_state_dict

__all__ = ["SUPPORTED", "build", "convert", "export", "infer_model_name", "load", "model_kwargs",
           "read_state_dict", "save", "torch_key", "torchvision_kwargs", "write_state_dict"]

_IMAGE_MODELS = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn",
                 "vgg16_bn", "vgg19_bn", "googlenet", "resnet18", "resnet34", "resnet50",
                 "resnet101", "resnet152")
_VIDEO_MODELS = ("r3d_18", "mc3_18", "r2plus1d_18")   # torchvision.models.video
SEGMENTATION = ("fcn_resnet50", "deeplabv3_resnet50")   # torchvision.models.segmentation
# cnnlab's models in torchvision's layout; each name is also torchvision's builder name.
SUPPORTED = _IMAGE_MODELS + tuple(n for n in _VIDEO_MODELS + SEGMENTATION
                                  if n in models.names())

_LIST_LIMIT = 5   # entries named per kind of mismatch in an error message

# Module names beyond the generic "name_index" <- "name.index" rule.
_UNRENAME = {"downsample_conv": "downsample_0", "downsample_bn": "downsample_1"}
_INDEX_SUFFIXES = re.compile(r"_(\d+)(?=(?:_\d+)*$)")   # every trailing _<int>
# flax leaf -> torchvision leaf.
_UNLEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}
_COLLECTIONS = ("params", "batch_stats")

_RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50", (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}
_VGG_DEPTHS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}   # conv layers -> name
# The classifier whose rows are the classes -> its rank (the segmentation heads' is a conv).
_HEADS = {"fc.weight": 2, "classifier.6.weight": 2, "classifier.4.weight": 4}
_AUX_ARGUMENT = {"googlenet": "aux_logits", "fcn_resnet50": "aux_loss",
                 "deeplabv3_resnet50": "aux_loss"}   # builder argument that adds aux heads
_AUX_PREFIXES = ("aux1", "aux2", "aux_classifier")


# --- names and layouts ------------------------------------------------------------------------
def torch_key(path: tuple[str, ...]) -> str:
  """The torchvision key of a flax variable path (collection, *modules, leaf).

  ``('params', 'layer1_0', 'downsample_conv', 'kernel')`` -> ``layer1.0.downsample.0.weight``.
  """
  _, *modules, leaf = path
  parts = [_INDEX_SUFFIXES.sub(r".\1", _UNRENAME.get(m, m)) for m in modules]
  return ".".join(parts + [_UNLEAF[leaf]])


def _torch_axes(ndim: int) -> tuple[int, ...]:
  """Axes that take a flax kernel (*k, I, O) to torch's (O, I, *k); (I, O) -> (O, I)."""
  return (ndim - 1, ndim - 2, *range(ndim - 2))


def _to_torch_value(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.transpose(value, _torch_axes(value.ndim))   # a view; writers make it contiguous
  return value


def _to_flax_value(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.transpose(value, np.argsort(_torch_axes(value.ndim)))
  return value


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """The torchvision shape of a flax variable of ``shape``."""
  if path[-1] == "kernel":
    return tuple(shape[a] for a in _torch_axes(len(shape)))
  return tuple(shape)


# --- which model ----------------------------------------------------------------------------
def _infer_video(state_dict: Mapping[str, Any]) -> str:
  if "stem.3.weight" in state_dict:            # (2+1)D stem: conv, BN, ReLU, conv, BN, ReLU
    return "r2plus1d_18"
  first_of_layer2 = state_dict.get("layer2.0.conv1.0.weight")
  if first_of_layer2 is not None and np.shape(first_of_layer2)[2] == 1:   # (O, I, 1, 3, 3)
    return "mc3_18"
  return "r3d_18"


def _infer_resnet(keys: set[str]) -> str:
  blocks = tuple(len({k.split(".")[1] for k in keys if k.startswith(f"layer{s}.")})
                 for s in range(1, 5))
  bottleneck = "layer1.0.conv3.weight" in keys
  if (bottleneck, blocks) in _RESNET_DEPTHS:
    return _RESNET_DEPTHS[(bottleneck, blocks)]
  raise ValueError(f"state dict looks like a ResNet with {blocks} blocks per stage "
                   f"({'bottleneck' if bottleneck else 'basic'}), which no supported depth "
                   "has; pass model_name= to see the mismatching keys")


def _infer_features(state_dict: Mapping[str, Any]) -> str:
  keys = set(state_dict)
  if tuple(np.shape(state_dict["features.0.weight"]))[-1] == 11:
    return "alexnet"
  convs = sum(1 for k in keys
              if k.startswith("features.") and k.endswith(".weight")
              and len(np.shape(state_dict[k])) == 4)
  if convs in _VGG_DEPTHS:
    bn = any(k.startswith("features.") and k.endswith(".running_mean") for k in keys)
    return _VGG_DEPTHS[convs] + ("_bn" if bn else "")
  raise ValueError(f"state dict has {convs} conv layers under 'features', which matches "
                   "neither AlexNet nor VGG-11/13/16/19; pass model_name= to see the keys")


def infer_model_name(state_dict: Mapping[str, Any]) -> str:
  """The torchvision architecture a state dict belongs to, from its keys and shapes."""
  keys = set(state_dict)
  if "backbone.conv1.weight" in keys:
    return "deeplabv3_resnet50" if "classifier.0.project.0.weight" in keys else "fcn_resnet50"
  if "conv1.conv.weight" in keys or any(k.startswith("inception3a.") for k in keys):
    return "googlenet"
  if "stem.0.weight" in keys:
    return _infer_video(state_dict)
  if "layer1.0.conv1.weight" in keys:
    return _infer_resnet(keys)
  if "features.0.weight" in keys:
    return _infer_features(state_dict)
  raise ValueError("cannot tell which torchvision model this state dict is for (keys start "
                   f"{sorted(keys)[:3]}); pass model_name=, one of {', '.join(SUPPORTED)}")


def _check_name(model_name: str) -> None:
  if model_name not in SUPPORTED:
    raise ValueError(f"model_name={model_name!r} has no torchvision layout; "
                     f"supported: {', '.join(SUPPORTED)}")


def _size_kwargs(model_name: str, num_classes: int, aux_logits: bool) -> dict:
  kwargs = {"num_classes": num_classes}
  if model_name in _AUX_ARGUMENT:
    kwargs[_AUX_ARGUMENT[model_name]] = aux_logits
  return kwargs


@functools.lru_cache(maxsize=64)
def _variable_shapes(model_name: str, num_classes: int,
                     aux_logits: bool) -> dict[tuple, tuple]:
  """Variable path -> shape of cnnlab's ``model_name`` at that size (no compute)."""
  model = models.create(model_name, **_size_kwargs(model_name, num_classes, aux_logits))
  shape = models.info(model_name).input_shape
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32), train=False))
  flat = traverse_util.flatten_dict(dict(shapes))
  return {p: tuple(s.shape) for p, s in flat.items()}


def _torch_names(model_name: str, shapes: Mapping[tuple, tuple]) -> dict[str, tuple]:
  """torchvision key -> cnnlab variable path, for every variable of the model."""
  names = {torch_key(p): p for p in shapes}
  if len(names) != len(shapes):   # a model whose names collide under the rule: our bug
    raise RuntimeError(f"cnnlab's {model_name} has variables that map to the same "
                       "torchvision key; its parameter names break the naming rule")
  return names


def _listing(items: list[str]) -> str:
  shown = ", ".join(items[:_LIST_LIMIT])
  more = len(items) - _LIST_LIMIT
  return shown + (f", ... and {more} more" if more > 0 else "")


def _mismatch(what: str, missing, unexpected, misshaped) -> ValueError:
  problems = [f"{len(v)} {kind}: {_listing(v)}" for kind, v in
              (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if v]
  return ValueError(f"{what}: " + "; ".join(problems))


# --- torchvision -> cnnlab --------------------------------------------------------------------
def _prepare(state_dict: Mapping[str, Any],
             model_name: str | None) -> tuple[dict[str, np.ndarray], str]:
  """(numpy arrays without DataParallel's ``module.`` prefix, checked model name)."""
  if state_dict and all(k.startswith("module.") for k in state_dict):
    state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
  arrays = {k: to_numpy(v) for k, v in state_dict.items()}
  if model_name is None:
    model_name = infer_model_name(arrays)
  _check_name(model_name)
  return arrays, model_name


def convert(state_dict: Mapping[str, Any], model_name: str | None = None) -> dict:
  """torchvision state dict -> ``{'params': ..., 'batch_stats': ...}`` for cnnlab's model.

  Args:
    state_dict: key -> torch tensor or numpy array, as ``model.state_dict()`` returns (keys
      prefixed ``module.`` by DataParallel are accepted).
    model_name: one of ``SUPPORTED``; inferred from the keys when None.

  Returns:
    The variables ``models.create(model_name, num_classes=...).apply`` takes, float32 jax
    arrays, with the same collections as the model's ``init`` (no ``batch_stats`` for models
    without BatchNorm).

  Raises:
    ValueError: unknown model name, or a state dict whose keys or shapes do not match.
  """
  arrays, model_name = _prepare(state_dict, model_name)
  shapes = _variable_shapes(model_name, *_torch_size(model_name, arrays))
  wanted = _torch_names(model_name, shapes)
  unexpected, misshaped, converted = [], [], {}
  for key, value in arrays.items():
    if key.endswith(".num_batches_tracked"):
      if key[:-len("num_batches_tracked")] + "running_mean" not in wanted:
        unexpected.append(key)
      continue
    if key not in wanted:
      unexpected.append(key)
      continue
    path = wanted[key]
    want = _torch_shape(path, shapes[path])
    if tuple(value.shape) != want:
      misshaped.append(f"{key} {tuple(value.shape)} (expected {want})")
      continue
    converted[path] = jnp.asarray(_to_flax_value(path, np.asarray(value, np.float32)))
  missing = [k for k in wanted if k not in arrays]
  if missing or unexpected or misshaped:
    raise _mismatch(f"state dict does not match cnnlab's {model_name}", missing, unexpected,
                    misshaped)
  return traverse_util.unflatten_dict(converted)


def _torch_size(model_name: str, arrays: Mapping[str, np.ndarray]) -> tuple[int, bool]:
  """(num_classes, aux_logits) of the model a state dict is for."""
  num_classes = models.info(model_name).num_classes
  for head, rank in _HEADS.items():
    if head in arrays and np.ndim(arrays[head]) == rank:
      num_classes = int(np.shape(arrays[head])[0])
      break
  return num_classes, any(k.split(".")[0] in _AUX_PREFIXES for k in arrays)


def model_kwargs(model_name: str, *, torchvision_pretrained: bool = True) -> dict:
  """``models.create`` arguments that torchvision's published weights need beyond their shapes.

  GoogLeNet: ``transform_input=True``, as torchvision's own builder sets whenever it is given
  weights (``torchvision_pretrained=False``, for weights trained from scratch in torch with
  the default builder, gives none). Nothing for other models.
  """
  _check_name(model_name)
  if model_name == "googlenet" and torchvision_pretrained:
    return {"transform_input": True}
  return {}


def build(state_dict: Mapping[str, Any], model_name: str | None = None, *,
          torchvision_pretrained: bool = False, **create_kwargs) -> tuple[nn.Module, dict]:
  """``(model, variables)``: the converted weights and the cnnlab model sized and set up for
  them (class count, GoogLeNet's aux heads, and ``transform_input`` for pretrained GoogLeNet).

  ``create_kwargs`` go to ``models.create`` (e.g. ``dtype``) and win over what is derived.
  """
  arrays, model_name = _prepare(state_dict, model_name)
  variables = convert(arrays, model_name)
  kwargs = _size_kwargs(model_name, *_flax_size(model_name, variables["params"]))
  kwargs.update(model_kwargs(model_name, torchvision_pretrained=torchvision_pretrained))
  kwargs.update(create_kwargs)
  return models.create(model_name, **kwargs), variables


def load(path: str | os.PathLike, model_name: str | None = None) -> dict:
  """Reads a torchvision weight file (.safetensors, .pth, .pt) and converts it."""
  return convert(read_state_dict(path), model_name)


# --- cnnlab -> torchvision --------------------------------------------------------------------
def _flax_size(model_name: str, params: Mapping[str, Any]) -> tuple[int, bool]:
  """(num_classes, aux_logits) of cnnlab variables, read off the classifier's kernel."""
  head = params.get("classifier_6", params.get("fc"))
  if model_name in SEGMENTATION:
    head = params.get("classifier", {}).get("4")
  if not isinstance(head, Mapping) or "kernel" not in head:
    raise ValueError(f"variables have no classifier ('fc', 'classifier_6' or 'classifier/4') "
                     f"for {model_name}; features-only models (num_classes=0) cannot be "
                     "exported")
  return int(np.shape(head["kernel"])[-1]), any(k in params for k in _AUX_PREFIXES)


def export(variables: Mapping[str, Any], model_name: str, *,
           num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """cnnlab variables -> torchvision ``state_dict`` (numpy), the inverse of ``convert``.

  Arrays keep their dtype (float32 from training) and are numpy views of the variables
  where the layout allows (a transposed view for kernels); BatchNorm layers also get
  ``num_batches_tracked`` (int64 scalar). The result loads into the torchvision model built
  with ``torchvision_kwargs(variables, model_name)`` with ``load_state_dict(strict=True)``.

  Raises:
    ValueError: unknown model name, or variables whose paths or shapes are not the model's.
  """
  _check_name(model_name)
  extra = sorted(set(variables) - set(_COLLECTIONS))
  if extra:
    raise ValueError(f"variables hold collection(s) {extra} besides {list(_COLLECTIONS)}; "
                     "pass only the model's params and batch_stats")
  params = variables.get("params", {})
  shapes = _variable_shapes(model_name, *_flax_size(model_name, params))
  flat = traverse_util.flatten_dict({c: variables[c] for c in _COLLECTIONS if c in variables})
  missing = ["/".join(p) for p in shapes if p not in flat]
  unexpected = ["/".join(p) for p in flat if p not in shapes]
  misshaped = [f"{'/'.join(p)} {tuple(np.shape(v))} (expected {shapes[p]})"
               for p, v in flat.items() if p in shapes and tuple(np.shape(v)) != shapes[p]]
  if missing or unexpected or misshaped:
    raise _mismatch(f"variables do not match cnnlab's {model_name}", missing, unexpected,
                    misshaped)
  out = {}
  for key, path in _torch_names(model_name, shapes).items():
    out[key] = _to_torch_value(path, np.asarray(flat[path]))
    if path[-1] == "mean":
      out[key[:-len("running_mean")] + "num_batches_tracked"] = np.asarray(
          num_batches_tracked, np.int64)
  return out


def save(variables: Mapping[str, Any], model_name: str, path: str | os.PathLike,
         **export_kwargs) -> str:
  """Exports ``variables`` and writes them to ``path`` (.safetensors; .pth / .pt need torch)."""
  return write_state_dict(export(variables, model_name, **export_kwargs), path)


def torchvision_kwargs(variables: Mapping[str, Any], model_name: str, *,
                       transform_input: bool = False) -> dict:
  """Arguments of ``torchvision.models.<model_name>`` that build the model ``export`` fits:
  the class count and, for GoogLeNet, the aux heads, ``transform_input`` (pass the cnnlab
  model's) and ``init_weights=False`` (skips a slow random init that is overwritten); for the
  segmentation networks ``aux_loss`` and ``weights_backbone=None`` (else torchvision would
  download ImageNet weights for a backbone that is overwritten)."""
  _check_name(model_name)
  num_classes, aux = _flax_size(model_name, variables.get("params", {}))
  kwargs = {"num_classes": num_classes}
  if model_name == "googlenet":
    kwargs.update(aux_logits=aux, transform_input=transform_input, init_weights=False)
  if model_name in SEGMENTATION:
    kwargs.update(aux_loss=aux, weights_backbone=None)
  return kwargs
