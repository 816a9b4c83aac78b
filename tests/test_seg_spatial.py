"""Paired spatial augmentation (cnnlab.data.spatial) and U-Net's border weights
(cnnlab.data.border_weights), each checked against what the transform must preserve or a hand
computation."""
import math

import numpy as np
import pytest
from scipy import ndimage

from cnnlab.data import border_weights as bw
from cnnlab.data import spatial as sp

CELL = 6
NUM_CLASSES = 3


def _labelled_grid(shape):
  """A blocky image whose mask is a function of its values: cell (i // CELL, j // CELL, ...)
  has class (i + 2 j + 3 k) % 3; the image holds 100 * one_hot(class) in channels 0..2 and a
  constant 7 in channel 3. Interpolating a one-hot image and taking the argmax reads the class
  with the largest interpolation weight, which is the nearest pixel's class except where
  three or more cells meet."""
  idx = np.indices(shape) // CELL
  cls = (sum((a + 1) * ix for a, ix in enumerate(idx)) % NUM_CLASSES).astype(np.uint8)
  image = np.concatenate([100.0 * np.eye(NUM_CLASSES)[cls], np.full(shape + (1,), 7.0)], -1)
  return image.astype(np.float32), cls


def _mask_of(image):
  return np.argmax(image[..., :NUM_CLASSES], axis=-1).astype(np.uint8)


def _mismatch(image, mask):
  """Fraction of pixels whose mask is not the function of the image; every such pixel must
  lie on a label boundary (a 3-pixel neighbourhood holding two labels)."""
  bad = _mask_of(image) != mask
  edge = ndimage.maximum_filter(mask, 3) != ndimage.minimum_filter(mask, 3)
  assert not np.any(bad & ~edge)
  return float(np.mean(bad))


@pytest.mark.parametrize("shape", [(40, 52), (18, 20, 22)])
def test_exact_transforms_keep_the_pair_aligned(shape):
  image, mask = _labelled_grid(shape)
  rng = np.random.default_rng(0)
  for _ in range(8):
    i, m = sp.random_flip(image, mask, rng, axes=tuple(range(len(shape))))
    i, m = sp.random_rot90(i, m, rng, plane=(0, 1))
    i, m = sp.random_crop(i, m, rng, (16,) * len(shape), foreground_prob=0.5)
    assert m.shape == (16,) * len(shape) and i.shape == m.shape + (NUM_CLASSES + 1,)
    np.testing.assert_array_equal(_mask_of(i), m)
    assert i.dtype == image.dtype and np.all(i[..., -1] == 7.0)


@pytest.mark.parametrize("shape", [(64, 72), (24, 26, 28)])
def test_resampling_chain_keeps_the_pair_aligned(shape):
  image, mask = _labelled_grid(shape)
  rank = len(shape)
  opts = sp.SpatialAugment(flip_axes=tuple(range(rank)), rot90_planes=((rank - 2, rank - 1),),
                           scale_range=(0.8, 1.25), elastic_prob=1.0, elastic_sigma=4.0,
                           crop_size=tuple(n - 6 for n in shape), crop_foreground_prob=0.5)
  for seed in range(4):
    i, m = sp.augment_pair(image, mask, np.random.default_rng(seed), opts)
    assert i.dtype == np.float32 and m.dtype == mask.dtype and m.shape == opts.crop_size
    assert _mismatch(i, m) < 0.01                       # only where cells meet
    np.testing.assert_allclose(i[..., -1], 7.0, rtol=1e-6)
    moved = np.mean(m != mask[tuple(slice(0, n) for n in m.shape)])
    assert moved > 0.05                                 # the transform did move things
    _, other = sp.augment_pair(image, mask, np.random.default_rng(seed + 100), opts)
    assert np.mean(_mask_of(i) != other) > 0.2          # a misaligned mask would be caught


def test_elastic_and_scale_alone_keep_the_pair_aligned():
  image, mask = _labelled_grid((48, 50))
  rng = np.random.default_rng(3)
  for order in (1, 3):
    i, m = sp.elastic_deform(image, mask, rng, order=order)
    assert _mismatch(i, m) < 0.01 and np.mean(m != mask) > 0.05
  i, m = sp.random_scale(image, mask, rng, (1.3, 1.3))
  assert i.shape == image.shape and _mismatch(i, m) < 0.01


def test_same_generator_state_gives_the_same_augmentation():
  image, mask = _labelled_grid((30, 34))
  opts = sp.SpatialAugment.from_options(dict(flip_axes=[0, 1], rot90_planes=[[0, 1]],
                                             scale_range=[0.9, 1.1], elastic_prob=0.5,
                                             crop_size=[20, 20]))
  a = sp.augment_pair(image, mask, np.random.default_rng(11), opts)
  b = sp.augment_pair(image, mask, np.random.default_rng(11), opts)
  c = sp.augment_pair(image, mask, np.random.default_rng(12), opts)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_elastic_field_passes_through_the_papers_coarse_grid():
  """Nodes on pixels 0, 32, 64 of a 65-pixel axis carry exactly the N(0, 10^2) draws."""
  shape = (65, 65)
  coarse = np.random.default_rng(5).normal(0.0, sp.ELASTIC_SIGMA, (2, 3, 3))
  field = sp.elastic_field(np.random.default_rng(5), shape)
  nodes = np.ix_([0, 32, 64], [0, 32, 64])
  for axis in range(2):
    np.testing.assert_allclose(field[axis][nodes], coarse[axis], rtol=1e-5, atol=1e-4)
  window = [np.arange(10, 30), np.arange(5, 40)]
  part = sp.elastic_field(np.random.default_rng(5), shape, window)
  np.testing.assert_allclose(part[0], field[0][10:30, 5:40], rtol=1e-5, atol=1e-4)


def test_foreground_crop_contains_foreground_and_rot90_keeps_shape():
  mask = np.zeros((60, 40), np.uint8)
  mask[50:53, 3:6] = 1
  image = mask[..., None].astype(np.float32)
  rng = np.random.default_rng(0)
  for _ in range(10):
    _, m = sp.random_crop(image, mask, rng, (16, 16), foreground_prob=1.0)
    assert m.sum() == 9
    i, m = sp.random_rot90(image, mask, rng)
    assert m.shape == mask.shape and i.shape == image.shape


def test_crop_pads_small_arrays_with_the_ignore_label():
  image, mask = np.ones((5, 6, 1), np.float32), np.ones((5, 6), np.uint8)
  i, m = sp.random_crop(image, mask, np.random.default_rng(0), (8, 8), ignore_label=255)
  assert m.shape == (8, 8) and (m == 255).sum() == 64 - 30 and i.sum() == 30


def test_bad_options_are_one_line_errors():
  with pytest.raises(sp.AugmentError, match="flip_axis"):
    sp.SpatialAugment.from_options({"flip_axis": (0,)})
  with pytest.raises(sp.AugmentError, match="scale_range"):
    sp.SpatialAugment(scale_range=(1.2, 0.8))
  with pytest.raises(sp.AugmentError, match="do not pair"):
    sp.random_flip(np.zeros((4, 4, 1)), np.zeros((4, 5)), np.random.default_rng(0))
  with pytest.raises(sp.AugmentError, match="flip axes"):
    sp.random_flip(np.zeros((4, 4, 1)), np.zeros((4, 4)), np.random.default_rng(0), axes=(2,))


# --------------------------------------------------------------------- border weight map

def _two_squares(gap=2):
  """Background 0 with two 10 x 10 squares of class 1 separated by ``gap`` columns."""
  mask = np.zeros((40, 60), np.int64)
  mask[10:20, 10:20] = 1
  mask[10:20, 20 + gap:30 + gap] = 1
  return mask


def test_border_weights_peak_in_the_gap_between_touching_cells():
  mask = _two_squares(gap=2)
  w = bw.border_weight_map(mask)
  n0, n1 = (mask == 0).sum(), (mask == 1).sum()
  wc0, wc1 = mask.size / (2 * n0), mask.size / (2 * n1)       # 'balanced' w_c by hand
  # gap columns 20, 21: pixel (15, 20) is 1 px from the left square, 2 from the right one
  expected_gap = wc0 + 10.0 * math.exp(-(1 + 2) ** 2 / (2 * 5.0 ** 2))
  np.testing.assert_allclose(w[15, 20], expected_gap, rtol=1e-5)
  np.testing.assert_allclose(w[15, 21], expected_gap, rtol=1e-5)
  assert np.unravel_index(np.argmax(w), w.shape)[1] in (20, 21)
  np.testing.assert_allclose(w[39, 59], wc0, rtol=1e-6)      # far from both cells: w_c only
  np.testing.assert_allclose(w[mask == 1], wc1, rtol=1e-6)   # inside cells: w_c only
  # pixel (5, 9): nearest pixels (10, 10) of the left square and (10, 22) of the right one
  d1, d2 = math.hypot(5, 1), math.hypot(5, 13)
  np.testing.assert_allclose(w[5, 9], wc0 + 10 * math.exp(-(d1 + d2) ** 2 / 50), rtol=1e-5)


def _brute_force(mask, w0=10.0, sigma=5.0, sampling=None):
  cells, n = ndimage.label(mask == 1)
  d = np.sort(np.stack([ndimage.distance_transform_edt(cells != i, sampling=sampling)
                        for i in range(1, n + 1)]), axis=0)
  counts = np.bincount(mask.ravel(), minlength=2)
  wc = bw.balanced_class_weights(counts)[mask]
  term = w0 * np.exp(-(d[0] + d[1]) ** 2 / (2 * sigma ** 2))
  return np.where(cells == 0, wc + term, wc)


@pytest.mark.parametrize("shape,sampling", [((48, 56), None), ((12, 20, 22), (2.0, 1.0, 1.0))])
def test_border_weights_match_a_brute_force_map(shape, sampling):
  rng = np.random.default_rng(1)
  mask = (ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52).astype(np.int64)
  assert ndimage.label(mask)[1] >= 3
  w = bw.border_weight_map(mask, sampling=sampling)
  np.testing.assert_allclose(w, _brute_force(mask, sampling=sampling), atol=10 * bw.TRUNCATION)


def test_border_weights_ignore_label_and_given_class_weights():
  mask = _two_squares()
  mask[0:3, :] = 255
  w = bw.border_weight_map(mask, class_weights=[1.0, 2.0], ignore_label=255)
  assert np.all(w[0:3] == 0.0)
  np.testing.assert_allclose(w[39, 59], 1.0)
  np.testing.assert_allclose(w[15, 15], 2.0)
  np.testing.assert_allclose(bw.balanced_class_weights([30, 10, 0]), [2 / 3, 2.0, 0.0])


def test_constant_mode_fills_the_mask_with_the_ignore_label():
  image, mask = np.ones((20, 20, 1), np.float32), np.ones((20, 20), np.uint8)
  opts = sp.SpatialAugment(scale_range=(0.5, 0.5), mode="constant", ignore_label=255)
  i, m = sp.augment_pair(image, mask, np.random.default_rng(0), opts)
  assert m[0, 0] == 255 and m[10, 10] == 1 and i[0, 0, 0] == 0.0
  assert np.all(m[i[..., 0] > 0.99] == 1) and np.all(m[i[..., 0] < 0.01] == 255)
