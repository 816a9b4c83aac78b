r"""Checks every checkpoint of a training workdir against its integrity record.

    python -m experiments.checkpoints --workdir=runs/lenet5_mnist

One line per step, oldest first — ``verified`` (every file matches the SHA-256 record written
after Orbax's commit), ``damaged`` (what differs: a file's content or size, a missing or extra
file, a record from another step) or ``unverified`` (written before integrity records) — then
a summary with the bytes hashed and the time taken (seconds per GB). Nothing in the workdir is
changed: a damaged step stays where it is (training moves it to ``checkpoints_corrupt/`` when it
resumes; ``evaluate`` and friends refuse it).

Exit status: 0 when no step is damaged, 1 when one is, 2 for a bad --workdir.

    python -m experiments.checkpoints --measure_cost_mb=256 [--workdir=SCRATCH]

measures what integrity costs on this machine instead: a state of random float32 (trained
weights do not compress either) saved with Orbax, then sealing, verifying (page cache warm and
evicted) and a verified restore, each best of 3, in s/GB and as a ratio to a plain in-memory
SHA-256 of the same arrays measured in the same process.
"""
import os
import sys
import time

from absl import app, flags

from experiments import cli

_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir to check.")
_COST_MB = flags.DEFINE_integer("measure_cost_mb", 0, "Measure the integrity cost on a state "
                                "of this many MB (in a scratch --workdir, default a temp dir).")


def _size(workdir: str, step: int) -> int:
  step_dir = os.path.join(workdir, "checkpoints", str(step))
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(step_dir) for name in names)


def report(workdir: str) -> int:
  """Prints the per-step lines and the summary; returns the exit status."""
  from cnnlab import integrity
  t0 = time.perf_counter()
  verdicts = integrity.verify_workdir(workdir)
  seconds = time.perf_counter() - t0
  for v in verdicts:
    print(f"step {v.step}: {v.status} — {v.detail}")
  hashed = sum(_size(workdir, v.step) for v in verdicts if v.status != integrity.UNVERIFIED)
  counts = {s: sum(v.status == s for v in verdicts)
            for s in (integrity.VERIFIED, integrity.DAMAGED, integrity.UNVERIFIED)}
  rate = f", {seconds / (hashed / 1e9):.2f} s/GB" if hashed else ""
  print(f"{len(verdicts)} step(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
        f"; {hashed / 1e6:,.1f} MB checked in {seconds:.2f} s{rate}")
  aside = os.path.join(workdir, "checkpoints_corrupt")
  if os.path.isdir(aside) and os.listdir(aside):
    print(f"{aside}: {len(os.listdir(aside))} step(s) moved aside earlier: "
          + ", ".join(sorted(os.listdir(aside))))
  return 1 if counts[integrity.DAMAGED] else 0


def _best(fn, reps: int = 3) -> float:
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def _evicted_verify(step_dir: str) -> float:
  """Verification with the step's pages dropped from the page cache first."""
  from cnnlab import integrity
  for root, _, names in os.walk(step_dir):
    for name in names:
      fd = os.open(os.path.join(root, name), os.O_RDONLY)
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
      os.close(fd)
  t0 = time.perf_counter()
  integrity.verify(step_dir, 1)
  return time.perf_counter() - t0


def measure_cost(scratch: str, megabytes: int) -> None:
  import hashlib
  import jax
  import numpy as np
  from cnnlab import checkpoint, integrity
  rng = np.random.default_rng(0)
  state = {f"w{i}": jax.numpy.asarray(rng.standard_normal(megabytes * (1 << 15), np.float32))
           for i in range(8)}
  gb = sum(x.nbytes for x in state.values()) / 1e9
  ck = checkpoint.Checkpointer(scratch, async_save=False)
  ck.save(1, state)
  ck.close()
  step_dir, abstract = os.path.join(ck.directory, "1"), jax.eval_shape(lambda: state)

  def verified_restore():    # a new Checkpointer each time: it hashes again
    fresh = checkpoint.Checkpointer(scratch)
    fresh.restore(1, abstract)
    fresh.close()
  plain = checkpoint.ocp.StandardCheckpointer()
  rows = {"sha256 of the arrays in memory": _best(
              lambda: [hashlib.sha256(np.asarray(x)).digest() for x in state.values()]),
          "seal: hash every file + write the record": _best(
              lambda: integrity.seal(step_dir, 1)),
          "verify, files in the page cache": _best(lambda: integrity.verify(step_dir, 1)),
          "verify, files evicted from the page cache": min(
              _evicted_verify(step_dir) for _ in range(3)),
          "orbax restore alone": _best(
              lambda: plain.restore(os.path.join(step_dir, "default"), abstract)),
          "verified restore (Checkpointer.restore)": _best(verified_restore)}
  base = rows["sha256 of the arrays in memory"]
  print(f"state {gb:.3f} GB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  for name, seconds in rows.items():
    print(f"{name:44s} {seconds:7.3f} s {seconds / gb:6.2f} s/GB {seconds / base:5.2f}x")


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]}; use --workdir=DIR")
  if _COST_MB.value > 0:
    import tempfile
    with tempfile.TemporaryDirectory(dir=_WORKDIR.value) as scratch:
      measure_cost(scratch, _COST_MB.value)
    return
  workdir = _WORKDIR.value
  if not workdir:
    cli.usage_error("--workdir is required (a training workdir)")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    cli.usage_error(f"--workdir={workdir!r} holds no checkpoints directory")
  sys.exit(report(workdir))


if __name__ == "__main__":
  app.run(main)
