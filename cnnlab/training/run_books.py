"""A run's books: what one workdir records while the step loop (cnnlab/training/loop.py) runs —
the train metrics of each step (checked for a non-finite loss, logged as means at log points),
the evals, the checkpoints (ranked by the eval metrics and the mean train loss of the window
since the last save; with ``checkpoint_best_only`` saved only when the ranking metric improves)
and, at the end, ``final_metrics.json`` (with ``report_best``: the eval of the checkpoint ranked
best, the last eval kept as last_*). One per run; several seeds trained together keep one
each, so each seed's workdir holds what its run alone writes.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from cnnlab import checkpoint as ckpt_lib
from cnnlab import metrics as metrics_lib
from cnnlab.config import RunSpec
from cnnlab.training import builders
from cnnlab.training.parts import Parts, params_fingerprint

FINAL_METRICS = "final_metrics.json"


class NonFiniteError(RuntimeError):
  pass


class RunBooks:
  """One workdir's side of the step loop: its checkpointer and metric writer, train metrics
  not yet logged, the last eval, the losses since the last save (to rank checkpoints by train
  loss), and at the end its final metrics."""

  def __init__(self, spec: RunSpec, parts: Parts, ckpt, writer, start_step: int, *,
               label: str = ""):
    self.spec, self.parts, self.ckpt, self.writer = spec, parts, ckpt, writer
    self.label = label
    self.step = start_step
    self.pending: list = []                  # host metrics checked but not yet logged
    self.losses: dict[int, float] = {}       # step -> train loss, since the last save
    self.last_eval: dict[str, float] = {}
    self.evaluated_at: int | None = None
    self.best_so_far: float | None = None    # of best_metric, this process's saves only
    self.write_failed = False
    self.progress = metrics_lib.Progress(spec.loop.total_steps, spec.loop.global_batch,
                                         start_step)
    self.t_start = time.time()
    self.is_main = jax.process_index() == 0

  def take(self, got: list[dict], write: bool) -> None:
    """Checks ``got`` (host metrics of steps) for a non-finite loss; with ``write``, logs the
    means of every step not yet logged."""
    bad = [int(m["step"]) for m in got if not m["finite"]]
    if bad:
      raise NonFiniteError(f"{self.label}non-finite loss or gradient norm at step {bad[0] + 1}; "
                           f"stopped before saving (last good checkpoint: step "
                           f"{self.ckpt.latest_verified_step()})")
    for m in got:
      self.losses[int(m["step"]) + 1] = float(m["train_loss"])
    self.pending.extend(got)
    if not write or not self.pending:
      return
    got, self.pending = self.pending, []
    scalars = {k: float(np.mean([m[k] for m in got])) for k in got[0]
               if k.startswith("train_") or k == "grad_norm"}
    scalars["learning_rate"] = float(got[-1]["learning_rate"])
    rates = self.progress.update(self.step)
    scalars["images_per_sec"] = rates["images_per_sec"]
    self.writer.write(self.step, scalars)
    if self.is_main:
      print(self.label + self.progress.line(self.step, {**scalars, "eta_sec": rates["eta_sec"]}),
            flush=True)

  def evaluate(self, state) -> dict[str, float]:
    result = self.parts.evaluate(state)
    result.pop("confusion", None)
    self.writer.write(self.step, result)
    if self.is_main:
      print(f"{self.label}eval step {self.step}: "
            + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    self.last_eval, self.evaluated_at = result, self.step
    return result

  def save(self, state: Callable, eval_metrics: dict | None, *, always: bool = False,
           ranked: bool = True) -> None:
    """Checkpoint of ``state()`` at the current step, ranked (unless ``ranked`` is False: a
    preemption save mid-window) by the eval metrics and by the mean train loss of the last
    ``checkpoint_every`` steps. With ``checkpoint_best_only`` a save is skipped unless the
    ranking metric improved or ``always`` (the last step, a preemption); what is saved never
    changes the training, only which steps can be restored."""
    loop = self.spec.loop
    metrics = dict(eval_metrics or {}) if ranked else {}
    window = [v for s, v in self.losses.items() if s > self.step - loop.checkpoint_every]
    if window and ranked:
      metrics["train_loss"] = float(np.mean(window))
    self.losses = {s: v for s, v in self.losses.items() if s > self.step}
    if loop.checkpoint_best_only and not self._improves(metrics) and not always:
      return
    try:
      self.ckpt.save(self.step, state(), metrics=metrics or None)
    except ckpt_lib.CheckpointWriteError:
      self.write_failed = True
      raise

  def wait(self) -> None:
    """Waits for this run's checkpoint writes (CheckpointWriteError if one failed)."""
    try:
      self.ckpt.wait()
    except ckpt_lib.CheckpointWriteError:
      self.write_failed = True
      raise

  def _improves(self, metrics: dict) -> bool:
    value = metrics.get(self.spec.loop.best_metric)
    if value is None:
      return False
    best = self.best_so_far
    better = best is None or (value < best if self.spec.loop.best_mode == "min" else value > best)
    if better:
      self.best_so_far = value
    return better

  def finish(self, state) -> dict[str, Any]:
    """The final metrics (of the best checkpoint with ``report_best``; the last ones stay as
    last_*), written to final_metrics.json by process 0."""
    spec = self.spec
    final = {**self.last_eval, "step": self.step, "eval_split": spec.data.eval_split,
             "wall_time_sec": time.time() - self.t_start,
             "params_fingerprint": params_fingerprint(state.params)}
    if spec.loop.report_best:
      final.update({f"last_{k}": v for k, v in self.last_eval.items()})
      final.update(_best_checkpoint_eval(spec, self.parts, self.ckpt.workdir))
    if self.is_main:
      path = os.path.join(self.ckpt.workdir, FINAL_METRICS)
      with open(path + ".tmp", "w") as f:
        json.dump(metrics_lib.strict_json(final), f, indent=2, allow_nan=False)
      os.replace(path + ".tmp", path)
    return final


def _best_checkpoint_eval(spec: RunSpec, parts: Parts, workdir: str) -> dict[str, Any]:
  """The eval metrics of the checkpoint ranked best by ``best_metric`` (e.g. the lowest train
  loss — the test set never chooses it), as final metrics; the last ones stay as last_*."""
  ckpt = builders.checkpointer(spec, workdir)
  try:
    step = ckpt.best_step()
    if step is None:
      return {"selected_step": None, "selected_by": spec.loop.best_metric}
    state = ckpt.restore(step, parts.shardings.with_sharding())
  finally:
    ckpt.close(raise_errors=False)
  result = parts.evaluate(state)
  result.pop("confusion", None)
  return {**result, "selected_step": step, "selected_by":
          f"{spec.loop.best_metric} ({spec.loop.best_mode})"}
