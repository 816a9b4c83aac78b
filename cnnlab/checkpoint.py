"""Orbax checkpointing that never loses work.

- One ``CheckpointManager`` under ``<workdir>/checkpoints``: async saves every N steps and at
  the end; the latest ``keep`` are kept, plus the best by an eval metric.
- Orbax writes each step into a temporary directory and renames it when complete, so a crash
  mid-write never produces a step that looks finished.
- ``restore_latest`` walks back from the newest step: a step that fails to restore (truncated
  or damaged files) is reported in one line and moved aside to ``<workdir>/checkpoints_corrupt``
  — never deleted — and the previous good step is used.
- Restoring takes the *current* shardings, so a checkpoint written on N devices restores on M.
- Before restoring, the saved parameter tree is compared with the model's: a workdir that holds
  another model's checkpoint is refused with the mismatching parameter names.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class CheckpointMismatchError(ValueError):
  """The workdir's checkpoint was written for a different model / parameter tree."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, unwritable directory, ...)."""


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.corrupt_dir = os.path.abspath(os.path.join(workdir, "checkpoints_corrupt"))
    self.best_metric = best_metric
    self.best_mode = best_mode
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

  # --- queries ------------------------------------------------------------------------------
  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the best ``best_metric`` (None if no step has metrics)."""
    return self._manager.best_step() if self.best_metric else None

  # --- save ---------------------------------------------------------------------------------
  def save(self, step: int, state: Any, metrics: dict | None = None, *, wait: bool = False) -> bool:
    """Starts an (async) save of ``state`` at ``step``; errors from an earlier async save are
    raised here. ``metrics`` (host floats) rank the checkpoint for the best-N policy."""
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      metrics = None
    if step in self._manager.all_steps():
      return False
    try:
      saved = self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics,
                                 force=True)
    except Exception as e:
      raise self._write_error(step, e) from e
    if wait:
      self.wait()
    return saved

  def wait(self) -> None:
    """Blocks until pending async writes are done; raises CheckpointWriteError if one failed."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:
      raise self._write_error(None, e) from e

  def close(self, raise_errors: bool = True) -> None:
    """Waits for pending writes and releases the manager; with ``raise_errors=False`` (used
    while another error is already on its way up) a failed write is not raised again."""
    try:
      self.wait()
      self._manager.close()
    except Exception:
      if raise_errors:
        raise

  def _write_error(self, step, e: Exception) -> CheckpointWriteError:
    self._manager.reload()
    good = self.latest_step()
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointWriteError(
        f"could not write a checkpoint to {self.directory}"
        f"{'' if step is None else f' (found while saving step {step})'}: "
        f"{type(e).__name__}: {reason[:200]}; the last complete checkpoint (step {good}) is "
        "intact")

  # --- restore ------------------------------------------------------------------------------
  def check_compatible(self, step: int, abstract_state: Any) -> None:
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

  def restore(self, step: int, abstract_state: Any) -> Any:
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def restore_latest(self, abstract_state: Any) -> tuple[Any, int | None]:
    """The newest restorable state, or (None, None) for a fresh workdir.

    A step written for another model raises CheckpointMismatchError (nothing is moved); a
    step whose files cannot be read is moved aside and the previous one is tried."""
    for step in reversed(self.all_steps()):
      try:
        self.check_compatible(step, abstract_state)
        return self.restore(step, abstract_state), step
      except CheckpointMismatchError:
        raise
      except Exception as e:  # damaged files: move aside, fall back to the previous step
        where = self._quarantine(step)
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        logging.warning("checkpoint step %d is unreadable (%s: %s); moved to %s", step,
                        type(e).__name__, reason, where)
        print(f"WARNING: checkpoint step {step} is unreadable ({type(e).__name__}); moved to "
              f"{where}; falling back to the previous checkpoint", flush=True)
    return None, None

  def _quarantine(self, step: int) -> str:
    """Moves a damaged step out of the manager's directory (kept for inspection)."""
    if jax.process_index() == 0:
      os.makedirs(self.corrupt_dir, exist_ok=True)
      dest = os.path.join(self.corrupt_dir, f"{step}.{int(time.time())}")
      shutil.move(os.path.join(self.directory, str(step)), dest)
    else:
      dest = self.corrupt_dir
    self._manager.reload()
    return dest


def _shapes(tree: Any) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  out = {}
  for path, leaf in flat:
    if hasattr(leaf, "shape"):
      out[jax.tree_util.keystr(path, simple=True, separator="/")] = tuple(leaf.shape)
  return out
