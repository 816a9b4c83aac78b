"""Which code produced a run: each start of ``train_and_evaluate`` appends one line to
``<workdir>/code_version.jsonl`` — the git commit of the cnnlab checkout, whether its tree
had uncommitted changes (``dirty``), the step it started from, the time. The reproduction
report marks rows whose runs were dirty or made by another commit than the report's.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

from cnnlab import metrics

FILE = "code_version.jsonl"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_version(root: str = _ROOT) -> dict:
  """{'commit': sha or None, 'dirty': bool or None} of the git tree at ``root``."""
  def git(*args):
    return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                          timeout=30)
  try:
    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
      return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}


def record(workdir: str, start_step: int) -> dict:
  entry = {**code_version(), "start_step": int(start_step), "time": time.time()}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, FILE), "a") as f:
    f.write(json.dumps(entry) + "\n")
  return entry


def read(workdir: str) -> list[dict]:
  return metrics.read_jsonl(workdir, FILE)


def summarize(entries: list[dict], report_commit: str | None) -> str | None:
  """A short mark for a run: None when every start was a clean tree at ``report_commit``;
  else 'dirty', 'other commit abc1234' or 'unknown code'."""
  if not entries:
    return "unknown code"
  marks = []
  if any(e.get("dirty") for e in entries):
    marks.append("dirty tree")
  commits = {e.get("commit") for e in entries}
  if None in commits:
    marks.append("unknown commit")
  others = sorted(c[:7] for c in commits if c and c != report_commit)
  if others:
    marks.append("other commit " + ", ".join(others))
  return "; ".join(marks) or None
