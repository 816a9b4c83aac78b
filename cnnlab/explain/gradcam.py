"""Grad-CAM (Selvaraju et al. 2017) at any layer with a (N, *spatial, C) output, for 1-D, 2-D
and 3-D models, without changing model code.

The gradient of the target score w.r.t. an intermediate activation A is taken by adding a
zero tensor to that layer's output during ``apply`` (an ``nn.intercept_methods`` hook, the same
idea as Flax's ``perturb`` but needing nothing in the model) and differentiating w.r.t. it. Then

  weights_c = mean over positions of dscore/dA_c,   cam = ReLU(sum_c weights_c * A_c)

and the map is resized (linear interpolation) to the input's spatial shape. Pure and jit-able
(``jax.jit(gradcam, static_argnums=(0, 4))``); ``target=None`` explains the predicted class.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.explain import attribution, features


def layer_gradient(model, variables, x, target, layer: str):
  """(activation, d score / d activation, logits) at ``layer`` for the batch ``x``."""
  found = features.layers(model, variables, x.shape[1:])
  shape = features.check_layer(layer, found).shape
  delta = jnp.zeros((x.shape[0], *shape[1:]), jnp.float32)

  def score(d):
    captured = {}

    def transform(name, out):
      if name == layer:
        out = out + d.astype(out.dtype)
        captured["a"] = out
      return out

    with nn.intercept_methods(features.interceptor([], transform)):
      logits = features.apply_inference(model, variables, x)
    t = attribution.resolve_target(lambda _: logits, x, target)
    return attribution.class_scores(logits, t).sum(), (captured["a"], logits)

  grad, (act, logits) = jax.grad(score, has_aux=True)(delta)
  return act, grad, logits


def gradcam(model, variables, x, target=None, layer: str = "", *, resize: bool = True):
  """(N, *spatial) Grad-CAM maps of ``layer`` (the input's spatial shape when ``resize``,
  else the layer's). ValueError for a layer without spatial output or an unknown name."""
  x = jnp.asarray(x, jnp.float32)
  found = features.layers(model, variables, x.shape[1:])
  info = features.check_layer(layer, features.spatial(found), "layer with a spatial output")
  if info.spatial_dims != x.ndim - 2:
    raise ValueError(f"layer {layer!r} has {info.spatial_dims} spatial dims, the input "
                     f"{x.ndim - 2}")
  act, grad, _ = layer_gradient(model, variables, x, target, layer)
  positions = tuple(range(1, act.ndim - 1))
  weights = grad.mean(axis=positions, keepdims=True)
  cam = jax.nn.relu((weights * act.astype(jnp.float32)).sum(axis=-1))
  if resize and cam.shape[1:] != x.shape[1:-1]:
    cam = jax.image.resize(cam, (x.shape[0], *x.shape[1:-1]), method="linear")
  return cam
