r"""Runs one recipe over several seeds, one workdir per seed, and records how each run was made.

    CNNLAB_RAW_DATA_DIR=../shared/datasets python -m experiments.reproduce --recipe=lenet5_mnist --seeds=3
    python -m experiments.reproduce --recipe=resnet20_cifar10:56 --seeds=3 --group=resnet56_cifar10
    python -m experiments.reproduce --recipe=lenet5_mnist --seeds=1 --override=num_epochs=1

Seed k trains in ``<runs>/<group>/seed<k>`` with

    python -m experiments.train --config=experiments/configs/<recipe>.py[:<arg>] \
        --workdir=<runs>/<group>/seed<k> --config.seed=<k> [--config.<override> ...]

in a child process (its output goes to the console and to ``<workdir>/train.log``; SIGTERM is passed
on to it, Ctrl-C reaches it through the terminal), and
``<workdir>/run_info.json`` records: the recipe, the exact command (with the data-location
environment variables it ran under) and this reproduce command, the hardware (CPU model from
/proc/cpuinfo, logical and usable cores, memory, GPUs from nvidia-smi), software versions and
the git commit, and one entry per attempt with its start and end time (Unix seconds), wall time
and exit status. A preempted seed (exit 75) is resumed by running the same reproduce command
again, which adds an attempt; a seed whose workdir already holds ``final_metrics.json`` is
skipped. ``experiments/report.py`` reads these files: wall time and time-to-accuracy are
measured from the start of the child process, so they include start-up, data loading and
compilation.

Exit status: 0 all seeds done; 2 usage error; otherwise the first failing seed's status
(75: preempted, run the same command again).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from importlib import metadata

from absl import flags

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
RUN_INFO = "run_info.json"
ENV_KEYS = ("CNNLAB_RAW_DATA_DIR", "TFDS_DATA_DIR", "XLA_FLAGS", "JAX_PLATFORMS",
            "CUDA_VISIBLE_DEVICES")

_RECIPE = flags.DEFINE_string("recipe", None, "Recipe name in experiments/configs, with an "
                              "optional config argument: NAME[:ARG].")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds.")
_FIRST_SEED = flags.DEFINE_integer("first_seed", 0, "Seeds are first_seed, first_seed+1, ...")
if "runs" not in flags.FLAGS:  # shared by experiments/report.py and experiments/reproduce.py
  flags.DEFINE_string("runs", "runs", "Root directory of run groups: <runs>/<group>/<seed>/.")
_GROUP = flags.DEFINE_string("group", None, "Group directory name (default: the recipe, "
                             "plus _ARG when an argument is given).")
_OVERRIDE = flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE, passed on "
                                      "as --config.KEY=VALUE (repeatable).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")


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


def software() -> dict:
  out = {"python": platform.python_version()}
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"):
    try:
      out[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      pass
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, timeout=20).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, timeout=20).stdout.strip()
    if commit:
      out["git_commit"] = commit + (" (uncommitted changes)" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    pass
  return out


# --- commands ------------------------------------------------------------------------------------
def parse_recipe(recipe: str) -> tuple[str, str | None]:
  name, _, arg = recipe.partition(":")
  if not name or not os.path.exists(os.path.join(CONFIG_DIR, name + ".py")) or name == "base":
    known = sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                   if f.endswith(".py") and f not in ("__init__.py", "base.py"))
    raise ValueError(f"--recipe={recipe!r} names no recipe; valid: {', '.join(known)}")
  return name, (arg or None)


def _shown_path(path: str) -> str:
  rel = os.path.relpath(path)
  return path if rel.startswith("..") else rel


def train_argv(name: str, arg: str | None, workdir: str, seed: int,
               overrides=()) -> list[str]:
  """The training command for one seed, without the interpreter."""
  config = _shown_path(os.path.join(CONFIG_DIR, name + ".py")) + (f":{arg}" if arg else "")
  argv = ["-m", "experiments.train", f"--config={config}", f"--workdir={workdir}",
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


def run_seed(argv: list[str], workdir: str, info: dict, *, echo=True) -> int:
  """Runs ``python argv`` as a child process, teeing its output to ``workdir/train.log``, and
  appends the attempt to ``workdir/run_info.json`` (written before the start and after the
  end, so a killed parent still leaves the start time). SIGTERM is passed on to the child;
  SIGINT is left to reach it from the terminal. Returns the child's exit status."""
  info = {**_read_info(workdir), **info}
  attempts = list(info.get("attempts", []))
  attempt = {"start_time": time.time()}
  attempts.append(attempt)
  info.update(attempts=attempts, start_time=attempts[0]["start_time"])
  _write_info(workdir, info)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)

  def forward(signum, frame):
    child.send_signal(signum)

  def ignore(signum, frame):  # Ctrl-C reaches the child through the terminal's process group
    pass

  old = {}
  for sig, handler in ((signal.SIGTERM, forward), (signal.SIGINT, ignore)):
    try:
      old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
      pass
  try:
    with open(os.path.join(workdir, "train.log"), "a") as log:
      for line in child.stdout:
        log.write(line)
        if echo:
          sys.stdout.write(line)
          sys.stdout.flush()
    code = child.wait()
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)
  attempt.update(end_time=time.time(), exit_code=code)
  attempt["wall_time_sec"] = attempt["end_time"] - attempt["start_time"]
  info.update(wall_time_sec=sum(a.get("wall_time_sec", 0.0) for a in attempts),
              exit_code=code)
  _write_info(workdir, info)
  return code


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _RECIPE.value:
    cli.usage_error("--recipe is required (e.g. --recipe=lenet5_mnist)")
  if _SEEDS.value < 1 or _FIRST_SEED.value < 0:
    cli.usage_error(f"--seeds={_SEEDS.value} must be >= 1 and --first_seed="
                    f"{_FIRST_SEED.value} >= 0")
  try:
    name, arg = parse_recipe(_RECIPE.value)
    group = _GROUP.value or name + (f"_{arg.replace(',', '_')}" if arg else "")
    seeds = range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value)
    plans = [(seed, os.path.join(flags.FLAGS.runs, group, f"seed{seed}")) for seed in seeds]
    argvs = {seed: train_argv(name, arg, wd, seed, _OVERRIDE.value) for seed, wd in plans}
  except ValueError as e:
    cli.usage_error(str(e))
  group_command = shell_command(["-m", "experiments.reproduce", *sys.argv[1:]])
  common = {"recipe": name, "config_arg": arg, "group": group, "overrides": _OVERRIDE.value,
            "group_command": group_command, "cwd": os.getcwd(),
            "hardware": hardware(), "software": software()}
  for seed, workdir in plans:
    command = shell_command(argvs[seed])
    if _DRY_RUN.value:
      print(command)
      continue
    if os.path.exists(os.path.join(workdir, "final_metrics.json")):
      print(f"seed {seed}: {workdir} already finished; skipped", flush=True)
      continue
    print(f"=== seed {seed}: {command}", flush=True)
    code = run_seed(argvs[seed], workdir, {**common, "seed": seed, "command": command,
                                           "argv": ["python", *argvs[seed]]})
    if code != 0:
      print(f"error: seed {seed} exited with status {code}; see {workdir}/train.log"
            + (" (preempted: run the same command again to resume)" if code == 75 else ""),
            file=sys.stderr, flush=True)
      sys.exit(code)
  if not _DRY_RUN.value:
    print(f"done: {len(plans)} seed(s) in {os.path.join(flags.FLAGS.runs, group)}; report: "
          f"python -m experiments.report --runs={flags.FLAGS.runs}", flush=True)


if __name__ == "__main__":
  cli.run(main, uses_tensorflow=False)
