r"""Trains a recipe: ``python -m experiments.train --config=experiments/configs/<recipe>.py
--workdir=DIR [--config.key=value ...] [--host_devices=N]``.

A thin shell over ``cnnlab.training.train_and_evaluate``; the process-wide set-up lives here:
XLA host devices (experiments/perf.py), jax.distributed, the config resolved once
(``cnnlab.config.resolve``, with first-use dataset preparation from $CNNLAB_RAW_DATA_DIR), the
persistent compilation cache and the SIGTERM handler. Exit status: 0 done, 2 usage or
config error (one line, no traceback), 3 non-finite loss (nothing saved after the last good
step), 74 a checkpoint could not be written (disk full, unwritable; earlier ones intact),
75 preempted (SIGTERM; checkpoint written — run the same command again to resume),
1 anything else.
"""
import os
import sys

from absl import app, flags, logging

from experiments import cli

_CONFIG = cli.shared_config_flag("Recipe file (experiments/configs/).")
_WORKDIR = cli.shared_string_flag("workdir", None, "Directory for checkpoints, logs and metrics.")
_HOST_DEVICES = cli.shared_flag(
    flags.DEFINE_integer, "host_devices", 0, "CPU hosts: split this host into N XLA devices and train data-parallel "
    "over them (experiments/perf.py; 1.1-1.3x faster for LeNet-5 / ResNet-20 / ResNet-18 on 2 cores, "
    "see BUILD_NOTES.md); "
    "0: one device per host.")
cli.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not _WORKDIR.value:
    cli.usage_error("--workdir is required")
  if _HOST_DEVICES.value < 0:
    cli.usage_error(f"--host_devices={_HOST_DEVICES.value} must be >= 0")
  applied = {}
  if _HOST_DEVICES.value:   # before anything starts JAX's backend (loading the config may)
    from experiments import perf
    applied = perf.configure(host_devices=_HOST_DEVICES.value)
  config = cli.load_config(_CONFIG)
  cli.init_distributed()
  workdir = os.path.abspath(_WORKDIR.value)
  with cli.errors_to_exit_codes():
    final = train(config, workdir, perf_applied=applied)
  print(done_line(final))
  print(f"results in {workdir} (metrics.jsonl, final_metrics.json, checkpoints/); "
        f"TensorBoard: tensorboard --logdir {workdir}")


def done_line(final: dict) -> str:
  """The last line of a run: its result, and which checkpoint it comes from."""
  keys = [k for k in ("eval_mean_dice", "eval_pixel_error", "eval_accuracy") if k in final]
  result = " ".join(f"{k}={final[k]:.4f}" for k in keys) or "no evaluation"
  if final.get("selected_step") is not None:
    last = " ".join(f"{k}={final['last_' + k]:.4f}" for k in keys if "last_" + k in final)
    return (f"done after {final['step']} steps: {result} of the checkpoint at step "
            f"{final['selected_step']}, selected by {final['selected_by']} (last step: {last})")
  return f"done: {result} after {final['step']} steps"


def train(config, workdir: str, *, perf_applied: dict | None = None) -> dict:
  """What the command does after parsing flags (tests call it in-process)."""
  from cnnlab import training  # after jax.distributed is initialised
  from experiments import perf
  spec = cli.resolve(config)
  perf.check_applied(perf_applied or {})
  cli.setup_compilation_cache(spec, workdir)
  with cli.StopFlag() as stop:
    return training.train_and_evaluate(spec, workdir, stop_requested=stop)


if __name__ == "__main__":
  cli.run(main)
