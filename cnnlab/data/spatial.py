"""Paired spatial augmentation for segmentation: one geometric transform, image and mask together.

A segmentation example is an image [*S, C] and its mask [*S] of integer labels, with S = (H, W)
for 2-D images and (D, H, W) for volumes. Every transform here moves image and mask by the SAME
geometric map, so a label keeps pointing at the pixel it was drawn on. Every random number comes
from the ``np.random.Generator`` the caller passes in, drawn in a fixed order, so the pipeline can
make augmentation a pure function of (seed, step).

    image, mask = random_flip(image, mask, rng, axes=(0, 1))
    image, mask = random_rot90(image, mask, rng, plane=(0, 1))
    image, mask = random_crop(image, mask, rng, (256, 256), foreground_prob=0.5)
    image, mask = random_scale(image, mask, rng, (0.8, 1.25))
    image, mask = elastic_deform(image, mask, rng)          # U-Net §3.1
    image, mask = augment_pair(image, mask, rng, SpatialAugment.from_options(options))

Exact moves (flips, 90-degree turns, crops) are array slicing and keep the image dtype. Moves
that resample (scale, elastic) read the image by spline interpolation (order 1, linear, by
default; 3 for cubic) and the mask by nearest neighbour, so no new label is invented; the
interpolated image comes back float32. Points mapped outside the array read its mirror image
(scipy mode 'mirror' = numpy 'reflect': the edge pixel is not repeated), the same extension the
U-Net authors use for the overlap-tile border (see cnnlab.training.tiling).

``augment_pair`` composes them in one pass: flips and turns first (exact), then the crop window
is chosen, then scaling and the elastic field are evaluated only at the window's pixels, and the
image is read ONCE at the composed coordinates. Resampling only the window is what makes the
chain cheap (a 256 x 256 crop of a 512 x 512 slice costs a quarter of a full-size warp) and
reading once avoids blurring the image twice.

To carry a precomputed per-pixel map (e.g. U-Net's border weights, cnnlab.data.border_weights)
through the same transform, append it to the image as one more channel: it is interpolated
linearly with the image and split off afterwards.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

# Ronneberger, Fischer & Brox 2015, "U-Net", §3.1: "random displacement vectors on a coarse
# 3 by 3 grid. The displacements are sampled from a Gaussian distribution with 10 pixels
# standard deviation. Per-pixel displacements are then computed using bicubic interpolation."
ELASTIC_GRID = 3
ELASTIC_SIGMA = 10.0
# nnU-Net (v1) default_3D_augmentation_params' "scale_range": the zoom factors it draws from.
SCALE_RANGE = (0.85, 1.25)
# scipy.ndimage's name for numpy's 'reflect' extension (mirror about the edge pixel's centre).
BOUNDARY = "mirror"
BOUNDARY_MODES = ("mirror", "reflect", "nearest", "constant", "wrap")


class AugmentError(ValueError):
  """A transform asked of arrays or options it cannot serve; one line naming the value."""


def _spatial_rank(image: np.ndarray, mask: np.ndarray) -> int:
  """Spatial rank (2 or 3) of an (image [*S, C], mask [*S]) pair."""
  if image.ndim != mask.ndim + 1 or image.shape[:-1] != mask.shape:
    raise AugmentError(f"image shape {image.shape} and mask shape {mask.shape} do not pair; "
                       "expected image [*S, C] and mask [*S]")
  if mask.ndim not in (2, 3):
    raise AugmentError(f"mask shape {mask.shape}: spatial rank {mask.ndim}; expected 2 or 3")
  return mask.ndim


def _check_axes(axes: Sequence[int], rank: int, what: str) -> None:
  if any(not 0 <= int(a) < rank for a in axes) or len(set(axes)) != len(axes):
    raise AugmentError(f"{what}={tuple(axes)}: expected distinct spatial axes in 0..{rank - 1}")


# ------------------------------------------------------------------------- exact transforms

def random_flip(image, mask, rng: np.random.Generator, axes: Sequence[int] = (0, 1),
                prob: float = 0.5):
  """Flips each spatial axis in ``axes`` with probability ``prob`` (one draw per axis)."""
  _check_axes(axes, _spatial_rank(image, mask), "flip axes")
  for axis in axes:
    if rng.random() < prob:
      image, mask = np.flip(image, axis), np.flip(mask, axis)
  return image, mask


def random_rot90(image, mask, rng: np.random.Generator, plane: Sequence[int] = (0, 1)):
  """Turns the pair by k * 90 degrees in ``plane`` (two spatial axes), k uniform in 0..3.

  A plane whose two sides differ turns by 0 or 180 degrees only, so the shape never changes
  (a batch keeps one shape)."""
  _check_axes(plane, _spatial_rank(image, mask), "rot90 plane")
  if len(plane) != 2:
    raise AugmentError(f"rot90 plane={tuple(plane)}: expected two axes")
  square = mask.shape[plane[0]] == mask.shape[plane[1]]
  k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
  return np.rot90(image, k, axes=tuple(plane)), np.rot90(mask, k, axes=tuple(plane))


def foreground(mask: np.ndarray, ignore_label: int | None = None) -> np.ndarray:
  """Boolean map of foreground pixels: label > 0 and not the ignore label."""
  fg = mask > 0
  return fg if ignore_label is None else fg & (mask != ignore_label)


def pad_to(image, mask, size: Sequence[int], fill_label: int = 0):
  """Pads the pair at the high end of each axis to at least ``size`` (image zeros, mask
  ``fill_label``; pass the ignore label to keep padding out of the loss)."""
  extra = [max(0, int(s) - n) for s, n in zip(size, mask.shape)]
  if not any(extra):
    return image, mask
  widths = [(0, e) for e in extra]
  return (np.pad(image, widths + [(0, 0)]),
          np.pad(mask, widths, constant_values=fill_label))


def crop_start(mask: np.ndarray, size: Sequence[int], rng: np.random.Generator,
               foreground_prob: float = 0.0, ignore_label: int | None = None) -> tuple[int, ...]:
  """Corner of a random ``size`` window inside ``mask`` (which must be at least that big).

  With probability ``foreground_prob`` the window is centred (as far as the borders allow) on
  a foreground pixel drawn uniformly — MONAI's RandCropByPosNegLabel positive case, nnU-Net's
  foreground oversampling; otherwise (or when the mask has no foreground) the corner is
  uniform. Draws: one uniform, then either one integer or one integer per axis."""
  high = np.subtract(mask.shape, size)
  if np.any(high < 0):
    raise AugmentError(f"crop size {tuple(size)} exceeds the array {mask.shape}; pad first")
  if rng.random() < foreground_prob:
    pool = np.flatnonzero(foreground(mask, ignore_label))
    if pool.size:
      centre = np.unravel_index(pool[rng.integers(pool.size)], mask.shape)
      return tuple(int(np.clip(c - s // 2, 0, h)) for c, s, h in zip(centre, size, high))
  return tuple(int(rng.integers(h + 1)) for h in high)


def random_crop(image, mask, rng: np.random.Generator, size: Sequence[int],
                foreground_prob: float = 0.0, ignore_label: int | None = None):
  """A random ``size`` window of the pair (optionally foreground-centred, see crop_start);
  an axis shorter than the window is padded first (mask with the ignore label, else 0)."""
  rank = _spatial_rank(image, mask)
  if len(size) != rank:
    raise AugmentError(f"crop size {tuple(size)}: expected {rank} sides for mask {mask.shape}")
  image, mask = pad_to(image, mask, size, 0 if ignore_label is None else ignore_label)
  start = crop_start(mask, size, rng, foreground_prob, ignore_label)
  window = tuple(slice(a, a + int(s)) for a, s in zip(start, size))
  return image[window], mask[window]


# ----------------------------------------------------------------- resampling transforms

@functools.lru_cache(maxsize=64)
def _spline_weights(n: int, grid: int) -> np.ndarray:
  """[n, grid] weights taking values on ``grid`` nodes (the first node on pixel 0, the last on
  pixel n - 1, evenly spaced) to every pixel of the axis by cubic-spline interpolation."""
  u = np.arange(n, dtype=np.float64) * (grid - 1) / max(n - 1, 1)
  eye = np.eye(grid)
  cols = [ndimage.map_coordinates(eye[j], u[None], order=3, mode="mirror") for j in range(grid)]
  out = np.stack(cols, axis=1)
  out.flags.writeable = False
  return out


def elastic_field(rng: np.random.Generator, shape: Sequence[int],
                  window: Sequence[np.ndarray] | None = None, grid: int = ELASTIC_GRID,
                  sigma: float = ELASTIC_SIGMA) -> list[np.ndarray]:
  """U-Net's smooth random displacement (pixels), one array per axis, at the pixels of
  ``window`` (one index array per axis; default: every pixel of ``shape``).

  One displacement vector per node of a coarse grid x ... x grid lattice spanning the array,
  each component ~ N(0, sigma^2) (one draw of shape [rank, grid, ..., grid]); the per-pixel
  field is their cubic-spline interpolation, which is separable: a product of one [n, grid]
  weight matrix per axis, so only the window's pixels are ever computed."""
  rank = len(shape)
  window = window or [np.arange(n) for n in shape]
  coarse = rng.normal(0.0, sigma, size=(rank,) + (grid,) * rank)
  mats = [_spline_weights(int(n), grid)[idx].astype(np.float32) for n, idx in zip(shape, window)]
  fields = []
  for component in coarse.astype(np.float32):
    out = component
    for axis, m in enumerate(mats):
      out = _contract(out, m, axis)
    fields.append(out)
  return fields


def _contract(nodes: np.ndarray, m: np.ndarray, axis: int) -> np.ndarray:
  """Replaces ``axis`` of ``nodes`` (grid nodes) by the pixels of m [n, grid]: a few
  broadcast multiply-adds (no BLAS call: a threaded BLAS on a loaded host made a 512 x 3 x 512
  product cost 40x its single-thread time)."""
  shape = [1] * nodes.ndim
  shape[axis] = m.shape[0]
  out = np.take(nodes, [0], axis=axis) * m[:, 0].reshape(shape)
  for j in range(1, m.shape[1]):
    out += np.take(nodes, [j], axis=axis) * m[:, j].reshape(shape)
  return out


def _source_coords(start, size, scale: float, field) -> np.ndarray:
  """[rank, *size] source coordinates of a window: pixel p reads p + field(p), then zoomed by
  ``scale`` about the window centre (scale > 1 enlarges what the window shows)."""
  grids = np.meshgrid(*[a + np.arange(n, dtype=np.float32) for a, n in zip(start, size)],
                      indexing="ij", sparse=True)
  coords = np.empty((len(size),) + tuple(size), np.float32)
  for axis, g in enumerate(grids):
    centre = start[axis] + (size[axis] - 1) / 2.0
    p = g if field is None else g + field[axis]
    coords[axis] = centre + (p - centre) / scale
  return coords


def resample_pair(image, mask, coords: np.ndarray, order: int = 1, mode: str = BOUNDARY,
                  fill_label: int = 0):
  """Reads image (spline ``order``, float32) and mask (nearest) at ``coords`` [rank, *out];
  with mode 'constant', outside points read image 0 and mask ``fill_label``."""
  if mode not in BOUNDARY_MODES:
    raise AugmentError(f"boundary mode={mode!r} is not one of {', '.join(BOUNDARY_MODES)}")
  channels = [ndimage.map_coordinates(image[..., c], coords, order=order, mode=mode,
                                      output=np.float32) for c in range(image.shape[-1])]
  return (np.stack(channels, axis=-1),
          ndimage.map_coordinates(mask, coords, order=0, mode=mode, cval=fill_label))


def random_scale(image, mask, rng: np.random.Generator, scale_range=SCALE_RANGE,
                 order: int = 1, mode: str = BOUNDARY):
  """Zooms the pair about its centre by s ~ U[scale_range] (one draw) at the same size: s > 1
  crops the enlarged pair, s < 1 fills the border with the mirrored pair."""
  _spatial_rank(image, mask)
  s = float(rng.uniform(*scale_range))
  coords = _source_coords((0,) * mask.ndim, mask.shape, s, None)
  return resample_pair(image, mask, coords, order, mode)


def elastic_deform(image, mask, rng: np.random.Generator, grid: int = ELASTIC_GRID,
                   sigma: float = ELASTIC_SIGMA, order: int = 1, mode: str = BOUNDARY):
  """U-Net's elastic deformation (Ronneberger et al. 2015, §3.1) of the whole pair: a random
  ``grid``^rank lattice of N(0, sigma^2)-pixel displacement vectors, cubic-spline interpolated
  to every pixel; image read with spline ``order`` (1 linear, 3 cubic), mask nearest."""
  _spatial_rank(image, mask)
  field = elastic_field(rng, mask.shape, None, grid, sigma)
  coords = _source_coords((0,) * mask.ndim, mask.shape, 1.0, field)
  return resample_pair(image, mask, coords, order, mode)


# ------------------------------------------------------------------------- composition

def _int_tuple(value) -> tuple[int, ...]:
  return tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class SpatialAugment:
  """Options of ``augment_pair``; the defaults change nothing.

  flip_axes / flip_prob     spatial axes flipped, each with probability flip_prob.
  rot90_planes              planes (axis pairs) turned by a random multiple of 90 degrees.
  scale_range / scale_prob  zoom s ~ U[lo, hi] about the crop centre, with probability scale_prob.
  elastic_prob              probability of U-Net's elastic deformation (elastic_grid nodes per
                            axis, elastic_sigma pixels std; defaults from the paper, §3.1).
  crop_size                 output window (None: the whole array); crop_foreground_prob: chance
                            the window is centred on a foreground pixel.
  image_order               spline order for the image (0, 1 or 3); the mask is always nearest.
  mode                      scipy boundary mode where a warp reads outside the array.
  ignore_label              label that is not foreground; fills crop padding (and, with mode
                            'constant', what a warp reads outside the mask).
  """
  flip_axes: tuple[int, ...] = ()
  flip_prob: float = 0.5
  rot90_planes: tuple[tuple[int, int], ...] = ()
  scale_range: tuple[float, float] | None = None
  scale_prob: float = 1.0
  elastic_prob: float = 0.0
  elastic_grid: int = ELASTIC_GRID
  elastic_sigma: float = ELASTIC_SIGMA
  crop_size: tuple[int, ...] | None = None
  crop_foreground_prob: float = 0.0
  image_order: int = 1
  mode: str = BOUNDARY
  ignore_label: int | None = None

  def __post_init__(self):
    for name in ("flip_prob", "scale_prob", "elastic_prob", "crop_foreground_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise AugmentError(f"{name}={getattr(self, name)!r}: expected a probability in [0, 1]")
    if self.scale_range is not None and not 0 < self.scale_range[0] <= self.scale_range[1]:
      raise AugmentError(f"scale_range={self.scale_range!r}: expected 0 < lo <= hi")
    if self.elastic_grid < 2 or self.elastic_sigma < 0:
      raise AugmentError(f"elastic_grid={self.elastic_grid}, elastic_sigma={self.elastic_sigma}"
                         ": expected a grid of >= 2 nodes and sigma >= 0")
    if self.image_order not in (0, 1, 3):
      raise AugmentError(f"image_order={self.image_order!r}: expected 0, 1 or 3")
    if self.mode not in BOUNDARY_MODES:
      raise AugmentError(f"mode={self.mode!r} is not one of {', '.join(BOUNDARY_MODES)}")

  @classmethod
  def from_options(cls, options: Mapping[str, Any]) -> SpatialAugment:
    """From a config-like mapping (lists allowed); an unknown key is an error naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
      raise AugmentError(f"augmentation option(s) {', '.join(unknown)} unknown; expected some "
                         f"of {', '.join(sorted(known))}")
    o = dict(options)
    for key in ("flip_axes", "crop_size"):
      if o.get(key) is not None:
        o[key] = _int_tuple(o[key])
    if "rot90_planes" in o:
      o["rot90_planes"] = tuple(_int_tuple(p) for p in o["rot90_planes"])
    if o.get("scale_range") is not None:
      o["scale_range"] = tuple(float(v) for v in o["scale_range"])
    return cls(**o)


def augment_pair(image, mask, rng: np.random.Generator, opts: SpatialAugment):
  """Applies ``opts`` to the pair in one pass. Draw order: flips, turns, crop window, scale
  (one uniform, then the factor), elastic (one uniform, then the lattice)."""
  rank = _spatial_rank(image, mask)
  if opts.flip_axes:
    image, mask = random_flip(image, mask, rng, opts.flip_axes, opts.flip_prob)
  for plane in opts.rot90_planes:
    image, mask = random_rot90(image, mask, rng, plane)
  size = mask.shape if opts.crop_size is None else opts.crop_size
  if len(size) != rank:
    raise AugmentError(f"crop_size={tuple(size)}: expected {rank} sides for mask {mask.shape}")
  fill = 0 if opts.ignore_label is None else opts.ignore_label
  image, mask = pad_to(image, mask, size, fill)
  start = crop_start(mask, size, rng, opts.crop_foreground_prob, opts.ignore_label)
  scale = 1.0
  if opts.scale_range is not None and rng.random() < opts.scale_prob:
    scale = float(rng.uniform(*opts.scale_range))
  field = None
  if opts.elastic_prob > 0 and rng.random() < opts.elastic_prob:
    window = [a + np.arange(int(n)) for a, n in zip(start, size)]
    field = elastic_field(rng, mask.shape, window, opts.elastic_grid, opts.elastic_sigma)
  if scale == 1.0 and field is None:
    window = tuple(slice(a, a + int(n)) for a, n in zip(start, size))
    return image[window], mask[window]
  coords = _source_coords(start, size, scale, field)
  return resample_pair(image, mask, coords, opts.image_order, opts.mode, fill)
