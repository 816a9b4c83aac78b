"""Series of the UCR/UEA archive as the networks take them: z-normalisation, missing values,
and the ways series of unequal length become one length (``series_batch``'s ``lengths_mode``):

- 'archive_adjusted' — the UCR archive's adjusted files as the published table used them:
  missing values interpolated linearly, low-amplitude noise padded at the end, then the padded
  series z-normalised as a whole (the default for univariate datasets);
- 'resample' — linear interpolation onto the new length;
- 'resample_cubic' — a cubic spline onto the new length, the published table's treatment of
  the multivariate archive (the default for multivariate datasets).
The sources are quoted where these functions are defined.
"""
from __future__ import annotations

import numpy as np

# How series of unequal length become one (series_batch); the padding noise's amplitude in
# 'archive_adjusted' (our choice: the archive does not publish it; see below).
SERIES_LENGTHS = ("archive_adjusted", "resample", "resample_cubic")
PAD_NOISE_AMPLITUDE = 1e-3


def series_znorm(x: np.ndarray) -> np.ndarray:
  """Per-series, per-channel z-normalisation of float [L, C] over its observed (non-NaN)
  values; a constant channel becomes 0 (not 0/0). Missing values stay NaN."""
  x = np.asarray(x, np.float64)
  mean = np.nanmean(x, axis=0, keepdims=True) if x.size else 0.0
  std = np.nanstd(x, axis=0, keepdims=True) if x.size else 1.0
  std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
  return ((x - np.nan_to_num(mean)) / std).astype(np.float32)


def series_to_length(x: np.ndarray, length: int) -> np.ndarray:
  """float [L, C] -> float32 [length, C] by linear interpolation on a common [0, 1] time axis
  (the first and last samples are kept); L == length is returned unchanged."""
  x = np.asarray(x, np.float32)
  if len(x) == length:
    return x
  if len(x) == 1:
    return np.repeat(x, length, axis=0)
  src = np.linspace(0.0, 1.0, len(x))
  dst = np.linspace(0.0, 1.0, length)
  return np.stack([np.interp(dst, src, x[:, c]) for c in range(x.shape[1])],
                  axis=1).astype(np.float32)


def series_batch(series, *, length: int, znorm: bool, lengths_mode: str = "resample",
                 seed=0, pad_amplitude: float = PAD_NOISE_AMPLITUDE) -> np.ndarray:
  """Stored series (each float [L_i, C]) -> float32 [N, length, C], made one length the way
  ``lengths_mode`` names (SERIES_LENGTHS; see "series of unequal length" below):
  'resample' z-normalises per series over the observed values (``znorm``), sets missing values
  to 0 (the series mean when normalised) and resamples linearly (series_to_length);
  'resample_cubic' does the same with a cubic spline (series_resample_cubic);
  'archive_adjusted' fills missing values linearly, pads the end with noise to ``length``
  (``seed``, ``pad_amplitude``) and z-normalises the padded series as a whole."""
  if lengths_mode not in SERIES_LENGTHS:
    raise ValueError(f"unknown series lengths mode {lengths_mode!r}: valid options are "
                     f"{', '.join(SERIES_LENGTHS)}")
  out = np.zeros((len(series), length, series[0].shape[1] if len(series) else 1), np.float32)
  for i, x in enumerate(series):
    if lengths_mode == "archive_adjusted":
      out[i] = series_archive_adjusted(x, length, znorm=znorm, rng=series_pad_rng(seed, i),
                                       amplitude=pad_amplitude, index=i)
      continue
    x = series_znorm(x) if znorm else np.asarray(x, np.float32)
    resample = series_to_length if lengths_mode == "resample" else series_resample_cubic
    out[i] = resample(np.nan_to_num(x, nan=0.0), length)
  return out



# ------------------------------------------- series of unequal length: the reference protocols
#
# The published table (Ismail Fawaz et al. 2019, DMKD 33(4); code github.com/hfawaz/dl-4-tsc)
# made every dataset one length in two ways, by archive:
# - UCR 2018 (univariate): the archive's own "Missing_value_and_variable_length_datasets_
#   adjusted" files (its README: "Missing values are treated with linear interpolation" and
#   "Variable lengths are reconciled by padding low amplitude random noise to the end of each
#   time series to the length of the longest time series"), read by utils.read_dataset, which
#   z-normalises every row as a whole (x - x.mean(axis=1)) / x.std(axis=1), a zero std taken
#   as 1, padding included: 'archive_adjusted'.
# - MTS archive (multivariate, e.g. JapaneseVowels): utils.transform_to_same_length resamples
#   each channel to the longest length of train and test with scipy's interp1d(kind='cubic')
#   on linspace(0, L-1, longest), and read_dataset does not normalise: 'resample_cubic'.
# The noise's distribution and amplitude are not documented; uniform [0, PAD_NOISE_AMPLITUDE)
# in the series' raw units is this project's choice. Once z-normalised it only sets the
# padding's constant level (about -mean/std of the padded series) and a spread of
# amplitude/std, so any low amplitude gives the network nearly the same input.

class SeriesLengthError(ValueError):
  """A series longer than the length that 'archive_adjusted' pads to (padding cannot shorten)."""


def series_lengths_default(channels: int) -> str:
  """The reference's rule: univariate -> 'archive_adjusted', multivariate -> 'resample_cubic'."""
  return "archive_adjusted" if int(channels) == 1 else "resample_cubic"


def series_pad_rng(seed, index: int) -> np.random.Generator:
  """The noise generator of series ``index``: a function of (seed, index) only, so a series'
  padding does not depend on the batch it is made in. ``seed``: int or tuple of ints."""
  entropy = list(seed) if isinstance(seed, (tuple, list)) else int(seed)
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=(index,))))


def series_fill_missing(x: np.ndarray) -> np.ndarray:
  """float [L, C] -> float64 [L, C]: each channel's NaNs linearly interpolated between the
  nearest observed samples; a leading or trailing gap takes the nearest observed value (the
  archive does not say how it treats gaps at the ends); an all-missing channel becomes 0."""
  x = np.array(x, np.float64)
  t = np.arange(len(x))
  for c in range(x.shape[1]):
    seen = ~np.isnan(x[:, c])
    if not seen.all():
      x[:, c] = np.interp(t, t[seen], x[seen, c]) if seen.any() else 0.0
  return x


def series_pad_noise(x: np.ndarray, length: int, rng: np.random.Generator,
                     amplitude: float = PAD_NOISE_AMPLITUDE, index: int = 0) -> np.ndarray:
  """float [L, C] -> float64 [length, C]: the series, then length - L rows of noise drawn
  uniform in [0, amplitude) (row after row, channels within a row)."""
  x = np.asarray(x, np.float64)
  if len(x) > length:
    raise SeriesLengthError(f"series {index} has length {len(x)}, longer than {length}: "
                            "'archive_adjusted' only pads (use the longest length, or resample)")
  noise = rng.uniform(0.0, amplitude, size=(length - len(x), x.shape[1]))
  return np.concatenate([x, noise], axis=0)


def series_archive_adjusted(x: np.ndarray, length: int, *, znorm: bool, rng, amplitude: float =
                            PAD_NOISE_AMPLITUDE, index: int = 0) -> np.ndarray:
  """One series as the reference fed it: missing values filled (series_fill_missing), noise
  padded to ``length`` (series_pad_noise), then z-normalised over all ``length`` values."""
  padded = series_pad_noise(series_fill_missing(x), length, rng, amplitude, index)
  return series_znorm(padded) if znorm else padded.astype(np.float32)


def series_resample_cubic(x: np.ndarray, length: int) -> np.ndarray:
  """float [L, C] -> float32 [length, C] by the not-a-knot cubic spline through the samples
  (what scipy's interp1d(kind='cubic') computes) at linspace(0, L-1, length); L == length is
  returned unchanged, L < 4 (too few for a cubic) is resampled linearly."""
  x = np.asarray(x, np.float64)
  if len(x) == length or len(x) < 4:
    return series_to_length(x, length)
  from scipy.interpolate import make_interp_spline
  spline = make_interp_spline(np.arange(len(x)), x, k=3, axis=0)
  return spline(np.linspace(0.0, len(x) - 1.0, length)).astype(np.float32)
