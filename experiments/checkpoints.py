r"""Checks every checkpoint of a training workdir against its integrity record.

    python -m experiments.checkpoints --workdir=runs/lenet5_mnist

One line per step, oldest first — ``verified`` (every file matches the SHA-256 record written
after Orbax's commit), ``damaged`` (what differs: a file's content or size, a missing or extra
file, a record from another step) or ``unverified`` (written before integrity records) — then
a summary with the bytes hashed and the time taken (seconds per GB). Nothing in the workdir is
changed: a damaged step stays where it is (training moves it to ``checkpoints_corrupt/`` when it
resumes; ``evaluate`` and friends refuse it).

Exit status: 0 when no step is damaged, 1 when one is, 2 for a bad --workdir.
"""
import os
import sys
import time

from absl import app, flags

from experiments import cli

_WORKDIR = cli.shared_string_flag("workdir", None, "Training workdir to check.")


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


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]}; use --workdir=DIR")
  workdir = _WORKDIR.value
  if not workdir:
    cli.usage_error("--workdir is required (a training workdir)")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    cli.usage_error(f"--workdir={workdir!r} holds no checkpoints directory")
  sys.exit(report(workdir))


if __name__ == "__main__":
  app.run(main)
