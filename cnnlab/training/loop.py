"""``train_and_evaluate(spec, workdir)``: one training run, start to finish.

A straight line over the builders (cnnlab/training/builders.py): parts → checkpointer →
state (restored or fresh) → run files → the step loop (log / eval / checkpoint / stop
request) → final metrics. Its pieces serve several seeds trained together by one vmapped step
too (cnnlab/training/seeds.py): ``start_run`` opens one workdir, ``Loop`` steps one state (or
a stack of them, ``pick`` taking out run i's) and each run keeps its own ``RunBooks`` (metric
writer, checkpointer, save ranking, final metrics), so a seed's workdir is what a lone run
writes.

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

import contextlib
import json
import logging
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from cnnlab import metrics as metrics_lib
from cnnlab import provenance
from cnnlab import workdir_lock
from cnnlab.config import RunSpec
from cnnlab.training import builders, sources
from cnnlab.training.parts import Parts, build_parts
from cnnlab.training.run_books import FINAL_METRICS, NonFiniteError, RunBooks  # noqa: F401
from cnnlab.training.trained import resolve_run

PREEMPTED_EXIT_CODE = 75


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
  started = start_run(spec, parts, workdir)
  if isinstance(started, dict):
    return started
  state, run = started
  describe(spec, parts)
  loop = Loop([run], parts.train_step, parts.sync)
  with closing_on_error(loop.runs):
    batches = builders.train_batches(spec, parts.feed, parts.mesh, run.step)
    state = loop.run(state, batches, spec.loop.total_steps, stop_requested)
    loop.settle(state)
  return loop.close_and_finish(state)[0]


def start_run(spec: RunSpec, parts: Parts, workdir: str, *, label: str = "",
              show_summary: bool = True):
  """Opens the run in ``workdir``: restores its latest checkpoint or starts fresh (with the
  transfer source, if any) and writes the run files. Returns (state, RunBooks), or the final
  metrics of a run that already finished (nothing written). ``label`` prefixes its lines
  ('seed 3: ' when several seeds train together)."""
  ckpt = builders.checkpointer(spec, workdir)
  is_main = jax.process_index() == 0
  try:
    state, start_step = ckpt.restore_latest(parts.shardings.with_sharding())
    finished = _finished(spec, workdir, start_step)
    if finished is not None:
      ckpt.close(raise_errors=False)
      if is_main:
        print(f"{label}already finished at step {start_step}: nothing to do (final metrics "
              f"in {os.path.join(workdir, FINAL_METRICS)})", flush=True)
      return finished
    if state is None:
      loaded = sources.read(spec, parts) if spec.transfer.init_from else None
      state, start_step = parts.init(spec.seed), 0
      if loaded is not None:
        state = _start_from(spec, parts, state, loaded, workdir, is_main)
      if is_main:
        summary = metrics_lib.parameter_summary(spec.model.name, state.params, workdir)
        if show_summary:
          print(summary, flush=True)
    else:
      logging.info("%sresumed from step %d", label, start_step)
      print(f"{label}resumed from checkpoint step {start_step}", flush=True)
    if is_main:
      write_run_files(spec, workdir, start_step)
  except BaseException:
    ckpt.close(raise_errors=False)
    raise
  return state, RunBooks(spec, parts, ckpt, metrics_lib.MetricWriter(workdir), start_step,
                         label=label)


def describe(spec: RunSpec, parts: Parts, seeds: str = "") -> None:
  """The run's console lines on devices and kernels (process 0)."""
  if jax.process_index() == 0:
    print(f"data parallel: {parts.mesh.size} {jax.devices()[0].platform} device(s) in "
          f"{jax.process_count()} process(es), global batch {spec.loop.global_batch}{seeds}",
          flush=True)
    print(f"kernels: {spec.model.kernels} ({spec.model.kernels_why})", flush=True)


def _finished(spec: RunSpec, workdir: str, start_step: int) -> dict | None:
  """The final metrics of a run that already reached its last step, else None."""
  path = os.path.join(workdir, FINAL_METRICS)
  if start_step is None or start_step < spec.loop.total_steps or not os.path.isfile(path):
    return None
  with open(path) as f:
    final = json.load(f)
  return final if final.get("step") == start_step else None


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


class Loop:
  """The step loop over one run, or over several seeds trained together by one vmapped step
  (cnnlab/training/seeds.py): ``pick(state, i)`` is run i's state from the stacked one (None:
  a single run, whose state is its own). Each run keeps its own books (RunBooks)."""

  def __init__(self, runs: list, train_step: Callable, sync: bool, pick: Callable | None = None):
    self.runs, self.train_step, self.sync, self.pick = runs, train_step, sync, pick
    self.pending: list = []                  # device metrics of steps not yet checked

  def state_of(self, state, i: int):
    return state if self.pick is None else self.pick(state, i)

  def run(self, state, batches, stop_at: int, stop_requested):
    """Steps every run from their common step to ``stop_at`` (logging, evaluating and saving
    as a run alone would); on a stop request checkpoints them all and raises Preempted."""
    loop = self.runs[0].spec.loop
    total = loop.total_steps
    step = self.runs[0].step
    while step < stop_at:
      state, m = self.train_step(state, next(batches))
      self.pending.append(m)
      step += 1
      for r in self.runs:
        r.step = step
      if self.sync:
        jax.block_until_ready(state)
      if step % loop.log_every == 0 or step == total:
        self.flush(write=True)
      evaluated = (loop.eval_every and step % loop.eval_every == 0) or step == total
      if evaluated:
        self.flush(write=False)
        for i, r in enumerate(self.runs):
          r.evaluate(self.state_of(state, i))
      if step % loop.checkpoint_every == 0 or step == total:
        self.save(state, evaluated, always=step == total)
      if stop_requested():
        self.save(state, False, always=True, ranked=False)
        for r in self.runs:
          r.wait()
        raise Preempted(step)
    return state

  def flush(self, write: bool) -> None:
    """Hands every run its pending steps' metrics (checked for a non-finite loss); with
    ``write`` each run logs their means."""
    got = jax.device_get(self.pending) if self.pending else []
    self.pending.clear()
    for i, r in enumerate(self.runs):
      mine = got if self.pick is None else [{k: v[i] for k, v in m.items()} for m in got]
      r.take(mine, write)

  def save(self, state, evaluated: bool, *, always: bool = False, ranked: bool = True) -> None:
    self.flush(write=False)
    for i, r in enumerate(self.runs):
      r.save(lambda i=i: self.state_of(state, i), r.last_eval if evaluated else None,
             always=always, ranked=ranked)

  def settle(self, state) -> None:
    """Evaluates a run that trained no step here (restored at its last step), then waits for
    every pending checkpoint write."""
    for i, r in enumerate(self.runs):
      if r.evaluated_at != r.step:
        r.evaluate(self.state_of(state, i))
    for r in self.runs:
      r.wait()

  def close_and_finish(self, state) -> list[dict[str, Any]]:
    for r in self.runs:
      r.ckpt.close()
      r.writer.close()
    return [r.finish(self.state_of(state, i)) for i, r in enumerate(self.runs)]


@contextlib.contextmanager
def closing_on_error(runs: list):
  """Whatever stops ``runs`` (RunBooks), the writes already started finish (never half a
  checkpoint) before the error goes on; a checkpointer whose write failed has nothing left to
  wait for."""
  try:
    yield
  except BaseException:
    for r in runs:
      if not r.write_failed:
        r.ckpt.close(raise_errors=False)
      r.writer.close(raise_errors=False)
    raise
