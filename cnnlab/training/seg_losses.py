"""Segmentation losses: per-pixel cross-entropy, soft Dice, and their sum.

Logits are channels-last, (N, *S, K) with S = (H, W) or (D, H, W); labels are integers (N, *S).
Everything is jnp, jit-able and computed in float32 whatever the logits' dtype.

Which pixels count (``valid``): not the ignore label, and inside the padding mask. ``mask`` is
either per example (N,) — the padded eval batch's mask — or per pixel (N, *S). A pixel that does
not count contributes nothing to a loss nor to its normalisation; its label may be anything (an
ignore label of 255 never reaches ``one_hot``).

Cross-entropy (``cross_entropy``): ce(x) = -log softmax(logits(x))[label(x)], weighted per pixel by
w(x) = class_weights[label(x)] * pixel_weights(x) (U-Net's eq. 1 with the weight map of eq. 2, see
cnnlab.data.border_weights). Reduction:
  'weighted_mean'  sum(w ce) / sum(w) — torch.nn.CrossEntropyLoss(weight=...)'s mean (default);
  'mean'           sum(w ce) / (number of valid pixels): weights scale the loss itself;
  'sum'            sum(w ce).
An empty batch (no valid pixel) gives 0, not NaN.

Soft Dice (``soft_dice_loss``), as MONAI's DiceLoss(softmax=True, to_onehot_y=True): with
p = softmax(logits), y = one_hot(labels), sums over the valid pixels of one example (or of the
whole batch with ``batch=True``), per class k:
    dice_k = (2 sum(p_k y_k) + smooth_nr) / (sum(p_k) + sum(y_k) + smooth_dr)
(``squared=True``: sum(p_k^2) + sum(y_k^2) in the denominator, V-Net's form, Milletari et al.
2016, eq. 1), loss = 1 - mean over classes (and examples) of dice_k. ``smooth_nr = smooth_dr =
1e-5`` are MONAI's defaults: they keep a class absent from an example's labels AND predictions at
dice 1 (loss 0) instead of 0/0, and barely move any other term. ``include_background=False`` drops
class 0 from the mean. Examples with no valid pixel (the padding of an eval batch) are left out of
the mean over examples.

Dice + CE (``dice_ce_loss``): lambda_dice * soft Dice + lambda_ce * cross-entropy (MONAI's
DiceCELoss; both lambdas 1 by default).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

# MONAI DiceLoss defaults (monai.losses.DiceLoss: smooth_nr=1e-5, smooth_dr=1e-5).
SMOOTH_NR = 1e-5
SMOOTH_DR = 1e-5
REDUCTIONS = ("weighted_mean", "mean", "sum")


def _check_shapes(logits, labels) -> None:
  if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits shape {logits.shape} and labels shape {labels.shape} do not pair;"
                     " expected logits (N, *S, K) and labels (N, *S)")


def valid_pixels(labels, ignore_label: int | None = None, mask=None):
  """float32 (N, *S): 1 where a pixel counts (not ignored, inside the padding mask)."""
  valid = jnp.ones(labels.shape, jnp.float32)
  if ignore_label is not None:
    valid = valid * (labels != ignore_label)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.ndim == 1:
      mask = mask.reshape(mask.shape + (1,) * (labels.ndim - 1))
    if mask.ndim != labels.ndim:
      raise ValueError(f"mask shape {mask.shape}: expected (N,) or the labels' {labels.shape}")
    valid = valid * mask.astype(jnp.float32)
  return valid


def _safe_labels(labels, valid):
  """Labels with every non-counting pixel set to 0 (a valid class index)."""
  return jnp.where(valid > 0, labels, 0).astype(jnp.int32)


def pixel_cross_entropy(logits, labels, valid):
  """Unweighted -log softmax[label] per pixel (N, *S), 0 where ``valid`` is 0."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  safe = _safe_labels(labels, valid)
  ce = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
  return ce * valid


def _divide(num, den):
  """num / den, and 0 where den == 0 (with a finite gradient)."""
  safe = jnp.where(den > 0, den, 1.0)
  return jnp.where(den > 0, num / safe, 0.0)


def cross_entropy(logits, labels, *, class_weights: Sequence[float] | None = None,
                  pixel_weights=None, ignore_label: int | None = None, mask=None,
                  reduction: str = "weighted_mean"):
  """Scalar softmax cross-entropy over the valid pixels (see the module docstring)."""
  _check_shapes(logits, labels)
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}")
  valid = valid_pixels(labels, ignore_label, mask)
  weights = valid
  if class_weights is not None:
    cw = jnp.asarray(class_weights, jnp.float32)
    if cw.shape != (logits.shape[-1],):
      raise ValueError(f"class_weights shape {cw.shape}; expected ({logits.shape[-1]},)")
    weights = weights * cw[_safe_labels(labels, valid)]
  if pixel_weights is not None:
    weights = weights * jnp.asarray(pixel_weights, jnp.float32)
  total = jnp.sum(weights * pixel_cross_entropy(logits, labels, valid))
  if reduction == "sum":
    return total
  return _divide(total, jnp.sum(weights if reduction == "weighted_mean" else valid))


def dice_terms(probs, labels, valid, *, batch: bool = False, squared: bool = False):
  """(intersection, denominator) per example and class, (N, K) — or (1, K) with ``batch``."""
  onehot = jax.nn.one_hot(_safe_labels(labels, valid), probs.shape[-1], dtype=jnp.float32)
  p, y = probs * valid[..., None], onehot * valid[..., None]
  axes = tuple(range(0 if batch else 1, probs.ndim - 1))
  inter = jnp.sum(p * y, axis=axes)
  den = jnp.sum(p * p + y, axis=axes) if squared else jnp.sum(p + y, axis=axes)
  if batch:
    inter, den = inter[None], den[None]
  return inter, den


def soft_dice_loss(logits, labels, *, ignore_label: int | None = None, mask=None,
                   include_background: bool = True, batch: bool = False,
                   squared: bool = False, smooth_nr: float = SMOOTH_NR,
                   smooth_dr: float = SMOOTH_DR):
  """Scalar 1 - mean soft Dice over classes and examples (see the module docstring)."""
  _check_shapes(logits, labels)
  valid = valid_pixels(labels, ignore_label, mask)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  inter, den = dice_terms(probs, labels, valid, batch=batch, squared=squared)
  dice = (2.0 * inter + smooth_nr) / (den + smooth_dr)
  if not include_background:
    dice = dice[:, 1:]
  axes = tuple(range(1, valid.ndim))
  has_pixels = jnp.sum(valid, axis=axes) > 0 if not batch else jnp.sum(valid)[None] > 0
  per_example = jnp.mean(dice, axis=-1)
  kept = has_pixels.astype(jnp.float32)
  return _divide(jnp.sum(kept * (1.0 - per_example)), jnp.sum(kept))


def dice_ce_loss(logits, labels, *, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
                 class_weights=None, pixel_weights=None, ignore_label: int | None = None,
                 mask=None, include_background: bool = True, batch: bool = False,
                 reduction: str = "weighted_mean"):
  """lambda_dice * soft_dice_loss + lambda_ce * cross_entropy on the same valid pixels."""
  dice = soft_dice_loss(logits, labels, ignore_label=ignore_label, mask=mask,
                        include_background=include_background, batch=batch)
  ce = cross_entropy(logits, labels, class_weights=class_weights, pixel_weights=pixel_weights,
                     ignore_label=ignore_label, mask=mask, reduction=reduction)
  return lambda_dice * dice + lambda_ce * ce
