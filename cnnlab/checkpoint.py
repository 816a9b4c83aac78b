"""Orbax checkpointing that never loses work.

- One ``CheckpointManager`` under ``<workdir>/checkpoints``: async saves every N steps and at
  the end; the latest ``keep`` are kept, plus the best by an eval metric.
- Orbax writes each step into a temporary directory and renames it when complete, so a crash
  mid-write never produces a step that looks finished.
- Every committed step gets an integrity record (SHA-256 of each file, ``cnnlab.integrity``),
  written by process 0 right after Orbax's commit; every restore verifies it first. An explicit
  restore of a damaged step raises ``DamagedCheckpointError`` (one line: step + what failed).
- ``restore_latest`` walks back from the newest step: a damaged step — fails verification, or
  (no record: written before records existed) fails to read — is reported in one line and moved
  aside to ``<workdir>/checkpoints_corrupt`` — never deleted — and the previous step is used.
  Only damage moves a step: an out-of-memory, an interrupt or a permission error while
  restoring is raised as it is. With several processes, process 0 decides and moves, the others
  take its verdict and wait for the move (a barrier) before looking again.
- Restoring takes the *current* shardings, so a checkpoint written on N devices restores on M.
- Before restoring, the saved parameter tree is compared with the model's: a workdir that holds
  another model's checkpoint is refused with the mismatching parameter names.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as cm

from cnnlab import integrity


class CheckpointMismatchError(ValueError):
  """The workdir's checkpoint was written for a different model / parameter tree."""


class DamagedCheckpointError(CheckpointMismatchError):
  """An explicitly requested checkpoint failed verification (or, with no integrity record,
  could not be read). A subclass of CheckpointMismatchError so that entry points refusing a
  checkpoint with a one-line usage error (exit status 2) refuse this one the same way."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, unwritable directory, ...)."""


_CODES = {integrity.VERIFIED: 0, integrity.UNVERIFIED: 1, integrity.DAMAGED: 2}
_OOM = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OOM")


def means_damage(e: BaseException) -> bool:
  """Whether an error while reading a step *without* integrity record means unreadable files
  (truncated, missing, undecodable) — as opposed to the machine (memory, permissions, an
  interrupt), which says nothing about the checkpoint. Steps with a record never need this:
  once they verify, any restore error is the machine's."""
  if isinstance(e, (MemoryError, CheckpointMismatchError)) or not isinstance(e, Exception):
    return False
  text, cause = "", e
  while cause is not None:
    text += f" {cause}"
    cause = cause.__cause__ or cause.__context__
  if any(marker in text for marker in _OOM):
    return False
  if isinstance(e, OSError):
    return isinstance(e, FileNotFoundError) or e.errno == errno.EIO
  if isinstance(e, (ValueError, KeyError, NotImplementedError, EOFError)):
    return True   # tensorstore DATA_LOSS/NOT_FOUND/..., bad JSON, missing metadata keys
  return type(e) is Exception and "reading" in text   # tensorstore's array read failures


def _one_line(e: BaseException, limit: int = 160) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:limit]}" if text else type(e).__name__


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.corrupt_dir = os.path.join(self.workdir, "checkpoints_corrupt")
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._async = async_save
    policies = [cm.LatestN(n=keep)]
    if best_metric:
      policies.append(cm.BestN(get_metric_fn=lambda m: m[best_metric], n=1,
                               reverse=(best_mode == "min"),
                               keep_checkpoints_without_metrics=False))
    self._options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode,
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options,
                                          item_handlers=ocp.StandardCheckpointHandler())
    self._sealer = integrity.Sealer(self.directory)
    self._verdicts: dict[int, tuple[tuple, integrity.Verdict]] = {}
    self._noted: set[int] = set()

  # --- queries ------------------------------------------------------------------------------
  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the best ``best_metric`` (None if no step has metrics)."""
    return self._manager.best_step() if self.best_metric else None

  def latest_verified_step(self) -> int | None:
    """The newest step whose files match its integrity record (None if there is none).

    Waits for saves in flight (without raising their errors) and hashes the steps it checks,
    newest first; this process's view only (no collectives), so it is safe in error paths."""
    self._settle()
    for step in reversed(self.all_steps()):
      try:
        if self._verdict(step).status == integrity.VERIFIED:
          return step
      except OSError:
        continue
    return None

  def verify(self, step: int) -> integrity.Verdict:
    """This process's verdict on ``step`` (verified / damaged / unverified, with detail)."""
    return self._verdict(step)

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _verdict(self, step: int) -> integrity.Verdict:
    """Verifies ``step``; cached while no file of the step is rewritten (size / mtime)."""
    step_dir = self._step_dir(step)
    sig = integrity.signature(step_dir)
    hit = self._verdicts.get(step)
    if hit and hit[0] == sig:
      return hit[1]
    older = any(integrity.has_record(self._step_dir(s)) for s in self.all_steps() if s < step)
    verdict = integrity.verify(step_dir, step, newer_than_recorded=older)
    self._verdicts[step] = (sig, verdict)
    return verdict

  def _agreed(self, step: int) -> integrity.Verdict:
    """Process 0's verdict, the same on every process (one collective when there are several)."""
    main = jax.process_index() == 0
    verdict = self._verdict(step) if main else None
    if jax.process_count() > 1:
      code = int(multihost_utils.broadcast_one_to_all(
          np.int32(_CODES[verdict.status] if main else 0)))
      if not main:
        status = next(k for k, v in _CODES.items() if v == code)
        verdict = integrity.Verdict(step, status, "as verified by process 0")
    return verdict

  # --- save ---------------------------------------------------------------------------------
  def save(self, step: int, state: Any, metrics: dict | None = None, *, wait: bool = False) -> bool:
    """Starts an (async) save of ``state`` at ``step``; errors from an earlier async save are
    raised here. ``metrics`` (host floats) rank the checkpoint for the best-N policy. Once
    Orbax has committed the step, process 0 writes its integrity record."""
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      metrics = None
    if step in self._manager.all_steps():
      return False
    try:
      saved = self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics,
                                 force=True, custom_metadata={integrity.MARKER: integrity.FORMAT})
      if saved and jax.process_index() == 0:
        if self._async:
          self._sealer.add(step)
        else:
          self._sealer.seal_now(step)
    except Exception as e:
      raise self._write_error(step, e) from e
    if wait:
      self.wait()
    return saved

  def wait(self) -> None:
    """Blocks until pending async writes (and their integrity records) are done; raises
    CheckpointWriteError if one failed."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:
      self._sealer.finish()
      raise self._write_error(None, e) from e
    errors = self._sealer.finish()
    if errors:
      step, e = errors[0]
      raise self._write_error(step, e, what="its integrity record") from e

  def _settle(self) -> None:
    """Lets writes in flight end, ignoring their errors (for queries on error paths)."""
    try:
      self._manager.wait_until_finished()
    except Exception:
      pass
    self._sealer.finish()

  def close(self, raise_errors: bool = True) -> None:
    """Waits for pending writes and releases the manager; with ``raise_errors=False`` (used
    while another error is already on its way up) a failed write is not raised again."""
    try:
      self.wait()
      self._manager.close()
    except Exception:
      if raise_errors:
        raise

  def _write_error(self, step, e: Exception, what: str = "") -> CheckpointWriteError:
    self._manager.reload()
    good = self.latest_verified_step()
    found = "" if step is None else f" ({what}, step {step})" if what else \
        f" (found while saving step {step})"
    kept = "no earlier checkpoint verifies" if good is None else \
        f"the last complete checkpoint (step {good}) is intact"
    return CheckpointWriteError(
        f"could not write a checkpoint to {self.directory}{found}: {_one_line(e, 200)}; {kept}")

  # --- restore ------------------------------------------------------------------------------
  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Verifies ``step`` (DamagedCheckpointError) and raises CheckpointMismatchError naming
    parameters whose paths or shapes differ."""
    verdict = self._require_intact(step)
    try:
      self._check_tree(step, abstract_state)
    except Exception as e:
      raise self._unreadable(step, verdict, e) from e

  def restore(self, step: int, abstract_state: Any) -> Any:
    """The state saved at ``step``, after verifying it (DamagedCheckpointError if damaged)."""
    verdict = self._require_intact(step)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:
      raise self._unreadable(step, verdict, e) from e

  def _unreadable(self, step: int, verdict, e: Exception) -> Exception:
    if verdict.status == integrity.UNVERIFIED and means_damage(e):
      return DamagedCheckpointError(f"checkpoint step {step} in {self.directory} is unreadable "
                                    f"(no integrity record): {_one_line(e)}")
    return e

  def _require_intact(self, step: int) -> integrity.Verdict:
    verdict = self._agreed(step)
    if verdict.status == integrity.DAMAGED:
      hint = ""
      if jax.process_index() == 0:    # the others did not hash anything
        good = [s for s in self.all_steps() if s != step and
                self._verdict(s).status == integrity.VERIFIED]
        hint = f" (steps that verify: {good or 'none'})"
      raise DamagedCheckpointError(
          f"checkpoint step {step} in {self.directory} is damaged: {verdict.detail}{hint}")
    if verdict.status == integrity.UNVERIFIED:
      self._note_unverified(step)
    return verdict

  def _note_unverified(self, step: int) -> None:
    if step in self._noted:
      return
    self._noted.add(step)
    logging.info("checkpoint step %d has no integrity record; restored unverified", step)
    if jax.process_index() == 0:
      print(f"note: checkpoint step {step} has no integrity record (written before integrity "
            "checks); restored unverified", flush=True)

  def restore_latest(self, abstract_state: Any) -> tuple[Any, int | None]:
    """The newest intact state, or (None, None) for a fresh workdir.

    A step written for another model raises CheckpointMismatchError (nothing is moved); a
    damaged step is moved aside and the previous one is tried."""
    for step in reversed(self.all_steps()):
      verdict = self._agreed(step)
      if verdict.status == integrity.DAMAGED:
        self._move_aside(step, f"is damaged ({verdict.detail})")
        continue
      if verdict.status == integrity.UNVERIFIED:
        self._note_unverified(step)
      error = None
      try:
        self._check_tree(step, abstract_state)
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except CheckpointMismatchError:
        raise
      except Exception as e:
        if not (verdict.status == integrity.UNVERIFIED and means_damage(e)):
          raise                                  # the machine's problem, not the checkpoint's
        error = e
      if self._any_process(error is not None):
        self._move_aside(step, f"is unreadable ({_one_line(error) if error else 'elsewhere'})")
        continue
      return state, step
    return None, None

  @staticmethod
  def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
      return flag
    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))

  def _move_aside(self, step: int, why: str) -> None:
    """Moves a damaged step out of the manager's directory (kept for inspection): process 0
    moves, every process waits for the move before looking at the directory again."""
    dest = os.path.join(self.corrupt_dir, f"{step}.{int(time.time())}")
    if jax.process_index() == 0 and os.path.isdir(self._step_dir(step)):
      os.makedirs(self.corrupt_dir, exist_ok=True)
      while os.path.exists(dest):
        dest += "_"
      shutil.move(self._step_dir(step), dest)   # a rename: needs no free space
      try:
        with open(os.path.join(dest, "MOVED_ASIDE.txt"), "w") as f:
          f.write(f"checkpoint step {step} {why}\n")
      except OSError:
        pass                                     # the reason is a courtesy (disk may be full)
      print(f"WARNING: checkpoint step {step} {why}; moved to {dest}; falling back to the "
            "previous checkpoint", flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"cnnlab-checkpoint-moved-aside-{step}")
    logging.warning("checkpoint step %d %s; moved to %s", step, why, self.corrupt_dir)
    self._verdicts.pop(step, None)
    self._manager.reload()

  def _check_tree(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointMismatchError naming parameters whose paths or shapes differ."""
    meta = self._manager.item_metadata(step)
    if meta is None:
      return
    saved = _shapes(meta)
    wanted = _shapes(abstract_state)
    # Parameters first: the optimizer state mirrors them and would only repeat the story.
    order = lambda keys: sorted(keys, key=lambda k: (not k.startswith("params/"), k))
    missing = order(set(wanted) - set(saved))
    unexpected = order(set(saved) - set(wanted))
    reshaped = order(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
    if missing or unexpected or reshaped:
      parts = []
      for label, keys in (("missing", missing), ("unexpected", unexpected),
                          ("shape differs", [f"{k} {saved[k]}->{wanted[k]}" for k in reshaped])):
        if keys:
          parts.append(f"{label} ({len(keys)}): {', '.join(keys[:4])}" +
                       (" ..." if len(keys) > 4 else ""))
      raise CheckpointMismatchError(
          f"checkpoint step {step} in {self.directory} was written for a different model: "
          + "; ".join(parts) + " (use a fresh --workdir)")


def _shapes(tree: Any) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  out = {}
  for path, leaf in flat:
    if hasattr(leaf, "shape"):
      out[jax.tree_util.keystr(path, simple=True, separator="/")] = tuple(leaf.shape)
  return out
