"""Occlusion sensitivity (Zeiler & Fergus 2014): slide a window of constant value over the
input and record how much the target class's score drops; positions where covering the input
costs the most score are the ones the model relies on. Any number of spatial dimensions.

``occlusion(logits_fn, x, target, window=..., stride=...)`` returns (N, *spatial): at each
position the mean score drop over the windows covering it (score(x) - score(occluded x), in
logits; positive = evidence for the class). ``window`` / ``stride`` are an int (every spatial
dim) or a tuple per dim; the last window of each dim is aligned to the end so every position
is covered. The windows are fixed by the input shape, so the function is jit-able with
``logits_fn``, ``window`` and ``stride`` static; windows run ``batch_windows`` at a time.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.explain import attribution


def _per_dim(value, spatial: Sequence[int], what: str) -> tuple[int, ...]:
  v = (value,) * len(spatial) if isinstance(value, int) else tuple(value)
  if len(v) != len(spatial) or any(int(w) < 1 for w in v):
    raise ValueError(f"{what}={value!r} must be a positive int or one per spatial dim "
                     f"({len(spatial)})")
  return tuple(min(int(w), s) for w, s in zip(v, spatial))


def _starts(size: int, window: int, stride: int) -> list[int]:
  starts = list(range(0, size - window + 1, stride))
  if starts[-1] != size - window:
    starts.append(size - window)
  return starts


def window_masks(spatial: Sequence[int], window, stride=None) -> np.ndarray:
  """(W, *spatial) float masks, 1 inside each window."""
  window = _per_dim(window, spatial, "window")
  stride = window if stride is None else _per_dim(stride, spatial, "stride")
  per_dim = [_starts(s, w, st) for s, w, st in zip(spatial, window, stride)]
  masks = []
  for corner in itertools.product(*per_dim):
    m = np.zeros(spatial, np.float32)
    m[tuple(slice(c, c + w) for c, w in zip(corner, window))] = 1.0
    masks.append(m)
  return np.stack(masks)


def occlusion(logits_fn: Callable, x, target=None, *, window=4, stride=None,
              value: float = 0.0, batch_windows: int = 16):
  """(N, *spatial) mean score drop when the windows covering each position are set to
  ``value``."""
  x = jnp.asarray(x, jnp.float32)
  masks = window_masks(x.shape[1:-1], window, stride)
  target = attribution.resolve_target(logits_fn, x, target)
  base = attribution.class_scores(logits_fn(x), target)

  def drop(mask):
    m = mask[None, ..., None]
    return base - attribution.class_scores(logits_fn(x * (1 - m) + value * m), target)

  drops = jax.lax.map(drop, jnp.asarray(masks), batch_size=batch_windows)   # (W, N)
  coverage = masks.sum(axis=0)
  return jnp.einsum("wn,w...->n...", drops, jnp.asarray(masks)) / coverage
