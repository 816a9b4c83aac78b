"""Looking inside a model without changing it: the layers a model calls, their output shapes,
and their activations for a batch.

A "layer" is a submodule call: its name is the module path joined by '/' (``conv1``,
``layer1_0/conv2``, ``inception3a/b2_conv``), its output whatever that module's ``__call__``
returned. A module called more than once gets ``#2``, ``#3``... after its later calls. The
outputs are the modules' own: a model that applies ReLU as a function (``nn.relu``) shows the
pre-activation of the layer before it, one that fuses the ReLU into a module (cnnlab's
BatchNorm with ``relu=True``, LeNet's conv blocks) shows the rectified map.

- ``layers(model, variables, input_shape)`` lists every layer with its output shape, in call
  order, from ``jax.eval_shape`` (nothing is computed); ``summary`` formats it as a table.
- ``extract(model, variables, x, names)`` returns ``{name: activation}`` for a batch through
  Flax's ``capture_intermediates`` (jit-able: ``names`` is static).
- ``check_layer`` turns an unknown name into a ValueError that lists the valid ones.

Everything runs in inference mode (``train=False``) and works for any number of spatial
dimensions: inputs are (N, *spatial, C).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Layer:
  name: str            # module path joined by '/', '#k' for the k-th call of a reused module
  kind: str            # the module's class name, e.g. 'Conv'
  shape: tuple         # output shape, batch first
  output: Any = None   # the array, when traced with values (``trace``)

  @property
  def spatial_dims(self) -> int:
    """Spatial dimensions of a (N, *spatial, C) output; 0 for (N, C) vectors."""
    return max(0, len(self.shape) - 2)


def interceptor(records: list, transform: Callable | None = None):
  """An ``nn.intercept_methods`` hook that records every submodule ``__call__`` output (and,
  with ``transform(name, out)``, replaces it)."""
  seen: dict[str, int] = {}

  def hook(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = tuple(context.module.path)
    if context.method_name != "__call__" or not path or not hasattr(out, "shape"):
      return out
    name = "/".join(path)
    seen[name] = seen.get(name, 0) + 1
    if seen[name] > 1:
      name = f"{name}#{seen[name]}"
    if transform is not None:
      out = transform(name, out)
    records.append((name, type(context.module).__name__, out))
    return out
  return hook


def apply_inference(model, variables, x, **kwargs):
  """``model.apply`` in inference mode; the logits (a tuple's first element for models that
  return several heads)."""
  out = model.apply(variables, x, train=False, **kwargs)
  return out[0] if isinstance(out, tuple) else out


def trace(model, variables, x) -> list[Layer]:
  """Every layer's output for the batch ``x``, computed (numpy arrays), in call order."""
  records: list = []
  with nn.intercept_methods(interceptor(records)):
    apply_inference(model, variables, jnp.asarray(x))
  return [Layer(n, k, tuple(o.shape), np.asarray(jax.device_get(o))) for n, k, o in records]


def layers(model, variables, input_shape: Sequence[int]) -> list[Layer]:
  """Every layer with its output shape for one input of ``input_shape`` (without the batch
  axis), in call order. Abstract evaluation: no arithmetic, no compilation."""
  records: list = []

  def run(v, x):
    with nn.intercept_methods(interceptor(records)):
      apply_inference(model, v, x)
    return 0

  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), variables)
  jax.eval_shape(run, shapes, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  return [Layer(n, k, tuple(o.shape)) for n, k, o in records]


def spatial(found: Sequence[Layer]) -> list[Layer]:
  """The layers with a (N, *spatial, C) output: feature maps, what Grad-CAM can target."""
  return [l for l in found if l.spatial_dims >= 1]


def check_layer(name: str, found: Sequence[Layer], what: str = "layer") -> Layer:
  """The layer called ``name``, or a one-line ValueError listing the valid names."""
  for l in found:
    if l.name == name:
      return l
  raise ValueError(f"{name!r} is not a {what} of this model; valid: "
                   f"{', '.join(l.name for l in found)}")


def summary(found: Sequence[Layer]) -> str:
  """A table of layer name, module class and output shape (batch axis shown as N)."""
  rows = [(l.name, l.kind, "(N, " + ", ".join(map(str, l.shape[1:])) + ")") for l in found]
  widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in
            enumerate(("layer", "module", "output"))]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa
  return "\n".join([line(("layer", "module", "output")), line(["-" * w for w in widths])]
                   + [line(r) for r in rows])


def extract(model, variables, x, names: Sequence[str]) -> dict[str, jax.Array]:
  """``{name: activation}`` of the named layers for the batch ``x``, via Flax's
  ``capture_intermediates``. Names as in ``layers`` (``#k`` picks the k-th call). Pure and
  jit-able with ``names`` static; unknown names are not checked here (see ``check_layer``)."""
  paths = {n.split("#")[0] for n in names}

  def wanted(module, method_name):
    return method_name == "__call__" and "/".join(module.path) in paths

  _, state = model.apply(variables, x, train=False, capture_intermediates=wanted,
                         mutable=["intermediates"])
  out = {}
  for name in names:
    path, _, k = name.partition("#")
    node = state["intermediates"]
    for part in path.split("/"):
      node = node[part]
    out[name] = node["__call__"][int(k or 1) - 1]
  return out


def extract_checked(model, variables, x, names: Sequence[str]) -> dict[str, np.ndarray]:
  """``extract`` after checking every name against the model's layers (ValueError listing
  the valid ones), as numpy arrays."""
  x = jnp.asarray(x, jnp.float32)
  found = layers(model, variables, x.shape[1:])
  for n in names:
    check_layer(n, found)
  got = jax.jit(extract, static_argnums=(0, 3))(model, variables, x, tuple(names))
  return {k: np.asarray(v) for k, v in got.items()}


def first_kernel_layer(model, variables, input_shape, *, min_rank: int = 3) -> Layer:
  """The first called layer whose parameters hold a ``kernel`` of rank >= ``min_rank``
  (a convolution: spatial dims + in + out), by call order, not the parameter dict's order."""
  for l in layers(model, variables, input_shape):
    k = kernel_of(variables, l.name)
    if k is not None and np.ndim(k) >= min_rank:
      return l
  raise ValueError(f"{type(model).__name__} calls no module with a convolution 'kernel'")


def kernel_of(variables, name: str):
  """The ``kernel`` parameter of layer ``name`` (None when it has none)."""
  node = variables.get("params", {})
  for part in name.split("#")[0].split("/"):
    if not hasattr(node, "get") or part not in node:
      return None
    node = node[part]
  return node.get("kernel") if hasattr(node, "get") else None


def feature_maps(model, variables, image, layer: str | None = None) -> tuple[str, np.ndarray]:
  """``(layer name, maps (*spatial, C))`` of one example ``image`` ((*spatial, C), or with a
  leading batch axis of 1). ``layer=None`` takes the first layer with a spatial output (the
  first convolution in every model of the zoo); an unknown name raises ValueError listing the
  valid ones."""
  image = np.asarray(image, np.float32)
  batch = image if image.ndim >= 4 and image.shape[0] == 1 else image[None]
  found = spatial(layers(model, variables, batch.shape[1:]))
  if not found:
    raise ValueError(f"{type(model).__name__} has no layer with a (N, *spatial, C) output")
  chosen = found[0] if layer is None else check_layer(layer, found,
                                                      "layer with a spatial output")
  return chosen.name, extract_checked(model, variables, batch, [chosen.name])[chosen.name][0]


def first_conv_kernel(model, variables, input_shape) -> tuple[str, np.ndarray]:
  """``(layer name, kernel (*k, in, out))`` of the first convolution the model calls."""
  found = first_kernel_layer(model, variables, input_shape)
  return found.name, np.asarray(kernel_of(variables, found.name), np.float32)
