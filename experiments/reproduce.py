r"""Runs one recipe over several seeds, one workdir per seed, and records how each run was made
(the command; the driver itself is ``cnnlab.reproduce``).

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
skipped. ``python -m experiments.report --runs=<runs>`` reads these files and writes
``<runs>/RESULTS.md`` (the repository's docs/RESULTS.md only with ``--out=docs/RESULTS.md``):
wall time and time-to-accuracy are measured from the start of the child process, so they
include start-up, data loading and compilation.

With ``--vmap`` the seeds train together in this one process, with one compiled train step
over a leading seed axis (``cnnlab.training.train_seeds``; cnnlab/training/seeds.py says what
carries the axis and what is refused):

    python -m experiments.reproduce --recipe=fcn1d_ucr --seeds=5 --vmap \
        --override=dataset.name=ucr/ItalyPowerDemand

Each seed's workdir is written as its run alone writes it (the same files; its numbers equal
the lone run's up to float rounding), so report, resume, evaluate, predict and visualize read
it unchanged. The console output goes to every seed's ``train.log``; its ``run_info.json``
records this command as ``command``, the seed's lone training command as ``alone_command`` and
the seeds it trained with as ``vmap_seeds``; each attempt's wall time is the group's. Seeds
already finished are skipped; rerunning the same command resumes the others, each from its own
latest checkpoint (seeds at different steps are first brought to a common step). Exit status
as ``experiments.train``'s (75: preempted, run the same command again).

Exit status: 0 all seeds done; 2 usage error; otherwise the first failing seed's status
(75: preempted, run the same command again).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

from absl import flags

from cnnlab.reproduce import (Recipes, hardware, parse_recipe, run_seed, shell_command,
                              software, train_argv)
from experiments import cli
from experiments.configs import RECIPES

# This repository's recipes, its training command, and the checkout both are imported from.
HERE = Recipes(package=RECIPES, train_module="experiments.train",
               root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RECIPE = flags.DEFINE_string("recipe", None, "Recipe name in experiments/configs, with an "
                              "optional config argument: NAME[:ARG].")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds.")
_FIRST_SEED = flags.DEFINE_integer("first_seed", 0, "Seeds are first_seed, first_seed+1, ...")
_RUNS = cli.shared_string_flag("runs", "runs", "Root directory of run groups: "
                               "<runs>/<group>/<seed>/.")   # shared with experiments/report.py
_GROUP = flags.DEFINE_string("group", None, "Group directory name (default: the recipe, "
                             "plus _ARG when an argument is given).")
_OVERRIDE = flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE, passed on "
                                      "as --config.KEY=VALUE (repeatable).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
_VMAP = flags.DEFINE_bool("vmap", False, "Train the seeds together in this process: one "
                          "compiled train step over a leading seed axis; each seed's workdir "
                          "as its run alone writes it.")
_SEED_MAP = flags.DEFINE_enum("seed_map", "auto", ["auto", "vmap", "unroll"], "With --vmap: how "
                              "the step maps over the seeds (cnnlab/training/seeds.py): vmap "
                              "(batched ops), unroll (each seed's ops as its lone run's, bit "
                              "for bit), auto (unroll on a CPU, vmap on accelerators).")


@contextlib.contextmanager
def _signals_to_child():
  """SIGTERM is passed on to the running seed's process; SIGINT is left to reach it from the
  terminal (same process group). Restored afterwards."""
  children = []
  old = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda s, f: [
             c.send_signal(s) for c in children if c.poll() is None]),
         signal.SIGINT: signal.signal(signal.SIGINT, lambda s, f: None)}
  try:
    yield children.append
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _RECIPE.value:
    cli.usage_error("--recipe is required (e.g. --recipe=lenet5_mnist)")
  if _SEEDS.value < 1 or _FIRST_SEED.value < 0:
    cli.usage_error(f"--seeds={_SEEDS.value} must be >= 1 and --first_seed="
                    f"{_FIRST_SEED.value} >= 0")
  try:
    name, arg = parse_recipe(_RECIPE.value, HERE)
    group = _GROUP.value or name + (f"_{arg.replace(',', '_')}" if arg else "")
    seeds = range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value)
    plans = [(seed, os.path.join(_RUNS.value, group, f"seed{seed}")) for seed in seeds]
    argvs = {seed: train_argv(HERE, name, arg, wd, seed, _OVERRIDE.value) for seed, wd in plans}
  except ValueError as e:
    cli.usage_error(str(e))
  group_command = shell_command(["-m", "experiments.reproduce", *sys.argv[1:]])
  common = {"recipe": name, "config_arg": arg, "group": group, "overrides": _OVERRIDE.value,
            "group_command": group_command, "cwd": os.getcwd(),
            "hardware": hardware(), "software": software(HERE.root)}
  if _VMAP.value and not _DRY_RUN.value:
    _run_vmapped(plans, argvs, common, group_command)
    return
  for seed, workdir in plans:
    command = shell_command(argvs[seed])
    if _DRY_RUN.value:
      print(command)
      continue
    if os.path.exists(os.path.join(workdir, "final_metrics.json")):
      print(f"seed {seed}: {workdir} already finished; skipped", flush=True)
      continue
    print(f"=== seed {seed}: {command}", flush=True)
    with _signals_to_child() as started:
      code = run_seed(argvs[seed], workdir, {**common, "seed": seed, "command": command,
                                             "argv": ["python", *argvs[seed]]},
                      root=HERE.root, started=started)
    if code != 0:
      print(f"error: seed {seed} exited with status {code}; see {workdir}/train.log"
            + (" (preempted: run the same command again to resume)" if code == 75 else ""),
            file=sys.stderr, flush=True)
      sys.exit(code)
  if not _DRY_RUN.value:
    print(f"done: {len(plans)} seed(s) in {os.path.join(_RUNS.value, group)}; report "
          f"(writes {os.path.join(_RUNS.value, 'RESULTS.md')}): "
          f"python -m experiments.report --runs={_RUNS.value}", flush=True)


def _unfinished(plans) -> list[tuple[int, str]]:
  todo = []
  for seed, workdir in plans:
    if os.path.exists(os.path.join(workdir, "final_metrics.json")):
      print(f"seed {seed}: {workdir} already finished; skipped", flush=True)
    else:
      todo.append((seed, workdir))
  return todo


def _config_of(argv: list[str]):
  """The config ``python argv`` (a training command) trains, parsed as experiments.train
  parses it (ml_collections: the recipe file and its --config.KEY=VALUE overrides)."""
  from ml_collections import config_flags
  args = [a for a in argv if a.startswith("--config")]
  values = flags.FlagValues()
  try:
    holder = config_flags.DEFINE_config_file("config", None, "recipe", flag_values=values,
                                             sys_argv=["train", *args])
    values(["train", *args])
  except Exception as e:
    cli.usage_error(cli.flag_error_line(e, args))
  return cli.load_config(holder)


def _run_vmapped(plans, argvs, common: dict, group_command: str) -> None:
  todo = _unfinished(plans)
  if not todo:
    return
  seeds, workdirs = [s for s, _ in todo], [wd for _, wd in todo]
  config = _config_of(argvs[seeds[0]])
  cli._import_tensorflow_quietly()      # the input pipeline runs in this process
  from cnnlab import training
  from cnnlab.reproduce import run_together
  infos = [{**common, "seed": s, "command": group_command, "vmap_seeds": seeds,
            "alone_command": shell_command(argvs[s]),
            "argv": ["python", "-m", "experiments.reproduce", *sys.argv[1:]]}
           for s in seeds]
  print(f"=== seeds {', '.join(map(str, seeds))} together in one process: {group_command}",
        flush=True)

  def train():
    with cli.errors_to_exit_codes():
      spec = cli.resolve(config)
      cli.setup_compilation_cache(spec, workdirs[0])
      with cli.StopFlag() as stop:
        return training.train_seeds(spec, seeds, workdirs, stop_requested=stop,
                                    seed_map=_SEED_MAP.value)

  for wd in workdirs:
    os.makedirs(wd, exist_ok=True)
  finals = run_together(workdirs, infos, train)
  for seed, final in zip(seeds, finals):
    shown = " ".join(f"{k}={final[k]:.4f}" for k in ("eval_accuracy", "eval_mean_dice")
                     if k in final)
    print(f"seed {seed}: done after {final['step']} steps: {shown or 'no evaluation'}"
          + (f" (checkpoint of step {final['selected_step']})"
             if final.get("selected_step") is not None else ""), flush=True)
  print(f"done: {len(plans)} seed(s) in {os.path.dirname(workdirs[0])}; report (writes "
        f"{os.path.join(_RUNS.value, 'RESULTS.md')}): python -m experiments.report "
        f"--runs={_RUNS.value}", flush=True)


if __name__ == "__main__":
  cli.run(main, uses_tensorflow=False)
