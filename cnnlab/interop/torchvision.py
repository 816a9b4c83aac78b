"""Import torchvision weights into cnnlab's linen models.

    from cnnlab import models
    from cnnlab.interop import torchvision as tv
    variables = tv.load("resnet50.safetensors")          # or a .pth state_dict
    logits = models.create("resnet50").apply(variables, images_nhwc, train=False)

Supported: every cnnlab model built in torchvision's layout (``models.info(name).torchvision``):
alexnet, vgg11/13/16/19 and their ``_bn`` variants, googlenet, resnet18/34/50/101/152.

Names. cnnlab's parameter paths mirror torchvision's state_dict keys: the dots between modules
become path separators, a Sequential index joins its parent with an underscore
(``features.0`` -> ``features_0``, ``layer1.0`` -> ``layer1_0``, ``branch2.1`` ->
``branch2_1``), and a ResNet block's ``downsample.0`` / ``downsample.1`` are
``downsample_conv`` / ``downsample_bn``.

Values.
* Conv2d ``weight`` (O, I, kh, kw) -> ``kernel`` (kh, kw, I, O) (OIHW -> HWIO).
* Linear ``weight`` (O, I) -> ``kernel`` (I, O), a plain transpose. This holds for the first
  dense layer of AlexNet/VGG (and GoogLeNet's aux heads) too: those models flatten their NHWC
  maps in torch's NCHW order (``layers.flatten_nchw``), so no permutation of the 9216 / 25088
  inputs is needed.
* BatchNorm ``weight``/``bias`` -> ``params`` ``scale``/``bias``; ``running_mean`` /
  ``running_var`` -> ``batch_stats`` ``mean`` / ``var``; ``num_batches_tracked`` is dropped.

The target model is built with the state dict's class count (read off the classifier) and, for
GoogLeNet, with aux heads exactly when the state dict has ``aux1.*`` keys (torchvision's
published GoogLeNet file has them; a model saved after ``aux_logits=False`` does not). Its
variable shapes come from ``jax.eval_shape`` (nothing is computed), and any missing, unexpected
or mis-shaped key raises a ValueError that names them in torchvision's terms.

Files: ``.safetensors`` is read with the safetensors package (numpy, no torch needed);
``.pth`` / ``.pt`` with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and never runs arbitrary pickled code. torch is imported then, and only then.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnnlab import models

# cnnlab's models in torchvision's layout; each name is also torchvision's builder name.
SUPPORTED = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
             "vgg19_bn", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101",
             "resnet152")

_LIST_LIMIT = 5   # keys named per kind of mismatch in an error message

# Module names beyond the generic "name_index" <- "name.index" rule.
_UNRENAME = {"downsample_conv": "downsample_0", "downsample_bn": "downsample_1"}
# flax leaf -> torchvision leaf.
_UNLEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}

_RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50", (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}
_VGG_DEPTHS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}   # conv layers -> name
_HEADS = ("fc.weight", "classifier.6.weight")   # the classifier whose rows are the classes


# --- reading files --------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The state dict stored at ``path`` (.safetensors, .pth or .pt) as numpy arrays."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no weight file at {path!r}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if ext in (".pth", ".pt"):
    return {k: _to_numpy(v) for k, v in _torch_load(path).items()}
  raise ValueError(f"unsupported weight file {path!r}: use .safetensors, .pth or .pt")


def _torch_load(path: str) -> Mapping[str, Any]:
  try:
    import torch  # only here: cnnlab never needs torch otherwise
  except ImportError as e:
    raise ImportError(f"reading {path!r} needs torch (pip install torch), or save the weights "
                      "as .safetensors, which cnnlab reads without torch") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  # A training checkpoint often nests the weights one level down.
  for field in ("state_dict", "model"):
    if isinstance(obj, Mapping) and isinstance(obj.get(field), Mapping):
      obj = obj[field]
  if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ValueError(f"{path!r} does not hold a state dict of tensors (got {type(obj).__name__})")
  return obj


def _to_numpy(value: Any) -> np.ndarray:
  """numpy view of a numpy array or a torch tensor (without importing torch)."""
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":   # numpy has no bfloat16
      value = value.float()
    value = value.numpy()
  return np.asarray(value)


# --- names ----------------------------------------------------------------------------------
def torch_key(path: tuple[str, ...]) -> str:
  """The torchvision key of a flax variable path (collection, *modules, leaf).

  ``('params', 'layer1_0', 'downsample_conv', 'kernel')`` -> ``layer1.0.downsample.0.weight``.
  """
  _, *modules, leaf = path
  parts = [re.sub(r"_(\d+)$", r".\1", _UNRENAME.get(m, m)) for m in modules]
  return ".".join(parts + [_UNLEAF[leaf]])


def _to_flax_value(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))   # OIHW -> HWIO
  if value.ndim == 2:
    return value.T                              # (out, in) -> (in, out)
  return value


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """The torchvision shape of a flax variable of ``shape``."""
  if path[-1] == "kernel" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if path[-1] == "kernel" and len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


# --- which model ----------------------------------------------------------------------------
def infer_model_name(state_dict: Mapping[str, Any]) -> str:
  """The torchvision architecture a state dict belongs to, from its keys and shapes."""
  keys = set(state_dict)
  if "conv1.conv.weight" in keys or any(k.startswith("inception3a.") for k in keys):
    return "googlenet"
  if "layer1.0.conv1.weight" in keys:
    blocks = tuple(len({k.split(".")[1] for k in keys if k.startswith(f"layer{s}.")})
                   for s in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in keys
    if (bottleneck, blocks) in _RESNET_DEPTHS:
      return _RESNET_DEPTHS[(bottleneck, blocks)]
    raise ValueError(f"state dict looks like a ResNet with {blocks} blocks per stage "
                     f"({'bottleneck' if bottleneck else 'basic'}), which no supported depth "
                     "has; pass model_name= to see the mismatching keys")
  if "features.0.weight" in keys:
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
  raise ValueError("cannot tell which torchvision model this state dict is for (keys start "
                   f"{sorted(keys)[:3]}); pass model_name=, one of {', '.join(SUPPORTED)}")


def _target_shapes(name: str, state_dict: Mapping[str, np.ndarray]) -> dict[tuple, tuple]:
  """Variable path -> shape of cnnlab's ``name``, sized like the state dict (no compute)."""
  kwargs = {}
  for head in _HEADS:
    if head in state_dict and np.ndim(state_dict[head]) == 2:
      kwargs["num_classes"] = int(np.shape(state_dict[head])[0])
      break
  if name == "googlenet":
    kwargs["aux_logits"] = any(k.startswith(("aux1.", "aux2.")) for k in state_dict)
  model = models.create(name, **kwargs)
  h, w, c = models.info(name).input_shape
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, c), jnp.float32), train=False))
  flat = traverse_util.flatten_dict(dict(shapes))
  return {p: tuple(s.shape) for p, s in flat.items()}


# --- conversion -----------------------------------------------------------------------------
def _listing(items: list[str]) -> str:
  shown = ", ".join(items[:_LIST_LIMIT])
  more = len(items) - _LIST_LIMIT
  return shown + (f", ... and {more} more" if more > 0 else "")


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
  if state_dict and all(k.startswith("module.") for k in state_dict):
    state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
  arrays = {k: _to_numpy(v) for k, v in state_dict.items()}
  if model_name is None:
    model_name = infer_model_name(arrays)
  elif model_name not in SUPPORTED:
    raise ValueError(f"model_name={model_name!r} has no torchvision layout; "
                     f"supported: {', '.join(SUPPORTED)}")
  shapes = _target_shapes(model_name, arrays)
  # Names go one way only, from each cnnlab variable to the torchvision key that feeds it.
  wanted = {torch_key(p): p for p in shapes}
  if len(wanted) != len(shapes):   # a model whose names collide under the rule: our bug
    raise RuntimeError(f"cnnlab's {model_name} has variables that map to the same "
                       "torchvision key; its parameter names break the naming rule")

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
    converted[path] = jnp.asarray(_to_flax_value(value).astype(np.float32))
  missing = [k for k in wanted if k not in arrays]
  if missing or unexpected or misshaped:
    problems = [f"{len(v)} {what}: {_listing(v)}" for what, v in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                if v]
    raise ValueError(f"state dict does not match cnnlab's {model_name}: " + "; ".join(problems))
  return traverse_util.unflatten_dict(converted)


def load(path: str | os.PathLike, model_name: str | None = None) -> dict:
  """Reads a torchvision weight file (.safetensors, .pth, .pt) and converts it."""
  return convert(read_state_dict(path), model_name)
