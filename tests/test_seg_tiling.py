"""Tiled inference (cnnlab.training.tiling): tiles blended back give what the whole input gives,
where the model lets both agree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from cnnlab.training import tiling

K = 3


def _pixel_model(seed=0, channels=2):
  """A per-pixel 'network' (1x1 layers): any tiling must reproduce it exactly."""
  rng = np.random.default_rng(seed)
  w1, w2 = rng.normal(size=(channels, 5)), rng.normal(size=(5, K))
  return lambda x: (np.tanh(np.asarray(x, np.float64) @ w1) @ w2).astype(np.float32)


def _recording(apply):
  """``apply`` that also records every batch shape it was called with."""
  seen = []
  def wrapped(tiles):
    seen.append(tiles.shape)
    return apply(tiles)
  return wrapped, seen


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("shape,tile,overlap", [((37, 50), 16, 0.25), ((45, 33), (12, 20), 0.5),
                                                ((9, 13, 11), 8, 0.25)])
def test_sliding_window_equals_whole_image_for_a_per_pixel_model(shape, tile, overlap, blend):
  image = np.random.default_rng(1).normal(size=shape + (2,)).astype(np.float32)
  model = _pixel_model()
  apply, seen = _recording(model)
  got = tiling.sliding_window(image, apply, tile, overlap=overlap, blend=blend, tile_batch=3)
  assert got.shape == shape + (K,) and got.dtype == np.float32
  np.testing.assert_allclose(got, model(image), rtol=1e-5, atol=1e-5)
  assert len(set(seen)) == 1 and seen[0][0] == 3          # one shape: one compile


def test_sliding_window_probabilities_are_blended_softmaxes():
  image = np.random.default_rng(2).normal(size=(20, 30, 2)).astype(np.float32)
  model = _pixel_model(seed=1)
  got = tiling.sliding_window(image, model, 8, overlap=0.5, blend="gaussian",
                              output="probabilities")
  z = model(image)
  want = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _same_conv(kernel):
  """Zero-padded 'same' convolution as a jitted JAX model: translation equivariant."""
  @jax.jit
  def apply(x):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return apply


def test_small_input_padded_to_one_tile_equals_the_whole_input_conv():
  """An image smaller than the tile is zero-padded at the far end, which is exactly the zero
  border a 'same' convolution of the whole image sees."""
  rng = np.random.default_rng(3)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 2, K)), jnp.float32)
  image = rng.normal(size=(10, 13, 2)).astype(np.float32)
  apply = _same_conv(kernel)
  for blend in ("constant", "gaussian"):
    got = tiling.sliding_window(image, apply, (16, 16), blend=blend, tile_batch=2)
    np.testing.assert_allclose(got, np.asarray(apply(image[None]))[0], rtol=1e-5, atol=1e-5)


def test_gaussian_importance_map():
  w = tiling.importance_map((9, 12), "gaussian", sigma_scale=0.125)
  assert w.shape == (9, 12) and w.max() == 1.0
  np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)          # symmetric about the centre
  # centre (4, 5.5), sigma (1.125, 1.5) px; the peak pixels sit 0.5 px off the centre in x
  g = lambda d, s: np.exp(-d ** 2 / (2 * s ** 2))
  np.testing.assert_allclose(w[0, 0], g(4, 1.125) * g(5.5, 1.5) / g(0.5, 1.5), rtol=1e-5)
  assert np.all(tiling.importance_map((5, 5, 5), "gaussian", sigma_scale=0.01) > 0)


def test_tile_starts_cover_the_axis_and_end_on_the_border():
  assert tiling.tile_starts(10, 4, 0.5) == [0, 2, 4, 6]
  assert tiling.tile_starts(11, 4, 0.25) == [0, 3, 6, 7]
  assert tiling.tile_starts(8, 8, 0.25) == [0]


def _valid_conv_model(kernels):
  """Two stacked valid convolutions (margin = sum of half-widths per side), per channel sum."""
  def apply(tiles):
    out = []
    for t in np.asarray(tiles, np.float64):
      x = t.sum(-1)
      for k in kernels:
        x = ndimage.correlate(x, k, mode="constant")
        x = x[tuple(slice(s // 2, n - s // 2) for s, n in zip(k.shape, x.shape))]
      out.append(np.stack([x, np.tanh(x), -x], axis=-1))
    return np.stack(out).astype(np.float32)
  return apply


@pytest.mark.parametrize("shape,out_tile", [((23, 30), 8), ((17, 9), (6, 10)),
                                            ((7, 10, 9), 4)])
def test_overlap_tile_equals_the_valid_network_on_the_mirrored_image(shape, out_tile):
  rng = np.random.default_rng(4)
  rank = len(shape)
  kernels = [rng.normal(size=(3,) * rank), rng.normal(size=(5,) * rank)]
  margin = 1 + 2
  image = rng.normal(size=shape + (2,)).astype(np.float32)
  model = _valid_conv_model(kernels)
  apply, seen = _recording(model)
  got = tiling.overlap_tile(image, apply, out_tile, margin, tile_batch=2)
  mirrored = np.pad(image, [(margin, margin)] * rank + [(0, 0)], mode="reflect")
  want = model(mirrored[None])[0]
  assert got.shape == shape + (3,) and want.shape == got.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert len(set(seen)) == 1
  symmetric = tiling.overlap_tile(image, model, out_tile, margin, pad_mode="symmetric")
  assert not np.allclose(symmetric, got, atol=1e-3)     # the border extension does matter


def test_wrong_apply_output_and_bad_options_are_one_line_errors():
  image = np.zeros((20, 20, 1), np.float32)
  with pytest.raises(tiling.TilingError, match="apply returned shape"):
    tiling.overlap_tile(image, lambda t: np.zeros(t.shape[:-1] + (2,)), 8, 2)
  with pytest.raises(tiling.TilingError, match="overlap"):
    tiling.sliding_window(image, lambda t: t, 8, overlap=1.0)
  with pytest.raises(tiling.TilingError, match="blend"):
    tiling.sliding_window(image, lambda t: t, 8, blend="linear")
  with pytest.raises(tiling.TilingError, match="tile="):
    tiling.sliding_window(image, lambda t: t, (8, 8, 8))
