"""Segmentation as a task of the engine: its losses by name, what its train step reports, and
its evaluation on whole images / volumes by tiled inference.

Batches: ``image`` (N, *S, C), ``label`` (N, *S) integer masks in which ``IGNORE_LABEL`` (255,
what the dataset builders store for "no label") marks pixels that count nowhere, and optionally
``weight`` (N, *S): a per-pixel loss weight (the U-Net paper's border weight map).

Losses (``config.loss``): ``cross_entropy`` (per pixel; ``config.class_weights``, the batch's
``weight`` map), ``dice`` (soft Dice) and ``dice_ce`` (their sum) — cnnlab/training/seg_losses.py.
A network with valid convolutions outputs less than its input (U-Net's overlap-tile mode): the
labels and weights are centre-cropped to the logits' size.

Evaluation (``evaluate``): every image of the split is predicted whole by sliding-window
inference (``dataset.tile_shape``, ``tile_overlap``, ``tile_blend``; U-Net's mirrored overlap-tile
for valid-padding networks), its per-class counts summed over images and hosts; then per-class
Dice and IoU, their means over classes (class 0 left out of the means when it is named
"background"), the pixel error and the cross-entropy over the valid pixels; with
``confusion=True`` (experiments.evaluate) also the [K, K] confusion of the labelled pixels.
``tile_apply`` + ``predict_whole`` are the same whole-image inference for anyone's inputs
(experiments.predict, visualize: cnnlab/explain/mask_files.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cnnlab.training import registry, seg_losses, seg_metrics, tiling
from cnnlab.training.state import eval_variables

IGNORE_LABEL = 255


def center_crop(x, spatial):
  """``x`` (N, *S, ...) cropped to ``spatial`` at its centre (a valid-padding network's
  output window); unchanged when the sizes already agree."""
  spatial = tuple(int(s) for s in spatial)
  have = x.shape[1:1 + len(spatial)]
  if tuple(have) == spatial:
    return x
  starts = [(h - s) // 2 for h, s in zip(have, spatial)]
  index = (slice(None), *(slice(a, a + s) for a, s in zip(starts, spatial)))
  return x[index]


def _targets(logits, batch):
  spatial = logits.shape[1:-1]
  weight = batch.get("weight")
  return (center_crop(batch["label"], spatial),
          None if weight is None else center_crop(weight, spatial))


def pixel_cross_entropy(spec):
  weights = tuple(spec.class_weights) or None

  def loss(logits, batch):
    labels, weight = _targets(logits, batch)
    return seg_losses.cross_entropy(logits, labels, class_weights=weights, pixel_weights=weight,
                                    ignore_label=IGNORE_LABEL)
  return loss


def _dice(spec):
  def loss(logits, batch):
    labels, _ = _targets(logits, batch)
    return seg_losses.soft_dice_loss(logits, labels, ignore_label=IGNORE_LABEL,
                                     include_background=spec.dice_include_background)
  return loss


def _dice_ce(spec):
  weights = tuple(spec.class_weights) or None

  def loss(logits, batch):
    labels, weight = _targets(logits, batch)
    return seg_losses.dice_ce_loss(logits, labels, class_weights=weights, pixel_weights=weight,
                                   ignore_label=IGNORE_LABEL,
                                   include_background=spec.dice_include_background)
  return loss


registry.register_loss("dice", _dice)
registry.register_loss("dice_ce", _dice_ce)


class Segment:
  name = "segment"

  def train_metrics(self, logits, batch) -> dict:
    labels, _ = _targets(logits, batch)
    valid = labels != IGNORE_LABEL
    right = (jnp.argmax(logits, -1) == labels) & valid
    return {"train_accuracy": jnp.sum(right) / jnp.maximum(jnp.sum(valid), 1)}

  def eval_sums(self, logits, batch, *, confusion: bool = False) -> dict:
    """Per-class counts and the loss sum of a fixed-size batch (padding rows masked out):
    what a batched eval step would add up (the benchmark's; runs evaluate whole images)."""
    del confusion
    labels, _ = _targets(logits, batch)
    out = seg_metrics.counts(logits, labels, ignore_label=IGNORE_LABEL, mask=batch["mask"])
    valid = seg_losses.valid_pixels(labels, IGNORE_LABEL, batch["mask"])
    ce = seg_losses.pixel_cross_entropy(logits, labels, valid)
    return {**out, "loss_sum": jnp.sum(ce * valid)}

  def evaluate(self, parts, state, split: str | None = None) -> dict:
    return evaluate(parts, state, split)


def tile_apply(parts, state):
  """Eval-mode logits of a batch of tiles, jitted once (``predict_whole``'s ``apply``)."""
  variables = eval_variables(state, use_ema=parts.spec.train.ema_decay > 0)
  model = parts.model
  fn = jax.jit(lambda v, x: model.apply(v, x, train=False).astype(jnp.float32))
  return lambda tiles: np.asarray(fn(variables, jnp.asarray(tiles)))


def predict_whole(parts, apply, image: np.ndarray) -> np.ndarray:
  """float32 logits [*S, K] of one prepared image [*S, C] (see the module docstring): a
  network whose output is smaller than its input tile (``output_spatial``, U-Net with valid
  convolutions) by U-Net's overlap-tile strategy, any other by overlapping tiles."""
  opts = parts.spec.data.options
  tile = tuple(opts["tile_shape"])
  out = tuple(parts.model.output_spatial(tile)) if hasattr(parts.model, "output_spatial") \
      else tile
  if out != tile:
    margin = tuple((t - o) // 2 for t, o in zip(tile, out))
    return tiling.overlap_tile(image, apply, out, margin, tile_batch=int(opts["tile_batch"]))
  return tiling.sliding_window(image, apply, tile, overlap=float(opts["tile_overlap"]),
                               blend=opts["tile_blend"], tile_batch=int(opts["tile_batch"]))


def pixel_confusion(pred: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 [K, K] counts of the labelled pixels: rows the true class, columns the predicted."""
  valid = mask != IGNORE_LABEL
  k = int(num_classes)
  index = mask[valid].astype(np.int64) * k + pred[valid].astype(np.int64)
  return np.bincount(index, minlength=k * k)[:k * k].reshape(k, k)


def _image_counts(logits: np.ndarray, mask: np.ndarray) -> tuple[dict, float]:
  counts = jax.device_get(seg_metrics.counts(logits[None], mask[None],
                                             ignore_label=IGNORE_LABEL))
  valid = mask != IGNORE_LABEL
  z = logits - logits.max(axis=-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
  picked = np.take_along_axis(log_p, np.where(valid, mask, 0)[..., None].astype(np.int64), -1)
  return counts, float(-(picked[..., 0] * valid).sum())


def _sum_over_hosts(totals: dict) -> dict:
  if jax.process_count() == 1:
    return totals
  gathered = multihost_utils.process_allgather(totals)
  return {k: np.asarray(v).sum(axis=0) for k, v in gathered.items()}


def evaluate(parts, state, split: str | None = None, *, confusion: bool = False) -> dict:
  """Per-class Dice / IoU, mean Dice / IoU, pixel error and loss over every image of ``split``
  (default: the eval split), each predicted whole; this host predicts images p, p+P, ...
  ``confusion``: also ``confusion``, the [K, K] pixel counts (``pixel_confusion``)."""
  apply = tile_apply(parts, state)
  k = parts.spec.model.num_classes
  totals = {key: np.zeros(k, np.int64) for key in ("intersection", "predicted", "true")}
  totals.update(pixels=np.int64(0), errors=np.int64(0))
  matrix = np.zeros((k, k), np.int64)
  loss_sum, images = 0.0, 0
  for image, mask in parts.feed.whole_examples(split, process_index=jax.process_index(),
                                               process_count=jax.process_count()):
    logits = predict_whole(parts, apply, image)
    counts, loss = _image_counts(logits, mask)
    totals = seg_metrics.accumulate(totals, counts)
    if confusion:
      matrix += pixel_confusion(logits.argmax(-1), mask, k)
    loss_sum, images = loss_sum + loss, images + 1
  totals = {**totals, "loss_sum": np.float64(loss_sum), "images": np.int64(images)}
  if confusion:
    totals["confusion"] = matrix
  totals = _sum_over_hosts(totals)
  out = finalize(totals, parts.spec.data.facts.class_names)
  if confusion:
    out["confusion"] = np.asarray(totals["confusion"], np.int64)
  return out


def finalize(totals: dict, class_names) -> dict:
  names = list(class_names or [str(k) for k in range(len(totals["intersection"]))])
  background = bool(names) and names[0].lower() == "background"
  s = seg_metrics.scores(totals, include_background=not background)
  out = {"eval_mean_dice": float(s["mean_dice"]), "eval_mean_iou": float(s["mean_iou"]),
         "eval_pixel_error": float(s["pixel_error"]),
         "eval_loss": float(totals["loss_sum"]) / max(float(totals["pixels"]), 1.0)}
  for name, dice, iou in zip(names, s["dice"], s["iou"]):
    out[f"eval_dice_{name}"] = float(dice)
    out[f"eval_iou_{name}"] = float(iou)
  out["eval_count"] = float(totals["images"])
  return out
