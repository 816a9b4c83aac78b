"""One entry for every attribution method, as the entry points use them: a name, a batch in,
(N, *spatial) heat maps out (one value per input position), compiled once per input shape.

    maps = heat_maps("gradcam", model, variables, x, layer="layer4_1/bn2")

Methods: ``saliency`` (|input gradient| summed over channels), ``smoothgrad`` (the same,
averaged over noisy copies), ``integrated_gradients`` (|IG| summed over channels),
``gradcam`` (at ``layer``, default the deepest map of the input's rank larger than 1 in every axis)
and ``occlusion`` (score drop, window ~1/7 of every spatial side unless ``window`` is given).
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from cnnlab.explain import attribution, features, gradcam, occlusion

METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "occlusion")
TITLES = {"saliency": "input-gradient saliency", "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
          "occlusion": "occlusion sensitivity"}


def check_method(name: str) -> str:
  if name not in METHODS:
    raise ValueError(f"unknown explanation {name!r}; valid: {', '.join(METHODS)}")
  return name


def default_layer(model, variables, input_shape) -> str:
  """Grad-CAM's default layer for inputs of ``input_shape`` (*spatial, C): the deepest (last
  called) layer whose output has the input's spatial rank and more than one position along
  EVERY spatial axis — the last convolutional feature map that can still say where. A map of
  extent 1 along an axis (a 3-D ResNet's layer4 at a 16^3 crop is 1x1x1) would give a heat map
  that is flat along it. The same rule for 1-D, 2-D and 3-D models."""
  rank = len(input_shape) - 1
  found = [l for l in features.spatial(features.layers(model, variables, input_shape))
           if l.spatial_dims == rank]
  if not found:
    raise ValueError(f"{type(model).__name__} has no layer with a {rank}-D spatial output")
  wide = [l for l in found if all(int(s) > 1 for s in l.shape[1:-1])]
  if not wide:
    raise ValueError(f"no layer of {type(model).__name__} has a map larger than 1 in every "
                     f"axis at input {tuple(input_shape)}; name one (valid: "
                     f"{', '.join(l.name for l in found)})")
  return wide[-1].name


def default_window(spatial) -> tuple[int, ...]:
  return tuple(max(1, int(s) // 7) for s in spatial)


@functools.partial(jax.jit, static_argnames=("method", "model", "layer", "window"))
def _compute(method, model, variables, x, target, layer, window):
  logits_fn = functools.partial(features.apply_inference, model, variables)
  if method == "gradcam":
    return gradcam.gradcam(model, variables, x, target, layer)
  if method == "occlusion":
    return occlusion.occlusion(logits_fn, x, target, window=window)
  fn = {"saliency": attribution.saliency, "smoothgrad": attribution.smoothgrad,
        "integrated_gradients": attribution.integrated_gradients}[method]
  return attribution.heat(fn(logits_fn, x, target))


def heat_maps(method: str, model, variables, x, target=None, *, layer: str | None = None,
              window=None) -> np.ndarray:
  """(N, *spatial) heat for the batch ``x`` (N, *spatial, C); ``target`` (N,) classes or None
  for the predicted ones. ValueError (one line) for an unknown method or layer."""
  check_method(method)
  x = np.asarray(x, np.float32)
  if method == "gradcam":
    layer = layer or default_layer(model, variables, x.shape[1:])
    found = features.spatial(features.layers(model, variables, x.shape[1:]))
    features.check_layer(layer, found, "layer with a spatial output")
  window = tuple(window) if window is not None else default_window(x.shape[1:-1])
  target = None if target is None else np.asarray(target, np.int32)
  return np.asarray(_compute(method, model, variables, x, target, layer, window))


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def _ig_check(model, variables, x, target, steps):
  logits_fn = functools.partial(features.apply_inference, model, variables)
  ig = attribution.integrated_gradients(logits_fn, x, target, steps=steps)
  return attribution.completeness(logits_fn, x, ig, target)


def ig_completeness(model, variables, x, target=None, *, steps: int = 64) -> dict:
  """Integrated Gradients' completeness for the batch ``x``: numpy ``sum``, ``delta``
  (f(x) - f(0)), ``gap`` and ``ok`` per example (see attribution.completeness)."""
  target = None if target is None else np.asarray(target, np.int32)
  out = _ig_check(model, variables, np.asarray(x, np.float32), target, steps)
  return {k: np.asarray(v) for k, v in out.items()}
