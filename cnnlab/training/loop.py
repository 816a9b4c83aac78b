"""``train_and_evaluate(config, workdir)``: one training run, start to finish.

Sections, in order: validate → mesh → data → model/optimizer → state (fresh or restored) →
compile → train loop (log / eval / checkpoint / preemption) → final save.

Guarantees (tested in tests/test_resilience.py and tests/test_engine.py):
- Resuming at step s reproduces an uninterrupted run bit for bit on CPU: the batch at step s
  is a pure function of (seed, s), the per-step rng is fold_in(state.rng, s), and the state is
  checkpointed whole.
- SIGTERM → checkpoint of the current step, pending writes finished, ``Preempted`` raised
  (experiments/train.py exits with status 75, EX_TEMPFAIL: "run me again").
- A non-finite loss or gradient norm leaves the state untouched (see steps.py); the loop raises
  ``NonFiniteError`` naming the first bad step before anything is saved.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab import checkpoint as ckpt_lib
from cnnlab import metrics as metrics_lib
from cnnlab import parallel
from cnnlab.data import pipeline, prepare
from cnnlab.training import optim, steps, validation
from cnnlab.training.state import TrainState, create_state

PREEMPTED_EXIT_CODE = 75


class NonFiniteError(RuntimeError):
  pass


class Preempted(RuntimeError):
  def __init__(self, step: int):
    super().__init__(f"preempted: checkpoint written at step {step}; rerun the same command "
                     "to resume")
    self.step = step


class _SignalFlag:
  """Records SIGTERM (what SLURM and cloud schedulers send before killing a job)."""

  def __init__(self):
    self.raised = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._old = None
    return self

  def _handle(self, signum, frame):
    self.raised = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def setup_compilation_cache(config, workdir: str) -> None:
  """JAX's persistent compilation cache, so restarts do not recompile."""
  cache_dir = config.get("compilation_cache_dir", None)
  if cache_dir == "":
    return
  if cache_dir is None:
    cache_dir = os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class Run:
  """Everything a run needs, built from a validated config (also used by evaluate/benchmark)."""

  def __init__(self, config, mesh=None):
    self.config = config
    prepare.prepare_if_needed(config.dataset)
    self.mesh = mesh or parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, self.mesh)
    self.model = validation.build_model(config)
    self.image_shape = validation.image_shape(config)
    self.train_examples = pipeline.num_examples(config.dataset, validation.train_split(config))
    self.steps_per_epoch = max(1, self.train_examples // config.batch_size)
    n = int(config.get("num_train_steps", -1))
    self.total_steps = n if n > 0 else int(math.ceil(config.num_epochs * self.steps_per_epoch))
    self.schedule = optim.create_schedule(config, self.steps_per_epoch, self.total_steps)
    self.tx = optim.create_optimizer(config, self.schedule)
    self.repl = parallel.replicated(self.mesh)
    ema = float(config.get("ema_decay", 0.0)) > 0
    rng = jax.random.PRNGKey(int(config.seed))
    self._init = lambda: create_state(self.model, self.tx, rng, self.image_shape, ema=ema)
    self.abstract_state = jax.eval_shape(self._init)
    self.state_sharding = jax.tree.map(lambda _: self.repl, self.abstract_state)
    train_step = steps.make_train_step(self.model, self.tx, config, self.schedule)
    eval_step = steps.make_eval_step(self.model, use_ema=ema)
    self.p_train, self.p_eval = steps.jit_steps(self.mesh, train_step, eval_step,
                                                self.state_sharding)

  def init_state(self) -> TrainState:
    return jax.jit(self._init, out_shardings=self.state_sharding)()

  def abstract_with_sharding(self):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.state_sharding)

  def restore_checkpoint(self, workdir: str, which: str = "latest") -> tuple[TrainState, int]:
    """The state saved in ``workdir`` at ``which``: 'latest', 'best' or a step number."""
    ck = ckpt_lib.Checkpointer(workdir, best_metric=self.config.get("best_metric",
                                                                    "eval_accuracy"))
    try:
      step = {"latest": ck.latest_step, "best": ck.best_step}.get(which, lambda: None)()
      if step is None and which not in ("latest", "best"):
        if not str(which).isdigit() or int(which) not in ck.all_steps():
          raise validation.ConfigError(f"--checkpoint={which!r} is not one of latest, best, "
                                       f"or a saved step {ck.all_steps()}")
        step = int(which)
      if step is None:
        raise validation.ConfigError(f"--workdir={workdir!r} holds no checkpoint")
      ck.check_compatible(step, self.abstract_with_sharding())
      return ck.restore(step, self.abstract_with_sharding()), step
    finally:
      ck.close(raise_errors=False)

  def evaluate(self, state, split: str | None = None, eval_step=None) -> dict[str, float]:
    """Every example of the split counted once (padded batches carry a mask)."""
    cfg = self.config
    split = split or validation.eval_split(cfg)
    batches = pipeline.eval_batches(cfg.dataset, split=split,
                                    global_batch_size=validation.eval_batch_size(cfg, self.mesh))
    eval_step = eval_step or self.p_eval
    sync = parallel.needs_step_sync(self.mesh)
    totals = None
    for batch in parallel.prefetch_to_device(batches, self.mesh):
      out = eval_step(state, batch)
      if sync:
        jax.block_until_ready(out)
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    result = {"eval_loss": float(totals["loss_sum"]) / count,
              "eval_accuracy": float(totals["correct"]) / count,
              "eval_top5": float(totals["correct5"]) / count, "eval_count": count}
    if "confusion" in totals:
      result["confusion"] = np.asarray(totals["confusion"])
    return result


def params_fingerprint(params) -> str:
  """SHA-256 of every parameter's bytes (this process's replica): equal fingerprints mean
  bit-identical parameters, across restarts, device counts and processes."""
  digest = hashlib.sha256()
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in flat:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
  return digest.hexdigest()


def _write_config(config, workdir: str) -> None:
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns final metrics."""
  # --- validate and set up ----------------------------------------------------------------
  validation.validate(config)
  setup_compilation_cache(config, workdir)
  run = Run(config)
  ckpt = ckpt_lib.Checkpointer(workdir, keep=int(config.get("keep_checkpoints", 3)),
                               best_metric=config.get("best_metric", "eval_accuracy"))
  is_main = jax.process_index() == 0

  # --- state: restore or start fresh ------------------------------------------------------
  state, start_step = ckpt.restore_latest(run.abstract_with_sharding())
  if state is None:
    state, start_step = run.init_state(), 0
    if is_main:
      print(metrics_lib.parameter_summary(config.model.name, state.params, workdir), flush=True)
  else:
    logging.info("resumed from step %d", start_step)
    print(f"resumed from checkpoint step {start_step}", flush=True)
  if is_main:
    print(f"data parallel: {run.mesh.size} {jax.devices()[0].platform} device(s) in "
          f"{jax.process_count()} process(es), global batch {config.batch_size}", flush=True)
  _write_config(config, workdir)
  writer = metrics_lib.MetricWriter(workdir)

  log_every = int(config.get("log_every_steps", 100))
  log_every = run.steps_per_epoch if log_every < 0 else log_every
  eval_every = int(config.get("eval_every_steps", -1))
  eval_every = run.steps_per_epoch if eval_every < 0 else eval_every
  ckpt_every = int(config.get("checkpoint_every_steps", -1))
  ckpt_every = run.steps_per_epoch if ckpt_every < 0 else ckpt_every
  total = run.total_steps
  sync = parallel.needs_step_sync(run.mesh)

  host_batches = pipeline.train_batches(config.dataset, global_batch_size=config.batch_size,
                                        seed=int(config.seed), start_step=start_step)
  batches = parallel.prefetch_to_device(host_batches, run.mesh)
  progress = metrics_lib.Progress(total, config.batch_size, start_step)
  pending: list[dict] = []
  last_eval: dict[str, float] = {}
  t_start = time.time()

  def flush_train_metrics(step: int, write: bool) -> None:
    """Checks every pending step for a non-finite loss; with ``write``, logs their means.
    Without it (before an eval or a save) the steps stay pending for the next log line."""
    if not pending:
      return
    got = jax.device_get(pending)
    bad = [int(m["step"]) for m in got if not m["finite"]]
    if bad:
      raise NonFiniteError(f"non-finite loss or gradient norm at step {bad[0] + 1}; stopped "
                           f"before saving (last good checkpoint: step {ckpt.latest_step()})")
    if not write:
      pending[:] = got          # host copies: checked once, logged at the next log point
      return
    pending.clear()
    scalars = {k: float(np.mean([m[k] for m in got]))
               for k in ("train_loss", "train_accuracy", "grad_norm")}
    scalars["learning_rate"] = float(got[-1]["learning_rate"])
    rates = progress.update(step)
    scalars["images_per_sec"] = rates["images_per_sec"]
    writer.write(step, scalars)
    if is_main:
      print(progress.line(step, {**scalars, "eta_sec": rates["eta_sec"]}), flush=True)

  def evaluate_and_log(step: int) -> dict[str, float]:
    result = run.evaluate(state)
    result.pop("confusion", None)
    writer.write(step, result)
    if is_main:
      print(f"eval step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()),
            flush=True)
    return result

  step = start_step
  try:
    with _SignalFlag() as sigterm:
      while step < total:
        state, m = run.p_train(state, next(batches))
        pending.append(m)
        step += 1
        if sync:
          jax.block_until_ready(state)
        if step % log_every == 0 or step == total:
          flush_train_metrics(step, write=True)
        evaluated = (eval_every and step % eval_every == 0) or step == total
        if evaluated:
          flush_train_metrics(step, write=False)
          last_eval = evaluate_and_log(step)
        if step % ckpt_every == 0 or step == total:
          flush_train_metrics(step, write=False)
          ckpt.save(step, state, metrics=last_eval if evaluated else None)
        if sigterm.raised:
          flush_train_metrics(step, write=False)
          ckpt.save(step, state)
          ckpt.wait()
          raise Preempted(step)
    if step == start_step:  # nothing left to train: report the restored state
      last_eval = evaluate_and_log(step)
    ckpt.wait()
  except ckpt_lib.CheckpointWriteError:
    writer.close(raise_errors=False)   # the failed write is over: nothing left to wait for
    raise
  except BaseException:
    # Whatever else stopped the run, finish the writes already started (never half a
    # checkpoint), then re-raise.
    ckpt.close(raise_errors=False)
    writer.close(raise_errors=False)
    raise
  ckpt.close()
  writer.close()
  final = {**last_eval, "step": step, "wall_time_sec": time.time() - t_start,
           "params_fingerprint": params_fingerprint(state.params)}
  if is_main:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(final, f, indent=2)
  return final
