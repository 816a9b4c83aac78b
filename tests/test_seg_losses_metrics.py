"""Segmentation losses (cnnlab.training.seg_losses) and metrics (cnnlab.training.seg_metrics)
against loops and hand computations."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab.training import seg_losses as L
from cnnlab.training import seg_metrics as M

IGNORE = 255


def _jit(fn, **kwargs):
  """The function with its keyword options fixed, jitted: one compile instead of many eager
  dispatches (what a train step does too)."""
  return jax.jit(functools.partial(fn, **kwargs))


def _batch(shape=(2, 5, 6), k=3, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=shape + (k,)).astype(np.float32) * 2
  labels = rng.integers(0, k, size=shape)
  labels[rng.random(shape) < 0.2] = IGNORE
  return logits, labels


def _ce_loop(logits, labels, class_weights, pixel_weights, example_mask):
  """float64 reference: weighted CE summed by a loop over pixels."""
  num = den = count = 0.0
  for idx in np.ndindex(labels.shape):
    if labels[idx] == IGNORE or not example_mask[idx[0]]:
      continue
    z = logits[idx].astype(np.float64)
    ce = math.log(np.exp(z).sum()) - z[labels[idx]]
    w = class_weights[labels[idx]] * pixel_weights[idx]
    num, den, count = num + w * ce, den + w, count + 1
  return num, den, count


def test_cross_entropy_with_class_weights_weight_map_ignore_and_padding_matches_a_loop():
  logits, labels = _batch()
  cw = np.array([0.5, 2.0, 1.5])
  pw = np.random.default_rng(1).uniform(0.5, 3.0, labels.shape)
  example_mask = np.array([True, False])
  num, den, count = _ce_loop(logits, labels, cw, pw, example_mask)
  kw = dict(class_weights=cw, pixel_weights=pw, ignore_label=IGNORE, mask=example_mask)
  for reduction, expected in (("weighted_mean", num / den), ("mean", num / count),
                              ("sum", num)):
    loss = _jit(L.cross_entropy, reduction=reduction, **kw)
    np.testing.assert_allclose(loss(logits, labels), expected, rtol=1e-5)


def test_cross_entropy_of_an_all_ignored_batch_is_zero_with_finite_gradient():
  logits, labels = _batch()
  labels[:] = IGNORE
  value, grad = jax.jit(jax.value_and_grad(
      lambda z: L.dice_ce_loss(z, labels, ignore_label=IGNORE)))(jnp.asarray(logits))
  assert float(value) == 0.0 and np.all(np.isfinite(grad)) and not np.any(grad)


def test_soft_dice_on_a_two_pixel_case_by_hand():
  # softmax([0, 0]) = (1/2, 1/2); softmax([ln 3, 0]) = (3/4, 1/4); labels (0, 1)
  logits = np.array([[[0.0, 0.0], [math.log(3.0), 0.0]]], np.float32)
  labels = np.array([[0, 1]])
  s = L.SMOOTH_NR
  # class 0: I = 1/2, sum p = 5/4, sum y = 1; class 1: I = 1/4, sum p = 3/4, sum y = 1
  dice0, dice1 = (1.0 + s) / (2.25 + s), (0.5 + s) / (1.75 + s)
  np.testing.assert_allclose(_jit(L.soft_dice_loss)(logits, labels), 1 - (dice0 + dice1) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(_jit(L.soft_dice_loss, include_background=False)(logits, labels),
                             1 - dice1, rtol=1e-6)
  # squared denominators: sum p^2 = 1/4 + 9/16, 1/4 + 1/16
  sq0, sq1 = (1.0 + s) / (13 / 16 + 1 + s), (0.5 + s) / (5 / 16 + 1 + s)
  np.testing.assert_allclose(_jit(L.soft_dice_loss, squared=True)(logits, labels),
                             1 - (sq0 + sq1) / 2, rtol=1e-6)


def test_soft_dice_ignores_pixels_and_padded_examples():
  logits, labels = _batch(shape=(3, 4, 4), k=2)
  clean = np.where(labels == IGNORE, 0, labels)
  padded_logits = np.concatenate([logits, logits[:1] * 0 + 5.0])
  padded_labels = np.concatenate([labels, clean[:1]])
  mask = np.array([1, 1, 1, 0])
  a = _jit(L.soft_dice_loss, ignore_label=IGNORE)(logits, labels)
  b = _jit(L.soft_dice_loss, ignore_label=IGNORE)(padded_logits, padded_labels, mask=mask)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # the per-example loss differs from the batch-pooled one, which pools the sums first
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  valid = labels != IGNORE
  onehot = np.eye(2)[np.where(valid, labels, 0)] * valid[..., None]
  p = np.asarray(probs) * valid[..., None]
  pooled = (2 * (p * onehot).sum((0, 1, 2)) + 1e-5) / (p.sum((0, 1, 2)) + onehot.sum((0, 1, 2))
                                                        + 1e-5)
  batch_loss = _jit(L.soft_dice_loss, ignore_label=IGNORE, batch=True)(logits, labels)
  np.testing.assert_allclose(batch_loss, 1 - pooled.mean(), rtol=1e-5)


def test_dice_ce_is_the_weighted_sum_and_differentiable_in_3d():
  logits, labels = _batch(shape=(1, 3, 4, 5), k=2, seed=3)
  both = _jit(L.dice_ce_loss, ignore_label=IGNORE, lambda_dice=0.3, lambda_ce=2.0)
  parts = jax.jit(lambda z, y: (0.3 * L.soft_dice_loss(z, y, ignore_label=IGNORE)
                                + 2.0 * L.cross_entropy(z, y, ignore_label=IGNORE)))
  np.testing.assert_allclose(both(logits, labels), parts(logits, labels), rtol=1e-6)
  grad = jax.jit(jax.grad(lambda z: L.dice_ce_loss(z, labels, ignore_label=IGNORE)))(
      jnp.asarray(logits, jnp.bfloat16))
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))
  ignored = np.asarray(grad, np.float32)[labels == IGNORE]
  assert not np.any(ignored)


# ------------------------------------------------------------------------------- metrics

def _counts(logits, labels, mask=None, **kwargs):
  return _jit(M.counts, **kwargs)(logits, labels, mask=mask)


def _one_hot_logits(pred, k):
  return np.eye(k, dtype=np.float32)[pred] * 4.0


def test_dice_and_iou_of_known_masks():
  truth = np.zeros((4, 4), int)
  truth[1:3, 1:3] = 1                                   # 4 pixels
  pred = np.zeros((4, 4), int)
  pred[1:3, 1:4] = 1
  pred[2, 2] = 0                                        # 5 pixels, 3 of them shared
  c = _counts(_one_hot_logits(pred[None], 2), truth[None])
  np.testing.assert_array_equal(c["intersection"], [16 - 6, 3])
  s = M.scores(M.accumulate(None, c))
  # class 1: I = 3, P = 5, T = 4; class 0: I = 10, P = 11, T = 12; errors = 2 + 1 = 3
  np.testing.assert_allclose(s["dice"], [20 / 23, 6 / 9])
  np.testing.assert_allclose(s["iou"], [10 / 13, 3 / 6])
  np.testing.assert_allclose(s["pixel_error"], 3 / 16)
  np.testing.assert_allclose(s["mean_dice"], (20 / 23 + 6 / 9) / 2)
  np.testing.assert_allclose(M.scores(c, include_background=False)["mean_iou"], 0.5)


def test_absent_classes_are_nan_and_left_out_false_positives_score_zero():
  truth = np.array([[0, 0, 1, 1]])
  pred = np.array([[0, 2, 1, 1]])                       # class 3 nowhere, class 2 only predicted
  s = M.scores(_counts(_one_hot_logits(pred, 4), truth))
  assert np.isnan(s["dice"][3]) and np.isnan(s["iou"][3])
  assert s["dice"][2] == 0.0
  np.testing.assert_allclose(s["dice"][:2], [2 / 3, 1.0])
  np.testing.assert_allclose(s["mean_dice"], (2 / 3 + 1.0 + 0.0) / 3)


def test_counts_respect_ignore_label_and_padding_and_add_over_batches():
  logits, labels = _batch(shape=(4, 6, 7), k=3, seed=5)
  mask = np.array([1, 1, 1, 0])
  whole = _counts(logits, labels, ignore_label=IGNORE, mask=mask)
  parts = None
  for i in range(4):
    parts = M.accumulate(parts, _counts(logits[i:i + 1], labels[i:i + 1],
                                         ignore_label=IGNORE, mask=mask[i:i + 1]))
  for key in M.COUNT_KEYS:
    np.testing.assert_array_equal(parts[key], whole[key])
  pred = logits.argmax(-1)
  keep = (labels != IGNORE) & (mask[:, None, None] > 0)
  assert whole["pixels"] == keep.sum()
  assert whole["errors"] == (keep & (pred != labels)).sum()
  for k in range(3):
    assert whole["intersection"][k] == (keep & (pred == k) & (labels == k)).sum()
    assert whole["predicted"][k] == (keep & (pred == k)).sum()
    assert whole["true"][k] == (keep & (labels == k)).sum()


def test_per_example_scores_average_over_images():
  truth = np.zeros((3, 4, 4), int)
  truth[0, :2] = 1                                      # image 0: half class 1
  truth[1, 0, 0] = 1                                    # image 1: one pixel of class 1
  pred = np.zeros_like(truth)
  pred[0, :2] = 1                                       # perfect on image 0, misses image 1
  c = _counts(_one_hot_logits(pred, 2), truth, mask=np.array([1, 1, 0]), per_example=True)
  assert c["intersection"].shape == (3, 2) and c["pixels"].tolist() == [16, 16, 0]
  s = M.mean_over_examples(M.accumulate(None, c))
  np.testing.assert_allclose(s["dice"], [(1.0 + 30 / 31) / 2, (1.0 + 0.0) / 2])
  np.testing.assert_allclose(s["pixel_error"], (0 + 1 / 16) / 2)
  pooled = M.scores(_counts(_one_hot_logits(pred, 2), truth, mask=np.array([1, 1, 0])))
  np.testing.assert_allclose(pooled["dice"][1], 16 / 17)


def test_shape_mismatch_is_a_one_line_error():
  with pytest.raises(ValueError, match="do not pair"):
    _counts(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 5), int))
  with pytest.raises(ValueError, match="reduction"):
    L.cross_entropy(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4), int), reduction="avg")
