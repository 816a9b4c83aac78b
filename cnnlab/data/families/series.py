"""Time series of the UCR/UEA archive (``ucr/<Name>``), held in memory as float32 [N, L, C].

Preprocess 'znorm_univariate' (default: univariate series z-normalised per series, multivariate
ones kept as given — our reading of Ismail Fawaz et al. 2019's code), 'znorm' (every series per
channel) or 'raw'. Series are brought to ``series_length`` (default: the dataset's longest
series) as ``series_lengths`` says (cnnlab/data/series_prep.py): 'archive_adjusted' (default
for univariate datasets: the UCR archive's adjusted files — missing values interpolated, noise
padded at the end from ``pad_seed``, the padded series z-normalised), 'resample_cubic'
(default for multivariate ones, as the published table's code) or 'resample' (linear). The
padding noise of split S is drawn from (pad_seed, crc32(S)), fixed across runs and seeds, as
the archive's adjusted files are. No augmentation (the published protocol uses none).
"""
from __future__ import annotations

import zlib

import numpy as np

from cnnlab.config import fail
from cnnlab.data import memory, series_prep
from cnnlab.data.families.base import Family, identity

PREPROCESS = ("znorm_univariate", "znorm", "raw")


class Series(Family):
  name = "series"
  preprocess_options = PREPROCESS
  reads = frozenset({"series_length", "series_lengths", "pad_seed"})
  feature = "series"

  def stored_shape(self, metadata):
    return (int(metadata["max_length"]), int(metadata["channels"]))

  def check(self, opts, facts):
    length = opts["series_length"]
    if length is None:
      length = int(facts.stored_shape[0])
    elif not isinstance(length, int) or length < 1:
      fail("dataset.series_length", length, "must be a positive integer (or None for the "
           f"dataset's longest series, {facts.stored_shape[0]})")
    mode = opts["series_lengths"] or series_prep.series_lengths_default(facts.stored_shape[-1])
    if mode not in series_prep.SERIES_LENGTHS:
      fail("dataset.series_lengths", mode, f"one of {', '.join(series_prep.SERIES_LENGTHS)}")
    if mode == "archive_adjusted" and length < int(facts.stored_shape[0]):
      fail("dataset.series_length", length, "'archive_adjusted' pads and cannot shorten: at "
           f"least the longest series ({facts.stored_shape[0]}), or series_lengths='resample'")
    return {**opts, "series_length": int(length), "series_lengths": mode}

  def input_shape(self, opts, facts):
    return (int(opts["series_length"]), int(facts.stored_shape[-1]))

  def znorm(self, opts, facts) -> bool:
    mode = opts["preprocess"]
    return mode == "znorm" or (mode == "znorm_univariate" and int(facts.stored_shape[-1]) == 1)

  def load(self, builder, split, opts, facts):
    raw, labels = memory.load_split(builder, split, feature=self.feature)
    return self.batch(raw, opts, facts, split), labels

  def batch(self, raw, opts, facts, split: str) -> np.ndarray:
    return series_prep.series_batch(
        raw, length=int(opts["series_length"]), znorm=self.znorm(opts, facts),
        lengths_mode=opts["series_lengths"],
        seed=(int(opts["pad_seed"]), zlib.crc32(split.encode())))

  def transform(self, opts, facts, *, train, mean_image=None):
    return identity

  def eval_inputs(self, raw, opts, facts, *, mean_image=None):
    channels = int(facts.stored_shape[-1])
    for i, x in enumerate(raw):
      if np.ndim(x) != 2 or np.shape(x)[1] != channels or len(x) < 1:
        raise ValueError(f"series {i} has shape {np.shape(x)}; {facts.name} takes (length, "
                         f"{channels})")
    return self.batch([np.asarray(x, np.float32) for x in raw], opts, facts, "predict")
