"""Inference on inputs of any size, one fixed-size tile batch at a time.

A segmentation network trained on crops predicts a whole slide, slice or volume tile by tile;
device memory is bounded by one batch of tiles, and ``apply`` sees ONE shape (the last batch is
padded with zero tiles), so a jitted ``apply`` compiles once. Inputs are single images / volumes
[*S, C] (S = (H, W) or (D, H, W)) in NumPy; ``apply(tiles [B, *tile, C]) -> [B, *out, K]`` is the
caller's (jitted) model call; results are float32 [*S, K] at the input's size, accumulated on
the host.

``sliding_window`` — for networks whose output has the tile's size ('same' padding), as MONAI's
sliding_window_inference: tiles start every ``interval = floor(tile * (1 - overlap))`` pixels
(at least 1) along each axis, the last one moved back to end on the border; an axis shorter than
the tile is padded (``pad_mode``, zeros by default) and the padding cut off the result. Where
tiles overlap, predictions are averaged with per-pixel importance weights:
  'constant'  every pixel of a tile weighs 1;
  'gaussian'  w(x) = prod_axes exp(-(x_i - c_i)^2 / (2 s_i^2)), centre c_i = (tile_i - 1) / 2,
              s_i = sigma_scale * tile_i (MONAI's sigma_scale, default 0.125), peak 1, floored
              at 1e-20 so no pixel has zero total weight; the tile's centre, where the network
              saw the most context, counts most.
``output='probabilities'`` applies a softmax to each tile before blending (averaging
probabilities, as nnU-Net does); 'logits' blends the logits.

``overlap_tile`` — U-Net's overlap-tile strategy (Ronneberger et al. 2015, §2 and Fig. 2) for
networks with valid convolutions, whose output is ``margin`` pixels smaller than the input on
each side: the input is extended by ``margin`` on every side by mirroring, output tiles of
``out_tile`` pixels are laid edge to edge (no overlap, no blending) and each is predicted from
its input tile of out_tile + 2 * margin pixels; the last tiles run past the image, which is then
mirrored further, and the excess is cut off. Mirroring: the paper says the missing context "is
extrapolated by mirroring the input image"; its Fig. 2 cannot show whether the edge pixel is
repeated, but the authors' released tiled prediction (tiled_predict.m in the caffe U-Net release,
Falk, Bensch & Ronneberger) copies rows from + 1 .. from + pad in reverse, leaving the edge row
out: numpy's 'reflect', the default here ('symmetric' repeats the edge row).
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

# MONAI sliding_window_inference: sigma_scale=0.125 (sigma = 0.125 * tile side).
SIGMA_SCALE = 0.125
GAUSSIAN_FLOOR = 1e-20
BLEND_MODES = ("constant", "gaussian")
OUTPUTS = ("logits", "probabilities")


class TilingError(ValueError):
  """Tiling asked of sizes or options it cannot serve; one line naming the value."""


def _per_axis(value, rank: int, what: str) -> tuple[int, ...]:
  values = (value,) * rank if np.isscalar(value) else tuple(value)
  if len(values) != rank or any(int(v) != v for v in values):
    raise TilingError(f"{what}={value!r}: expected an int or {rank} ints")
  return tuple(int(v) for v in values)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
  """Start of every tile along one axis of ``size`` >= ``tile`` pixels (see the docstring)."""
  interval = max(1, int(tile * (1.0 - overlap)))
  starts = list(range(0, max(size - tile, 0) + 1, interval))
  if starts[-1] + tile < size:
    starts.append(size - tile)
  return starts


def importance_map(tile: Sequence[int], mode: str = "constant",
                   sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
  """float32 [*tile] blending weights (see the module docstring)."""
  if mode not in BLEND_MODES:
    raise TilingError(f"blend={mode!r} is not one of {', '.join(BLEND_MODES)}")
  if mode == "constant":
    return np.ones(tuple(tile), np.float32)
  if sigma_scale <= 0:
    raise TilingError(f"sigma_scale={sigma_scale!r}: expected > 0")
  w = np.ones((), np.float64)
  for n in tile:
    x = np.arange(n) - (n - 1) / 2.0
    w = np.multiply.outer(w, np.exp(-x ** 2 / (2.0 * (sigma_scale * n) ** 2)))
  return np.maximum(w / w.max(), GAUSSIAN_FLOOR).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _run_batches(apply: Callable, tiles: list[np.ndarray], tile_batch: int, out_shape,
                 output: str):
  """Yields ``apply``'s float32 output tile by tile; every call gets exactly ``tile_batch``
  tiles (the last batch padded with zero tiles whose outputs are dropped)."""
  for first in range(0, len(tiles), tile_batch):
    chunk = tiles[first:first + tile_batch]
    batch = np.zeros((tile_batch,) + chunk[0].shape, chunk[0].dtype)
    batch[:len(chunk)] = chunk
    out = np.asarray(apply(batch), np.float32)
    if out.shape[0] != tile_batch or out.shape[1:-1] != tuple(out_shape):
      raise TilingError(f"apply returned shape {out.shape} for tiles {batch.shape}; expected "
                        f"({tile_batch}, {', '.join(map(str, out_shape))}, K)")
    if output == "probabilities":
      out = _softmax(out)
    yield from out[:len(chunk)]


def _check_common(image, tile_batch: int, output: str) -> int:
  if image.ndim not in (3, 4):
    raise TilingError(f"image shape {image.shape}: expected [H, W, C] or [D, H, W, C]")
  if tile_batch < 1:
    raise TilingError(f"tile_batch={tile_batch!r}: expected >= 1")
  if output not in OUTPUTS:
    raise TilingError(f"output={output!r} is not one of {', '.join(OUTPUTS)}")
  return image.ndim - 1


def sliding_window(image: np.ndarray, apply: Callable, tile, *, overlap: float = 0.25,
                   blend: str = "constant", sigma_scale: float = SIGMA_SCALE,
                   tile_batch: int = 4, pad_mode: str = "constant",
                   output: str = "logits") -> np.ndarray:
  """float32 [*S, K] prediction of ``image`` [*S, C] from overlapping tiles (see the module
  docstring); ``apply`` maps [tile_batch, *tile, C] to [tile_batch, *tile, K]."""
  rank = _check_common(image, tile_batch, output)
  tile = _per_axis(tile, rank, "tile")
  if not 0.0 <= overlap < 1.0:
    raise TilingError(f"overlap={overlap!r}: expected a fraction in [0, 1)")
  size = image.shape[:-1]
  padded = np.pad(image, [(0, max(0, t - n)) for t, n in zip(tile, size)] + [(0, 0)],
                  mode=pad_mode)
  weight = importance_map(tile, blend, sigma_scale)
  corners = list(itertools.product(*[tile_starts(n, t, overlap)
                                     for n, t in zip(padded.shape[:-1], tile)]))
  windows = [tuple(slice(a, a + t) for a, t in zip(c, tile)) for c in corners]
  tiles = [padded[w] for w in windows]
  total, norm = None, np.zeros(padded.shape[:-1], np.float32)
  for w, out in zip(windows, _run_batches(apply, tiles, tile_batch, tile, output)):
    if total is None:
      total = np.zeros(padded.shape[:-1] + out.shape[-1:], np.float32)
    total[w] += out * weight[..., None]
    norm[w] += weight
  crop = tuple(slice(0, n) for n in size)
  return total[crop] / norm[crop][..., None]


def overlap_tile(image: np.ndarray, apply: Callable, out_tile, margin, *, tile_batch: int = 1,
                 pad_mode: str = "reflect", output: str = "logits") -> np.ndarray:
  """float32 [*S, K] prediction of ``image`` [*S, C] by U-Net's overlap-tile strategy (see the
  module docstring): ``apply`` maps [tile_batch, *(out_tile + 2 margin), C] to
  [tile_batch, *out_tile, K]; ``margin`` is the per-side shrink of the valid network."""
  rank = _check_common(image, tile_batch, output)
  out_tile = _per_axis(out_tile, rank, "out_tile")
  margin = _per_axis(margin, rank, "margin")
  if min(out_tile) < 1 or min(margin) < 0:
    raise TilingError(f"out_tile={out_tile}, margin={margin}: expected tiles >= 1, margins >= 0")
  size = image.shape[:-1]
  counts = [-(-n // t) for n, t in zip(size, out_tile)]
  widths = [(m, c * t - n + m) for n, t, m, c in zip(size, out_tile, margin, counts)]
  padded = np.pad(image, widths + [(0, 0)], mode=pad_mode)
  corners = list(itertools.product(*[range(0, c * t, t) for c, t in zip(counts, out_tile)]))
  tiles = [padded[tuple(slice(a, a + t + 2 * m) for a, t, m in zip(c, out_tile, margin))]
           for c in corners]
  result = None
  for corner, out in zip(corners, _run_batches(apply, tiles, tile_batch, out_tile, output)):
    if result is None:
      result = np.zeros(tuple(c * t for c, t in zip(counts, out_tile)) + out.shape[-1:],
                        np.float32)
    result[tuple(slice(a, a + t) for a, t in zip(corner, out_tile))] = out
  return result[tuple(slice(0, n) for n in size)]
