"""What a run leaves for the researcher: TensorBoard scalars (clu writers), ``metrics.jsonl``
(one JSON object per line, ``step`` plus metric names), and a console progress line with
throughput and ETA. Only process 0 writes; other processes get a no-op writer.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers, parameter_overview

METRICS_FILE = "metrics.jsonl"


def strict_json(value):
  """``value`` with every non-finite float (a class absent from truth and prediction has no
  Dice) replaced by None, so the files are strict JSON that any reader takes."""
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricWriter:
  """TensorBoard + JSONL scalars for one workdir."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._tb = metric_writers.create_default_writer(workdir, asynchronous=False)
      self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a", buffering=1)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    try:
      self._tb.write_scalars(int(step), clean)
      row = strict_json({"step": int(step), "time": time.time(), **clean})
      self._jsonl.write(json.dumps(row, allow_nan=False) + "\n")
    except OSError as e:  # disk full, unwritable: say where
      raise OSError(e.errno, f"cannot write metrics to {self._jsonl.name}: {e.strerror}") from e

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    if self.enabled:
      self._tb.write_texts(int(step), dict(texts))

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self, raise_errors: bool = True) -> None:
    """Flushes and closes; ``raise_errors=False`` while another error is on its way up."""
    if not self.enabled:
      return
    self.enabled = False
    try:
      self._tb.close()
      self._jsonl.close()
    except OSError as e:
      if raise_errors:
        raise OSError(e.errno, f"cannot write metrics to {self._jsonl.name}: {e.strerror}")


def read_jsonl(workdir: str, name: str = METRICS_FILE) -> list[dict]:
  """The metrics a run wrote, or another JSON-lines file of the workdir (skips a torn last
  line left by a crash)."""
  rows = []
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


class Progress:
  """Throughput and ETA between log points."""

  def __init__(self, total_steps: int, global_batch_size: int, start_step: int = 0):
    self.total, self.batch = total_steps, global_batch_size
    self._t0, self._s0 = time.perf_counter(), start_step
    self._last_t, self._last_s = self._t0, start_step

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    dt, ds = now - self._last_t, step - self._last_s
    self._last_t, self._last_s = now, step
    rate = ds / dt if dt > 0 else math.nan
    return {"images_per_sec": rate * self.batch, "steps_per_sec": rate,
            "eta_sec": (self.total - step) / rate if rate > 0 else math.nan}

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    eta = scalars.get("eta_sec", math.nan)
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    shown = " ".join(f"{k}={format_value(k, v)}" for k, v in scalars.items()
                     if k not in ("eta_sec", "steps_per_sec"))
    return f"step {step}/{self.total} {shown} eta={eta_s}"


def format_value(key: str, value: float) -> str:
  """How the console shows a scalar: rates as whole numbers with thousands separators
  (12,900 images/s, not 1.29e+04), everything else to 4 significant digits."""
  if key.endswith("per_sec") and np.isfinite(value) and abs(value) >= 100:
    return f"{value:,.0f}"
  return f"{value:.4g}"


def parameter_table(params) -> str:
  return parameter_overview.get_parameter_overview(params, include_stats=False)


def parameter_summary(name: str, params, workdir: str | None = None,
                      max_rows: int = 40) -> str:
  """One line of totals, then clu's per-array table when it is short; the full table is
  always written to ``<workdir>/parameters.txt``."""
  leaves = jax.tree.leaves(params)
  count = sum(int(np.prod(x.shape)) for x in leaves)
  size = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
  table = parameter_table(params)
  head = f"model {name}: {count:,} parameters in {len(leaves)} arrays ({size / 2**20:.1f} MiB)"
  if workdir and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "parameters.txt"), "w") as f:
      f.write(head + "\n" + table + "\n")
  if len(table.splitlines()) <= max_rows:
    return head + "\n" + table
  return head + f" (table: {os.path.join(workdir, 'parameters.txt') if workdir else 'omitted'})"
