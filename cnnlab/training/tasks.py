"""What a task measures and how it is evaluated: classification here, segmentation in
cnnlab/training/segmentation.py (one object per task).

A task turns the model's logits and a batch into
- ``train_metrics(logits, batch)``: what the train step reports besides the loss;
- ``eval_sums(logits, batch, confusion)``: sums over the batch's real rows (``mask``), which
  add over batches and hosts — so evaluation counts every example once on any device count;
- ``finalize(totals)``: the metrics from the summed totals;
- ``evaluate(parts, state, split)``: a whole split's metrics (batched eval steps here; tiled
  whole-image inference for segmentation).

Classification: eval loss (softmax cross-entropy), top-1 accuracy, top-5 accuracy (only with
more than 5 classes: with 5 or fewer it is 1 by construction), example count; optionally the
confusion matrix (rows: true class, columns: predicted).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import parallel
from cnnlab.training.segmentation import Segment

TOP5_MIN_CLASSES = 6


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing > 0:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits, labels, k: int):
  topk = jax.lax.top_k(logits, min(k, logits.shape[-1]))[1]
  return jnp.any(topk == labels[:, None], axis=-1)


class Classify:
  name = "classify"

  def train_metrics(self, logits, batch) -> dict:
    return {"train_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

  def eval_sums(self, logits, batch, *, confusion: bool = False) -> dict:
    num_classes = logits.shape[-1]
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    loss = cross_entropy(logits, labels, num_classes)
    out = {"loss_sum": jnp.sum(loss * mask),
           "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
           "count": jnp.sum(mask)}
    if num_classes >= TOP5_MIN_CLASSES:
      out["correct5"] = jnp.sum(topk_correct(logits, labels, 5) * mask)
    if confusion:
      idx = labels * num_classes + jnp.argmax(logits, -1)
      out["confusion"] = jnp.zeros(num_classes * num_classes, jnp.float32).at[idx].add(
          mask).reshape(num_classes, num_classes)
    return out

  def finalize(self, totals: dict) -> dict:
    count = float(totals["count"])
    result = {"eval_loss": float(totals["loss_sum"]) / count,
              "eval_accuracy": float(totals["correct"]) / count}
    if "correct5" in totals:
      result["eval_top5"] = float(totals["correct5"]) / count
    result["eval_count"] = count
    if "confusion" in totals:
      result["confusion"] = np.asarray(totals["confusion"])
    return result


  def evaluate(self, parts, state, split: str | None = None) -> dict:
    """Every example of ``split`` (default: the eval split) through the batched eval step."""
    spec, mesh = parts.spec, parts.mesh
    batches = parts.feed.eval_batches(split=split or spec.data.eval_split,
                                      global_batch_size=spec.loop.eval_batch)
    totals = None
    for batch in parallel.prefetch_to_device(batches, mesh):
      out = parts.eval_step(state, batch)
      if parts.sync:
        jax.block_until_ready(out)
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    return self.finalize(jax.tree.map(np.asarray, jax.device_get(totals)))


TASKS = {"classify": Classify(), "segment": Segment()}


def get(name: str):
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}: one of {', '.join(TASKS)}")
  return TASKS[name]
