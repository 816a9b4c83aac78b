"""Reproducing a recipe over seeds: the training command of each seed, the machine and
software it ran on, and a runner that records every attempt in ``<workdir>/run_info.json``
(the files ``cnnlab.report`` reads). ``python -m experiments.reproduce`` is the command.

The library assumes nothing about where recipes and the training command live: a ``Recipes``
names the recipes package (``cnnlab.recipes``), the module that trains one config
(``python -m <train_module> --config=<recipe file>[:<arg>] --workdir=... --config.seed=<k>``)
and the folder that module is imported from; ``experiments/reproduce.py`` passes this
repository's (``experiments.configs``, ``experiments.train``, the checkout). Seed k trains in
``<runs>/<group>/seed<k>`` in a child process whose output goes to the console and to
``<workdir>/train.log``. ``run_info.json``
records the recipe, the exact command (with the data-location environment variables it ran
under), the hardware (CPU model from /proc/cpuinfo, logical and usable cores, memory, GPUs
from nvidia-smi), software versions and the git commit, and one entry per attempt with its
start and end time (Unix seconds), wall time and exit status.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import dataclasses
from importlib import metadata
from typing import Callable

from cnnlab import provenance, recipes as recipes_lib

RUN_INFO = "run_info.json"
ENV_KEYS = ("CNNLAB_RAW_DATA_DIR", "TFDS_DATA_DIR", "XLA_FLAGS", "JAX_PLATFORMS",
            "CUDA_VISIBLE_DEVICES")


# --- facts about the machine -------------------------------------------------------------------
def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gb() -> float | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          return round(int(line.split()[1]) / 1024 ** 2, 1)
  except (OSError, ValueError):
    pass
  return None


def _gpus() -> list[str]:
  """GPU names from nvidia-smi (without importing JAX, which would claim GPU memory)."""
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
  except (OSError, subprocess.SubprocessError):
    return []
  return [l.strip() for l in out.stdout.splitlines() if l.strip()] if out.returncode == 0 else []


def hardware() -> dict:
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cpus": usable,
          "memory_gb": _memory_gb(), "gpus": _gpus(), "hostname": platform.node()}


@dataclasses.dataclass(frozen=True)
class Recipes:
  """Where a project's recipes and training command live: ``package`` (the recipes, importable
  by name), ``train_module`` (run as ``python -m``; takes --config, --workdir and
  --config.KEY=VALUE like experiments/train.py) and ``root`` (the folder both are imported
  from: put on the child's PYTHONPATH, and whose git commit the runs record)."""
  package: str
  train_module: str
  root: str


def software(code_root: str | None = None) -> dict:
  out = {"python": platform.python_version()}
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"):
    try:
      out[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      pass
  code = provenance.code_version(code_root) if code_root else provenance.code_version()
  if code["commit"]:
    out["git_commit"] = code["commit"] + (" (uncommitted changes)" if code["dirty"] else "")
  return out


# --- commands ------------------------------------------------------------------------------------
def parse_recipe(recipe: str, where: Recipes) -> tuple[str, str | None]:
  """``'name[:arg]'`` of ``where.package`` as (name, arg or None); ValueError otherwise."""
  return recipes_lib.parse(recipe, where.package)


def _shown_path(path: str) -> str:
  rel = os.path.relpath(path)
  return path if rel.startswith("..") else rel


def train_argv(where: Recipes, name: str, arg: str | None, workdir: str, seed: int,
               overrides=()) -> list[str]:
  """The training command for one seed, without the interpreter."""
  config = _shown_path(recipes_lib.path(where.package, name)) + (f":{arg}" if arg else "")
  argv = ["-m", where.train_module, f"--config={config}", f"--workdir={workdir}",
          f"--config.seed={seed}"]
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--override={item!r} must be KEY=VALUE")
    argv.append(f"--config.{key}={value}")
  return argv


def shell_command(argv: list[str], env: dict | None = None) -> str:
  """``argv`` as one copy-pasteable shell line (``python`` for the interpreter), prefixed
  with the data-location variables set in ``env``."""
  env = os.environ if env is None else env
  prefix = [f"{k}={shlex.quote(env[k])}" for k in ENV_KEYS if env.get(k)]
  return " ".join(prefix + ["python"] + [shlex.quote(a) for a in argv])


# --- running one seed ----------------------------------------------------------------------------
def _read_info(workdir: str) -> dict:
  path = os.path.join(workdir, RUN_INFO)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}


def _write_info(workdir: str, info: dict) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_INFO)
  with open(path + ".tmp", "w") as f:
    json.dump(info, f, indent=2)
  os.replace(path + ".tmp", path)


def begin_attempt(workdir: str, info: dict) -> tuple[dict, dict]:
  """Appends an attempt (its start time) to ``workdir/run_info.json`` merged with ``info``;
  returns (the record, the attempt) for ``end_attempt``."""
  info = {**_read_info(workdir), **info}
  attempts = list(info.get("attempts", []))
  attempt = {"start_time": time.time()}
  attempts.append(attempt)
  info.update(attempts=attempts, start_time=attempts[0]["start_time"])
  _write_info(workdir, info)
  return info, attempt


def end_attempt(workdir: str, info: dict, attempt: dict, code: int) -> None:
  """Records the attempt's end, wall time and exit status (and the run's total wall time)."""
  attempt.update(end_time=time.time(), exit_code=code)
  attempt["wall_time_sec"] = attempt["end_time"] - attempt["start_time"]
  info.update(wall_time_sec=sum(a.get("wall_time_sec", 0.0) for a in info["attempts"]),
              exit_code=code)
  _write_info(workdir, info)


def run_seed(argv: list[str], workdir: str, info: dict, *, root: str | None = None, echo=True,
             started: Callable[[subprocess.Popen], None] | None = None) -> int:
  """Runs ``python argv`` as a child process (``root``, where its module is imported from,
  first on its PYTHONPATH), teeing its output to ``workdir/train.log``, and appends the attempt
  to ``workdir/run_info.json`` (written before the start and after the end, so a killed parent
  still leaves the start time). ``started(child)`` is called once the child runs (the command
  forwards SIGTERM to it). Returns the child's exit status."""
  info, attempt = begin_attempt(workdir, info)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
  if started is not None:
    started(child)
  with open(os.path.join(workdir, "train.log"), "a") as log:
    for line in child.stdout:
      log.write(line)
      if echo:
        sys.stdout.write(line)
        sys.stdout.flush()
  code = child.wait()
  end_attempt(workdir, info, attempt, code)
  return code


# --- running seeds together (one process) ---------------------------------------------------------
class _Tee:
  """A text stream that writes to several (the console and each seed's train.log)."""

  def __init__(self, *streams):
    self.streams = streams

  def write(self, text: str) -> int:
    for s in self.streams:
      s.write(text)
    return len(text)

  def flush(self) -> None:
    for s in self.streams:
      s.flush()


def exit_status(e: BaseException | None) -> int:
  """The exit status a process leaving with ``e`` (None: normally) would have."""
  if e is None:
    return 0
  if isinstance(e, SystemExit):
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return 130 if isinstance(e, KeyboardInterrupt) else 1


def run_together(workdirs: list[str], infos: list[dict], train: Callable[[], object]) -> object:
  """Calls ``train()`` (which trains every seed in this process) with the output on the
  console and in each ``workdir/train.log``, recording the attempt in each run_info.json
  (exit status as ``exit_status``). Returns what ``train`` returns; re-raises what it raises."""
  begun = [begin_attempt(wd, info) for wd, info in zip(workdirs, infos)]
  with contextlib.ExitStack() as stack:
    logs = [stack.enter_context(open(os.path.join(wd, "train.log"), "a")) for wd in workdirs]
    error = None
    try:
      with contextlib.redirect_stdout(_Tee(sys.stdout, *logs)), \
          contextlib.redirect_stderr(_Tee(sys.stderr, *logs)):
        return train()
    except BaseException as e:
      error = e
      raise
    finally:
      for wd, (info, attempt) in zip(workdirs, begun):
        end_attempt(wd, info, attempt, exit_status(error))
