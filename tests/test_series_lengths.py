"""Series of unequal length and missing values made one length (series_prep.series_batch's
lengths_mode): the archive's adjustment (noise padded at the end, the padded series
z-normalised as a whole, missing values interpolated linearly), the linear resampling kept as
an option, and the cubic resampling of the multivariate archive — on .ts files the tests write
(read by cnnlab.datasets.ucr) and on the real files of ../shared/datasets/ucr."""
import os

import numpy as np
import pytest

from cnnlab.data import series_prep
from cnnlab.datasets import ucr

SHARED_UCR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                          "shared", "datasets", "ucr")
AMP = series_prep.PAD_NOISE_AMPLITUDE

# Univariate, unequal lengths (7, 4, 5), one missing value in the third series.
VARIABLE = """@problemName Var
@univariate true
@equalLength false
@missing true
@classLabel true a b
@data
3,5,4,8,6,7,9:a
10,12,11,15:b
2,?,6,5,1:a
"""


def read(tmp_path, text, name="Var"):
  path = tmp_path / f"{name}_TRAIN.ts"
  path.write_text(text)
  return ucr.read_ts(str(path)).series


def adjusted(series, length=7, seed=0, znorm=True):
  return series_prep.series_batch(series, length=length, znorm=znorm,
                                 lengths_mode="archive_adjusted", seed=seed)


def plain_padding(series_i, index, length, seed):
  """The padding recipe written out on its own: uniform [0, AMP) from the series' own stream."""
  gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
  return gen.uniform(0.0, AMP, size=length - len(series_i))


def test_archive_adjusted_pads_the_end_and_znormalises_the_padded_series(tmp_path):
  series = read(tmp_path, VARIABLE)
  out = adjusted(series)
  assert out.shape == (3, 7, 1) and out.dtype == np.float32
  short = series[1][:, 0].astype(np.float64)                  # length 4: 3 padded samples
  padded = np.concatenate([short, plain_padding(short, 1, 7, 0)])
  want = (padded - padded.mean()) / padded.std()              # over all 7 values, ddof 0
  np.testing.assert_allclose(out[1, :, 0], want, rtol=1e-6, atol=1e-6)
  # the first and last padded values, and the observed part, pinned against the recipe
  assert out[1, 4, 0] == pytest.approx(want[4], abs=1e-6)
  assert out[1, 6, 0] == pytest.approx(want[6], abs=1e-6)
  # the whole padded series has mean 0 and std 1; the observed part alone does not
  assert abs(out[1, :, 0].mean()) < 1e-6 and out[1, :, 0].std() == pytest.approx(1.0, abs=1e-5)
  assert abs(out[1, :4, 0].mean()) > 0.5
  # the padding sits near the raw zero level, -mean/std, with a spread under AMP/std
  tail = out[1, 4:, 0]
  assert np.all(tail >= -padded.mean() / padded.std() - 1e-6)
  assert np.ptp(tail) < AMP / padded.std()
  # the longest series is not padded: it is z-normalised on its own
  np.testing.assert_allclose(out[0], series_prep.series_znorm(series[0]), rtol=1e-6)


def test_padding_is_deterministic_per_series_and_seed(tmp_path):
  series = read(tmp_path, VARIABLE)
  np.testing.assert_array_equal(adjusted(series, seed=0), adjusted(series, seed=0))
  assert not np.array_equal(adjusted(series, seed=0)[1], adjusted(series, seed=1)[1])
  assert not np.array_equal(adjusted(series, seed=(0, 1))[1], adjusted(series, seed=0)[1])
  # a series' padding does not depend on the other series of the batch
  other = [series[0] * 3.0, series[1], series[2][:2]]
  np.testing.assert_array_equal(adjusted(series)[1], adjusted(other)[1])


def test_padding_noise_is_uniform_with_the_documented_amplitude():
  rng = series_prep.series_pad_rng(0, 0)
  pad = series_prep.series_pad_noise(np.zeros((0, 1)), 20000, rng)[:, 0]
  assert pad.min() >= 0.0 and pad.max() < AMP
  assert pad.mean() == pytest.approx(AMP / 2, abs=4 * AMP / np.sqrt(12 * len(pad)))
  assert pad.var() == pytest.approx(AMP ** 2 / 12, rel=0.05)
  hist, _ = np.histogram(pad, bins=10, range=(0.0, AMP))
  assert hist.min() > 0.9 * len(pad) / 10


def test_missing_values_are_interpolated_linearly_before_padding(tmp_path):
  series = read(tmp_path, VARIABLE)
  np.testing.assert_array_equal(series_prep.series_fill_missing(series[2])[:, 0],
                                [2, 4, 6, 5, 1])
  gaps = np.array([[np.nan], [np.nan], [2.0], [np.nan], [8.0], [np.nan]])
  np.testing.assert_array_equal(series_prep.series_fill_missing(gaps)[:, 0], [2, 2, 2, 5, 8, 8])
  np.testing.assert_array_equal(series_prep.series_fill_missing(np.full((3, 1), np.nan)), 0.0)
  out = adjusted(series)
  filled = np.concatenate([[2, 4, 6, 5, 1], plain_padding(series[2], 2, 7, 0)])
  np.testing.assert_allclose(out[2, :, 0], (filled - filled.mean()) / filled.std(),
                             rtol=1e-6, atol=1e-6)


def test_raw_mode_pads_without_normalising(tmp_path):
  series = read(tmp_path, VARIABLE)
  out = adjusted(series, znorm=False)
  np.testing.assert_array_equal(out[1, :4, 0], [10, 12, 11, 15])
  assert np.all((out[1, 4:, 0] >= 0) & (out[1, 4:, 0] < AMP))


def test_resample_option_is_unchanged(tmp_path):
  series = read(tmp_path, VARIABLE)
  old = np.stack([series_prep.series_to_length(
      np.nan_to_num(series_prep.series_znorm(x), nan=0.0), 9) for x in series])
  np.testing.assert_array_equal(series_prep.series_batch(series, length=9, znorm=True), old)
  np.testing.assert_array_equal(
      series_prep.series_batch(series, length=9, znorm=True, lengths_mode="resample"), old)


def test_cubic_resampling_is_scipys_interp1d_cubic():
  from scipy.interpolate import interp1d
  rng = np.random.default_rng(3)
  x = rng.normal(size=(11, 3))
  got = series_prep.series_resample_cubic(x, 29)
  idx = np.arange(len(x))                     # dl-4-tsc utils.transform_to_same_length
  want = np.stack([interp1d(idx, x[:, c], kind="cubic")(np.linspace(0, idx.max(), 29))
                   for c in range(3)], axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[[0, -1]], x[[0, -1]], rtol=1e-6)
  np.testing.assert_allclose(series_prep.series_resample_cubic(x[:3], 7),
                             series_prep.series_to_length(x[:3], 7))


def test_default_rule_and_bad_input(tmp_path):
  assert series_prep.series_lengths_default(1) == "archive_adjusted"
  assert series_prep.series_lengths_default(12) == "resample_cubic"
  series = read(tmp_path, VARIABLE)
  with pytest.raises(series_prep.SeriesLengthError, match="series 0 has length 7, longer than 5"):
    adjusted(series, length=5)
  with pytest.raises(ValueError, match="valid options are archive_adjusted, resample"):
    series_prep.series_batch(series, length=7, znorm=True, lengths_mode="pad")


@pytest.mark.skipif(not os.path.isdir(SHARED_UCR), reason="../shared/datasets/ucr not present")
@pytest.mark.parametrize("name", ["GunPoint", "ArrowHead"])
def test_equal_length_archive_data_is_unchanged_by_the_adjustment(name):
  series = ucr.read_ts(os.path.join(SHARED_UCR, name, f"{name}_TRAIN.ts")).series
  length = len(series[0])
  np.testing.assert_array_equal(
      series_prep.series_batch(series, length=length, znorm=True, lengths_mode="archive_adjusted"),
      series_prep.series_batch(series, length=length, znorm=True, lengths_mode="resample"))


@pytest.mark.skipif(not os.path.isdir(SHARED_UCR), reason="../shared/datasets/ucr not present")
def test_japanese_vowels_cubic_matches_the_reference_resampling():
  from scipy.interpolate import interp1d
  series = ucr.read_ts(os.path.join(SHARED_UCR, "JapaneseVowels",
                                    "JapaneseVowels_TRAIN.ts")).series[:40]
  out = series_prep.series_batch(series, length=29, znorm=False, lengths_mode="resample_cubic")
  for x, got in zip(series, out):
    idx = np.arange(len(x))
    want = np.stack([interp1d(idx, x[:, c].astype(np.float64), kind="cubic")(
        np.linspace(0, idx.max(), 29)) for c in range(x.shape[1])], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
