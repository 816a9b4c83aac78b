"""Content integrity of checkpoints: a SHA-256 record of every file of a committed step.

Orbax commits a step atomically (rename of a finished temporary directory) but never checks
what it reads back: a flipped bit in a compressed data file restores without a word. So once a
step is committed, one process hashes every file in it and writes ``cnnlab_integrity.json`` next
to them (size + SHA-256 per file, and the step number). Before a restore, the files are hashed
again and compared with the record: a changed byte, a truncated, deleted, extra or swapped-in
file, or a record from another step all make the step *damaged*.

Statuses of a step (``verify``):
- ``verified``   — every file matches the record;
- ``damaged``    — something differs (the detail names the file and what differs), or the record
  is missing although the step was saved to have one (orbax commits a marker in the step's own
  metadata, and any older step in the same directory with a record means records were on);
- ``unverified`` — written before integrity records existed: loadable, but nothing to check.

Pure filesystem code: no JAX, no Orbax API. Hashing reads in 8 MiB chunks (bounded memory).
Cost: about one in-memory SHA-256 of the state (~1 s/GB on one unloaded core here), once per
save in a background thread and once per restore; ``python -m experiments.checkpoints
--measure_cost_mb=N`` measures it on the machine at hand.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from typing import NamedTuple

RECORD = "cnnlab_integrity.json"
MARKER = "cnnlab_integrity"          # key in the custom metadata orbax commits with each step
STEP_METADATA = "_CHECKPOINT_METADATA"
COMMIT_FILE = "commit_success.txt"
FORMAT = 1
VERIFIED, DAMAGED, UNVERIFIED = "verified", "damaged", "unverified"
_CHUNK = 8 << 20


class Verdict(NamedTuple):
  step: int
  status: str          # VERIFIED | DAMAGED | UNVERIFIED
  detail: str


def step_dirs(checkpoints_dir: str) -> dict[int, str]:
  """The committed steps under an orbax checkpoint directory (numeric sub-directories)."""
  if not os.path.isdir(checkpoints_dir):
    return {}
  return {int(n): os.path.join(checkpoints_dir, n) for n in os.listdir(checkpoints_dir)
          if n.isdigit() and os.path.isdir(os.path.join(checkpoints_dir, n))}


def _files(step_dir: str) -> dict[str, str]:
  out = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir).replace(os.sep, "/")
      if rel not in (RECORD, RECORD + ".tmp"):
        out[rel] = path
  return dict(sorted(out.items()))


def _hash_file(path: str) -> tuple[int, str]:
  digest, size = hashlib.sha256(), 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
      size += len(chunk)
  return size, digest.hexdigest()


def signature(step_dir: str) -> tuple:
  """(path, size, mtime) of every file: equal signatures mean no file was rewritten since."""
  out = []
  for rel, path in _files(step_dir).items():
    st = os.stat(path)
    out.append((rel, st.st_size, st.st_mtime_ns))
  rec = os.path.join(step_dir, RECORD)
  if os.path.exists(rec):
    st = os.stat(rec)
    out.append((RECORD, st.st_size, st.st_mtime_ns))
  return tuple(out)


def seal(step_dir: str, step: int) -> int:
  """Hashes every file of a committed step and writes its record; returns the bytes hashed."""
  files = {rel: _hash_file(path) for rel, path in _files(step_dir).items()}
  record = {"format": FORMAT, "step": int(step), "hash": "sha256",
            "files": {rel: [size, digest] for rel, (size, digest) in files.items()}}
  record["self"] = _self_digest(record)
  tmp = os.path.join(step_dir, RECORD + ".tmp")
  try:
    with open(tmp, "w") as f:
      json.dump(record, f, indent=0, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, RECORD))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return sum(size for size, _ in files.values())


def marker(step_dir: str) -> bool | None:
  """Whether orbax committed the step with our marker (None: no step metadata file at all).
  Raises ValueError when the metadata file cannot be parsed (itself a sign of damage)."""
  path = os.path.join(step_dir, STEP_METADATA)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    meta = json.load(f)
  return bool((meta.get("custom_metadata") or {}).get(MARKER))


def _self_digest(record: dict) -> str:
  """The record's own checksum: a damaged record is named as such, not as a damaged file."""
  body = {k: v for k, v in record.items() if k != "self"}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _read_record(step_dir: str, step: int) -> dict:
  with open(os.path.join(step_dir, RECORD)) as f:
    record = json.load(f)
  if not isinstance(record, dict) or record.get("format") != FORMAT or \
     not isinstance(record.get("files"), dict):
    raise ValueError("not a version-1 integrity record")
  if record.get("self") != _self_digest(record):
    raise ValueError("its own checksum differs")
  if record.get("step") != step:
    raise ValueError(f"it belongs to step {record.get('step')}")
  return record


def _record_missing(step_dir: str, step: int, newer_than_recorded: bool) -> Verdict:
  try:
    marked = marker(step_dir)
  except (ValueError, OSError) as e:
    return Verdict(step, DAMAGED, f"no integrity record and {STEP_METADATA} is unreadable "
                   f"({type(e).__name__})")
  if marked or newer_than_recorded:
    why = "its step metadata asks for one" if marked else "an older step has one"
    return Verdict(step, DAMAGED, f"integrity record {RECORD} is missing ({why}: deleted, or "
                   "the run stopped between the commit and the record)")
  return Verdict(step, UNVERIFIED, "no integrity record (written before integrity checks)")


def verify(step_dir: str, step: int, *, newer_than_recorded: bool = False) -> Verdict:
  """Compares every file of ``step_dir`` with its record (see the module docstring).

  A read error other than a missing file or EIO (permission, memory, a stale network handle)
  says nothing about the checkpoint and is raised, never reported as damage."""
  if not os.path.exists(os.path.join(step_dir, RECORD)):
    return _record_missing(step_dir, step, newer_than_recorded)
  try:
    record = _read_record(step_dir, step)
  except (ValueError, UnicodeDecodeError) as e:
    return Verdict(step, DAMAGED, f"integrity record {RECORD} is damaged: {e}"[:200])
  recorded, present = record["files"], _files(step_dir)
  problems = [f"{rel}: missing" for rel in recorded if rel not in present]
  problems += [f"{rel}: not in the integrity record (extra file)"
               for rel in present if rel not in recorded]
  total = 0
  for rel, path in present.items():
    if rel not in recorded:
      continue
    want_size, want_digest = recorded[rel]
    try:
      size = os.path.getsize(path)
      digest = _hash_file(path)[1] if size == want_size else None
    except FileNotFoundError:
      problems.append(f"{rel}: missing")
      continue
    except OSError as e:
      if e.errno != errno.EIO:          # the storage could not return the bytes
        raise
      problems.append(f"{rel}: read error (EIO)")
      continue
    total += size
    if size != want_size:
      problems.append(f"{rel}: {size} bytes, recorded {want_size} "
                      f"({'truncated' if size < want_size else 'grown'})")
    elif digest != want_digest:
      problems.append(f"{rel}: content differs from the integrity record (sha256)")
  if problems:
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return Verdict(step, DAMAGED, problems[0] + more)
  return Verdict(step, VERIFIED, f"{len(present)} files, {total:,} bytes match the record")


def has_record(step_dir: str) -> bool:
  return os.path.exists(os.path.join(step_dir, RECORD))


def verify_all(checkpoints_dir: str) -> list[Verdict]:
  """Every committed step under ``checkpoints_dir``, oldest first (read-only)."""
  dirs = step_dirs(checkpoints_dir)
  out, recorded_below = [], False
  for step in sorted(dirs):
    out.append(verify(dirs[step], step, newer_than_recorded=recorded_below))
    recorded_below = recorded_below or has_record(dirs[step])
  return out


def verify_workdir(workdir: str) -> list[Verdict]:
  """Checks every checkpoint of a training workdir without changing anything in it."""
  return verify_all(os.path.join(workdir, "checkpoints"))


class Sealer:
  """Writes the record of a step as soon as its committed directory appears (Orbax commits
  asynchronously, in its own thread, by renaming the finished temporary directory).

  ``add(step)`` starts a watcher thread; ``finish()`` (after Orbax's writes are over: committed
  or failed) lets the watchers seal what was committed and returns the errors they met."""

  def __init__(self, checkpoints_dir: str, poll_s: float = 0.02):
    self._dir, self._poll = checkpoints_dir, poll_s
    self._jobs: list[tuple[threading.Thread, threading.Event, list]] = []

  def add(self, step: int) -> None:
    self._jobs = [j for j in self._jobs if j[0].is_alive() or j[2]]
    done, errors = threading.Event(), []
    t = threading.Thread(target=self._watch, args=(step, done, errors), daemon=True,
                         name=f"cnnlab-seal-{step}")
    self._jobs.append((t, done, errors))
    t.start()

  def seal_now(self, step: int) -> None:
    seal(os.path.join(self._dir, str(step)), step)

  def _watch(self, step: int, done: threading.Event, errors: list) -> None:
    final = os.path.join(self._dir, str(step))
    # Orbax's commit ends with commit_success.txt in the final directory (written before the
    # rename in atomic-rename mode, as the commit itself in commit-file mode).
    while not os.path.exists(os.path.join(final, COMMIT_FILE)):
      if done.wait(self._poll):
        break
    if not os.path.isdir(final):
      return                      # the save failed: nothing was committed
    try:
      self.seal_now(step)
    except FileNotFoundError:
      pass                        # removed meanwhile (keep-N clean-up): nothing left to seal
    except Exception as e:  # reported by finish(); the step then counts as damaged
      errors.append((step, e))

  def finish(self) -> list[tuple[int, Exception]]:
    jobs, self._jobs = self._jobs, []
    for t, done, _ in jobs:
      done.set()
    errors = []
    for t, _, errs in jobs:
      t.join()
      errors += errs
    return errors
