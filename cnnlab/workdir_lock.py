"""One writer per workdir: a training run holds an exclusive lock on ``<workdir>/.train.lock``
for as long as it trains, and a second process that tries to train in the same workdir is
refused at once, with one line naming the live one (pid, host, start time).

The lock is ``fcntl.flock`` on an open file, so it dies with its holder: the kernel drops it
when the process exits for any reason (a crash, SIGKILL, the OOM killer), and a run that was
killed never blocks its own resume. Nothing is inferred from the file's content, which only
says who holds the lock, for the refusal message; the file stays (removing it would let a third
process lock a fresh file while a second still holds the old one). The descriptor is not
inherited by child processes (Python's default, PEP 446), so a helper process the run starts
cannot keep the lock alive after the run has died.

A multi-host run takes the lock once: process 0 holds it, and its answer is shared with every
other process (``share``, a broadcast the caller supplies), so that all processes of a refused
run stop together instead of waiting for process 0 in their first collective. One lock for the
run rather than one per host because a workdir on a shared filesystem (where multi-host
checkpoints are written) is one place: a per-host lock would let two runs whose process 0 sits
on different hosts both hold "their" lock. flock is shared across hosts on local disks and NFSv4
(Linux maps it to a byte-range lock there); on a filesystem where flock is unsupported the run
goes on unlocked with a warning (``held`` False, ``unsupported`` says why), rather than being
refused a workdir it may legitimately use. Two runs whose process 0 are on different hosts of a
filesystem that does not share flock locks are not detected.

Pure library code: no environment variables, no signals, no process-wide state.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import time
from typing import Callable, Iterator

from cnnlab.config import ConfigError

LOCK_FILE = ".train.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class WorkdirBusyError(ConfigError):
  """Another live process trains in this workdir (a usage error: exit status 2, one line)."""


def _holder_text(holder: dict) -> str:
  if not holder.get("pid"):
    return "another process (it has not recorded itself yet)"
  started = datetime.datetime.fromtimestamp(float(holder.get("start_time", 0)),
                                            datetime.timezone.utc)
  return (f"pid {holder['pid']} on host {holder.get('host', '?')}, started "
          f"{started:%Y-%m-%d %H:%M:%S} UTC")


class WorkdirLock:
  """The exclusive lock of one workdir; ``acquire`` raises WorkdirBusyError when another open
  file (another process, or another lock object of this one) holds it."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self.held = False
    self.unsupported: str | None = None
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusyError(
          f"workdir {self.workdir} is in use by another training process: "
          f"{_holder_text(holder)} (lock {self.path}); wait for it to finish or stop it, "
          "then run the same command again to resume") from None
    except OSError as e:
      os.close(fd)
      if e.errno not in _UNSUPPORTED:
        raise
      self.unsupported = f"{self.path}: this filesystem does not support file locks ({e})"
      logging.warning("%s; training without the one-writer check", self.unsupported)
      return self
    self._fd, self.held = fd, True
    _write_holder(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                       "start_time": time.time()})
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)        # still ours: nobody reads a stale holder afterwards
      fcntl.flock(self._fd, fcntl.LOCK_UN)
    finally:
      os.close(self._fd)
      self._fd, self.held = None, False

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> dict:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    return {}


def _write_holder(fd: int, holder: dict) -> None:
  data = json.dumps(holder).encode()
  os.ftruncate(fd, 0)
  os.pwrite(fd, data, 0)


@contextlib.contextmanager
def hold_for_run(workdir: str, *, process_index: int = 0,
                 share: Callable[[bool], bool] | None = None) -> Iterator[WorkdirLock | None]:
  """The workdir's lock for one run: process 0 takes it; ``share(ok)`` hands process 0's
  outcome to every process (a broadcast; None for a single process). Every process raises
  WorkdirBusyError when process 0 was refused; the lock is released on leaving."""
  lock, error = None, None
  if process_index == 0:
    try:
      lock = WorkdirLock(workdir).acquire()
    except Exception as e:  # noqa: BLE001 -- shared first, so other processes do not wait
      error = e
  ok = error is None
  if share is not None:
    ok = bool(share(ok))
  if error is not None:
    raise error
  if not ok:
    raise WorkdirBusyError(f"workdir {workdir} is in use by another training process "
                           "(process 0 of this run was refused its lock)")
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
