"""``train_and_evaluate(spec, workdir)``: one training run, start to finish.

A straight line over the builders (cnnlab/training/builders.py): parts → checkpointer →
state (restored or fresh) → run files → the step loop (log / eval / checkpoint / stop
request) → final metrics.

Guarantees (tested in tests/test_resilience.py and tests/test_engine.py):
- Resuming at step s reproduces an uninterrupted run bit for bit on CPU: the batch at step s
  is a pure function of (seed, s), the per-step rng is fold_in(state.rng, s), and the state is
  checkpointed whole (optimizer state included, so a plateau schedule resumes exactly).
- ``stop_requested`` (the entry point sets it on SIGTERM) → checkpoint of the current step,
  pending writes finished, ``Preempted`` raised (experiments/train.py exits 75).
- A non-finite loss or gradient norm leaves the state untouched (see steps.py); the loop raises
  ``NonFiniteError`` naming the first bad step before anything is saved.
No process-wide side effects: signals, the compilation cache and dataset preparation belong to
the entry point (experiments/train.py).
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from cnnlab import checkpoint as ckpt_lib
from cnnlab import metrics as metrics_lib
from cnnlab import provenance
from cnnlab import workdir_lock
from cnnlab.config import RunSpec
from cnnlab.training import builders, sources
from cnnlab.training.parts import Parts, build_parts, params_fingerprint
from cnnlab.training.trained import resolve_run

PREEMPTED_EXIT_CODE = 75
FINAL_METRICS = "final_metrics.json"


class NonFiniteError(RuntimeError):
  pass


class Preempted(RuntimeError):
  def __init__(self, step: int):
    super().__init__(f"preempted: checkpoint written at step {step}; rerun the same command "
                     "to resume")
    self.step = step


def train_and_evaluate(spec: RunSpec, workdir: str, *,
                       stop_requested: Callable[[], bool] = lambda: False) -> dict[str, Any]:
  """Trains in ``workdir`` (resuming if it holds checkpoints); returns the final metrics.

  ``spec``: a RunSpec (``cnnlab.training.resolve_run(config)``), or a config, which is resolved
  that same way first. One process writes a workdir: while another holds it the run is refused
  at once (``WorkdirBusyError``, a ConfigError; cnnlab/workdir_lock.py). A finished run (its
  last step checkpointed and final_metrics.json written) is left as it is: its final metrics
  are returned and nothing is written."""
  if not isinstance(spec, RunSpec):
    spec = resolve_run(spec)   # a bad config is refused before the workdir is touched
  with workdir_lock.hold_for_run(workdir, process_index=jax.process_index(),
                                 share=_from_process_0 if jax.process_count() > 1 else None):
    return _train_and_evaluate(spec, workdir, stop_requested)


def _from_process_0(ok: bool) -> bool:
  """Process 0's ``ok`` in every process of a multi-host run (a refused run stops in all)."""
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def _train_and_evaluate(spec: RunSpec, workdir: str, stop_requested) -> dict[str, Any]:
  parts = build_parts(spec)
  ckpt = builders.checkpointer(spec, workdir)
  is_main = jax.process_index() == 0
  try:
    state, start_step = ckpt.restore_latest(parts.shardings.with_sharding())
  except BaseException:
    ckpt.close(raise_errors=False)
    raise
  finished = _finished(spec, workdir, start_step)
  if finished is not None:
    ckpt.close(raise_errors=False)
    if is_main:
      print(f"already finished at step {start_step}: nothing to do (final metrics in "
            f"{os.path.join(workdir, FINAL_METRICS)})", flush=True)
    return finished
  if state is None:
    loaded = _checked_source(spec, parts, ckpt)
    state, start_step = parts.init(), 0
    if loaded is not None:
      state = _start_from(spec, parts, state, loaded, workdir, is_main)
    if is_main:
      print(metrics_lib.parameter_summary(spec.model.name, state.params, workdir), flush=True)
  else:
    logging.info("resumed from step %d", start_step)
    print(f"resumed from checkpoint step {start_step}", flush=True)
  if is_main:
    print(f"data parallel: {parts.mesh.size} {jax.devices()[0].platform} device(s) in "
          f"{jax.process_count()} process(es), global batch {spec.loop.global_batch}",
          flush=True)
    write_run_files(spec, workdir, start_step)
    print(f"kernels: {spec.model.kernels} ({spec.model.kernels_why})", flush=True)
  loop = _Loop(spec, parts, ckpt, metrics_lib.MetricWriter(workdir), start_step)
  state = loop.run(state, stop_requested)
  final = {**loop.last_eval, "step": loop.step, "eval_split": spec.data.eval_split,
           "wall_time_sec": time.time() - loop.t_start,
           "params_fingerprint": params_fingerprint(state.params)}
  if spec.loop.report_best:
    final.update({f"last_{k}": v for k, v in loop.last_eval.items()})
    final.update(_best_checkpoint_eval(spec, parts, workdir))
  if is_main:
    path = os.path.join(workdir, FINAL_METRICS)
    with open(path + ".tmp", "w") as f:
      json.dump(metrics_lib.strict_json(final), f, indent=2, allow_nan=False)
    os.replace(path + ".tmp", path)
  return final


def _finished(spec: RunSpec, workdir: str, start_step: int) -> dict | None:
  """The final metrics of a run that already reached its last step, else None."""
  path = os.path.join(workdir, FINAL_METRICS)
  if start_step is None or start_step < spec.loop.total_steps or not os.path.isfile(path):
    return None
  with open(path) as f:
    final = json.load(f)
  return final if final.get("step") == start_step else None


def _checked_source(spec: RunSpec, parts: Parts, ckpt):
  """``spec.transfer.init_from`` read and checked against the model (before any compile)."""
  if not spec.transfer.init_from:
    return None
  try:
    return sources.read(spec, parts)
  except BaseException:
    ckpt.close(raise_errors=False)
    raise


def _start_from(spec: RunSpec, parts: Parts, state, loaded, workdir: str, is_main: bool):
  """A fresh state with the pretrained weights in; prints and records what was done."""
  state, report = sources.initialise(spec, parts, state, loaded)
  if is_main:
    path = report.write(workdir)
    print(report.summary() + f" (details: {path})", flush=True)
  return state


def write_run_files(spec: RunSpec, workdir: str, start_step: int) -> None:
  """config.json (the completed config and what resolution decided from it) and one line of
  code identity per start."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    json.dump(spec.record(), f, indent=2, default=list)
  os.replace(path + ".tmp", path)
  provenance.record(workdir, start_step)


class _Loop:
  """The step loop's bookkeeping: pending train metrics, the last eval, the losses since the
  last save (to rank checkpoints by train loss)."""

  def __init__(self, spec: RunSpec, parts: Parts, ckpt, writer, start_step: int):
    self.spec, self.parts, self.ckpt, self.writer = spec, parts, ckpt, writer
    self.step = start_step
    self.pending: list = []
    self.losses: dict[int, float] = {}       # step -> train loss, since the last save
    self.last_eval: dict[str, float] = {}
    self.best_so_far: float | None = None    # of best_metric, this process's saves only
    self.progress = metrics_lib.Progress(spec.loop.total_steps, spec.loop.global_batch,
                                         start_step)
    self.t_start = time.time()
    self.is_main = jax.process_index() == 0

  def run(self, state, stop_requested):
    loop, parts = self.spec.loop, self.parts
    total, sync = loop.total_steps, parts.sync
    try:
      batches = builders.train_batches(self.spec, parts.feed, parts.mesh, self.step)
      start = self.step
      while self.step < total:
        state, m = parts.train_step(state, next(batches))
        self.pending.append(m)
        self.step += 1
        step = self.step
        if sync:
          jax.block_until_ready(state)
        if step % loop.log_every == 0 or step == total:
          self.flush(write=True)
        evaluated = (loop.eval_every and step % loop.eval_every == 0) or step == total
        if evaluated:
          self.flush(write=False)
          self.last_eval = self.evaluate(state)
        if step % loop.checkpoint_every == 0 or step == total:
          self.save(state, self.last_eval if evaluated else None, always=step == total)
        if stop_requested():
          self.save(state, None, always=True, ranked=False)
          self.ckpt.wait()
          raise Preempted(step)
      if self.step == start:  # nothing left to train: report the restored state
        self.last_eval = self.evaluate(state)
      self.ckpt.wait()
    except ckpt_lib.CheckpointWriteError:
      self.writer.close(raise_errors=False)   # the failed write is over: nothing to wait for
      raise
    except BaseException:
      # Whatever else stopped the run, finish the writes already started (never half a
      # checkpoint), then re-raise.
      self.ckpt.close(raise_errors=False)
      self.writer.close(raise_errors=False)
      raise
    self.ckpt.close()
    self.writer.close()
    return state

  def flush(self, write: bool) -> None:
    """Checks every pending step for a non-finite loss; with ``write``, logs their means.
    Without it (before an eval or a save) the steps stay pending for the next log line."""
    if not self.pending:
      return
    got = jax.device_get(self.pending)
    bad = [int(m["step"]) for m in got if not m["finite"]]
    if bad:
      raise NonFiniteError(f"non-finite loss or gradient norm at step {bad[0] + 1}; stopped "
                           f"before saving (last good checkpoint: step "
                           f"{self.ckpt.latest_verified_step()})")
    for m in got:
      self.losses[int(m["step"]) + 1] = float(m["train_loss"])
    if not write:
      self.pending[:] = got          # host copies: checked once, logged at the next log point
      return
    self.pending.clear()
    scalars = {k: float(np.mean([m[k] for m in got])) for k in got[0]
               if k.startswith("train_") or k == "grad_norm"}
    scalars["learning_rate"] = float(got[-1]["learning_rate"])
    rates = self.progress.update(self.step)
    scalars["images_per_sec"] = rates["images_per_sec"]
    self.writer.write(self.step, scalars)
    if self.is_main:
      print(self.progress.line(self.step, {**scalars, "eta_sec": rates["eta_sec"]}), flush=True)

  def evaluate(self, state) -> dict[str, float]:
    result = self.parts.evaluate(state)
    result.pop("confusion", None)
    self.writer.write(self.step, result)
    if self.is_main:
      print(f"eval step {self.step}: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()),
            flush=True)
    return result

  def save(self, state, eval_metrics: dict | None, *, always: bool = False,
           ranked: bool = True) -> None:
    """Checkpoint at the current step, ranked (unless ``ranked`` is False: a preemption save
    mid-window) by the eval metrics and by the mean train loss of the last
    ``checkpoint_every`` steps. With ``checkpoint_best_only`` a save is skipped unless the
    ranking metric improved or ``always`` (the last step, a preemption); what is saved never
    changes the training, only which steps can be restored."""
    self.flush(write=False)
    loop = self.spec.loop
    metrics = dict(eval_metrics or {}) if ranked else {}
    window = [v for s, v in self.losses.items() if s > self.step - loop.checkpoint_every]
    if window and ranked:
      metrics["train_loss"] = float(np.mean(window))
    self.losses = {s: v for s, v in self.losses.items() if s > self.step}
    if loop.checkpoint_best_only and not self._improves(metrics) and not always:
      return
    self.ckpt.save(self.step, state, metrics=metrics or None)

  def _improves(self, metrics: dict) -> bool:
    value = metrics.get(self.spec.loop.best_metric)
    if value is None:
      return False
    best = self.best_so_far
    better = best is None or (value < best if self.spec.loop.best_mode == "min" else value > best)
    if better:
      self.best_so_far = value
    return better


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
