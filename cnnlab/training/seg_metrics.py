"""Segmentation metrics as sums: add them over batches, devices and hosts, then score the totals.

Data-parallel evaluation needs every quantity to be a plain sum, so an eval step returns
``counts(logits, labels, ...)`` — integer counts per class — and the loop adds them (in int64 on
the host: ``accumulate``); ``scores(totals)`` turns the totals into metrics once, at the end:

    totals = None
    for batch in eval_batches:
      totals = accumulate(totals, eval_step(state, batch))   # eval_step returns counts(...)
    report = scores(totals)            # {'dice': [K], 'iou': [K], 'mean_dice': ..., ...}

Counts, over the valid pixels (not the ignore label, inside the padding mask — per example (N,) or
per pixel (N, *S); see cnnlab.training.seg_losses), with pred = argmax of the logits:
  intersection[k]  pixels with pred == k and label == k   (true positives)
  predicted[k]     pixels with pred == k
  true[k]          pixels with label == k
  pixels           valid pixels; errors: valid pixels with pred != label
Per-batch counts are int32 (exact up to 2^31 pixels per batch).

Scores from the totals, per class k:
  dice[k] = 2 I / (P + T)      iou[k] = I / (P + T - I)     (Jaccard)
  pixel_error = errors / pixels (1 - pixel accuracy: the ISBI 2012 challenge's "pixel error")
A class absent from both the labels and the predictions (P + T = 0) has no Dice / IoU: NaN,
left out of ``mean_dice`` / ``mean_iou`` (as MONAI's DiceMetric(ignore_empty=True) leaves out
empty cases). A class predicted but absent from the labels scores 0 (MONAI's ignore_empty would
give NaN there; a false positive is an error worth counting). ``include_background=False`` leaves
class 0 out of the means.

``per_example=True`` keeps the counts per image / volume, (N, K): ``scores`` on them gives per-
image Dice, and ``mean_over_examples`` the mean of per-image scores (MONAI's DiceMetric
reduction 'mean'), which weighs a small structure in one image like a large one in another —
the dataset-level totals weigh every pixel alike.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.training.seg_losses import valid_pixels

COUNT_KEYS = ("intersection", "predicted", "true", "pixels", "errors")


def counts(logits, labels, *, ignore_label: int | None = None, mask=None,
           per_example: bool = False) -> dict:
  """int32 counts (see the module docstring) of one batch: logits (N, *S, K), labels (N, *S).
  Class arrays are (K,), or (N, K) with ``per_example``; pixels / errors () or (N,)."""
  if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits shape {logits.shape} and labels shape {labels.shape} do not pair;"
                     " expected logits (N, *S, K) and labels (N, *S)")
  k = logits.shape[-1]
  valid = valid_pixels(labels, ignore_label, mask) > 0
  pred = jnp.argmax(logits, axis=-1)
  truth = jnp.where(valid, labels, 0)
  pred_hot = jax.nn.one_hot(pred, k, dtype=jnp.bool_) & valid[..., None]
  true_hot = jax.nn.one_hot(truth, k, dtype=jnp.bool_) & valid[..., None]
  axes = tuple(range(1 if per_example else 0, labels.ndim))
  total = lambda x: jnp.sum(x, axis=axes, dtype=jnp.int32)
  return {"intersection": total(pred_hot & true_hot), "predicted": total(pred_hot),
          "true": total(true_hot), "pixels": total(valid),
          "errors": total(valid & (pred != truth))}


def accumulate(totals: Mapping | None, batch_counts: Mapping) -> dict:
  """totals + batch_counts, in int64 NumPy (``totals`` None starts a sum). Per-example counts
  are concatenated along the example axis instead of added."""
  new = {key: np.asarray(batch_counts[key]).astype(np.int64) for key in COUNT_KEYS}
  if totals is None:
    return new
  if np.ndim(new["pixels"]) == 1:
    return {key: np.concatenate([totals[key], new[key]]) for key in COUNT_KEYS}
  return {key: totals[key] + new[key] for key in COUNT_KEYS}


def _ratio(num, den) -> np.ndarray:
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  out = np.full(np.broadcast(num, den).shape, np.nan)
  np.divide(num, den, out=out, where=den > 0)
  return out


def _nanmean(x: np.ndarray, axis=-1):
  """Mean over ``axis`` ignoring NaN; NaN where every entry is NaN (no warning)."""
  kept = ~np.isnan(x)
  return _ratio(np.where(kept, x, 0.0).sum(axis=axis), kept.sum(axis=axis))


def scores(totals: Mapping, include_background: bool = True) -> dict:
  """Per-class dice / iou, mean_dice / mean_iou over classes, pixel_error and pixel_accuracy
  from summed counts (NumPy float64; NaN where undefined, see the module docstring)."""
  inter, pred, true = (np.asarray(totals[k], np.float64) for k in ("intersection", "predicted",
                                                                   "true"))
  dice = _ratio(2.0 * inter, pred + true)
  iou = _ratio(inter, pred + true - inter)
  first = 0 if include_background else 1
  error = _ratio(totals["errors"], totals["pixels"])
  return {"dice": dice, "iou": iou, "mean_dice": _nanmean(dice[..., first:]),
          "mean_iou": _nanmean(iou[..., first:]), "pixel_error": error,
          "pixel_accuracy": 1.0 - error}


def mean_over_examples(per_example_totals: Mapping, include_background: bool = True) -> dict:
  """Per-image scores averaged over images (NaN entries left out): dice / iou per class (K,),
  mean_dice, mean_iou, pixel_error. Examples without any valid pixel are left out."""
  s = scores(per_example_totals, include_background)
  return {key: _nanmean(np.asarray(value), axis=0) for key, value in s.items()}
