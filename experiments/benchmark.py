r"""Measures cnnlab's real train step (and eval step, and input pipeline), optionally against
the same model in PyTorch eager; or runs a fixed suite of cases into one JSON (gpu_check.sh).

    python -m experiments.benchmark --model=resnet18 --batch_size=16 --compare=torch \
        --torch_python=/path/to/venv/bin/python --json_out=/tmp/resnet18.json
    python -m experiments.benchmark --model=all --rounds=3 --compare=none
    python -m experiments.benchmark --model=resnet50 --dtype=bfloat16 --batch_size=256 \
        --pipeline=false --eval=false          # imports neither TensorFlow nor TFDS
    python -m experiments.benchmark --suite=gpu --json_out=$OUT/gpu_check.json

What is timed (per model; the library side is ``cnnlab.bench``):
- train: ``cnnlab.training.steps.make_train_step`` — the step the training loop runs: forward
  and backward with BatchNorm in train mode, softmax cross-entropy (+ auxiliary heads), L2 weight
  decay in the loss, SGD with momentum 0.9, the finiteness guard and the per-step metrics —
  jitted by ``steps.jit_steps`` with the state donated, on one fixed synthetic batch already on
  the device. A round is ``steps_per_round`` steps ended by one host sync (the loop, too, only
  syncs when it logs); img/s (examples/s for signals and clips) and ms/step are the median over
  ``--rounds`` rounds after ``--warmup`` rounds.
- compile: seconds to trace, lower and compile the train step (no persistent cache here).
- eval: the eval step (logits, loss, top-1/top-5 counts with a mask), same protocol.
- FLOPs: XLA's cost analysis of the compiled train step (and of the traced program, as a
  cross-check); MFU = achieved FLOP/s over ``--peak_gflops`` when given (2 Zen4 cores: ~166
  fp32 GFLOP/s, see BUILD_NOTES.md).
- memory: this process's RSS high-water mark (includes compilation), the device's peak bytes
  where the backend reports them (GPU/TPU), and XLA's own account of the step's buffers.
- pipeline: ``cnnlab.data.pipeline.measure_throughput`` for an image model's dataset family
  (MNIST, CIFAR-10 or ImageNet) at the same batch size; from ``--data_dir`` when the dataset is
  prepared there, else from small synthetic raw files prepared into a temp dir. This is the
  only part that imports TensorFlow: ``--pipeline=false`` runs where TF is not installed.

Inputs: ModelInfo.input_shape — (H, W, C) images, (L, C) signals, (T, H, W, C) clips;
``--image_size`` replaces the image side / signal length, ``--input_shape`` gives all of it.

``--compare=torch`` starts ``cnnlab.bench.torch_worker`` under ``--torch_python`` (an
interpreter with ``pip install torch==2.14.1 torchvision==0.29.1``; torch is never a cnnlab
dependency) as a long-lived worker and alternates rounds — one JAX round, one PyTorch round — so
both sides see the same machine load; the ratio reported is the median of the per-round ratios
(JAX img/s / PyTorch img/s), > 1 means cnnlab is faster. Next to a GPU the worker runs on CUDA.
On a CPU both sides use ``--threads`` threads (JAX: the process's CPU affinity, PyTorch:
``torch.set_num_threads``) and each round also records the process's CPU time, so a second ratio
("cpu ratio": images per CPU-second) is reported: on a machine shared with other jobs,
wall-clock rates of multi-threaded runs swing by 2-20x, while work per CPU-second stays within a
few percent. Run with ``--threads=1`` for the most stable comparison; the JSON records the load
average before and after.

Output: a table on stdout; ``--json_out`` writes every number (schema in
``cnnlab.bench.runner.RESULT_KEYS``; for a suite, ``cnnlab.bench.suite``).
"""
from __future__ import annotations

import json
import os
import platform
import sys

from absl import flags, logging

from cnnlab.bench import runner, suite
from cnnlab.bench.torch_client import TorchUnavailable, TorchWorker
from experiments import cli, perf

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registry name (python -c 'import cnnlab; "
                    "print(cnnlab.list_models())'), a comma-separated list, or 'all'.")
flags.DEFINE_integer("batch_size", 0, "Global batch; 0: 128 for <= 32 px images and 1-D "
                     "signals, 16 otherwise.")
flags.DEFINE_integer("image_size", 0, "Image side / signal length; 0: ModelInfo.input_shape.")
flags.DEFINE_list("input_shape", [], "Per-example input shape, channels last (e.g. 16,112,"
                  "112,3); overrides --image_size.")
flags.DEFINE_integer("rounds", 7, "Timed rounds (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed rounds after compilation.")
flags.DEFINE_integer("steps_per_round", 0, "Steps per round; 0: about --round_seconds.")
flags.DEFINE_float("round_seconds", 1.0, "Target round length when steps_per_round is 0.")
flags.DEFINE_enum("compare", "none", ["none", "torch"], "Also run the model in PyTorch eager.")
flags.DEFINE_string("torch_python", "python3", "Interpreter that has torch + torchvision.")
flags.DEFINE_enum("channels_last", "auto", ["auto", "on", "off"],
                  "PyTorch memory format; auto: whichever is faster for the model.")
flags.DEFINE_integer("threads", 0, "Threads for both sides; 0: every CPU this process may use.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params float32).")
flags.DEFINE_enum("kernels", "auto", ["auto", "plain", "cpu", "cpu+onednn"], "cnnlab.models.kernels "
                  "for the model: auto = what a training run picks here (config.choose_kernels: "
                  "cpu+onednn on a CPU host where the extension builds); plain = lax ops only; "
                  "cpu = cnnlab's CPU formulations with XLA's convolutions.")
flags.DEFINE_float("peak_gflops", 0.0, "Peak GFLOP/s of the device, for MFU (0: no MFU; a "
                   "suite uses the datasheet figure of a known GPU).")
cli.shared_flag(flags.DEFINE_integer, "host_devices", 0, "Split this CPU host into N XLA devices (data "
                     "parallel over them; experiments.perf.configure(host_devices=N)); 0: as "
                     "set.")
flags.DEFINE_string("perf", "default", f"experiments.perf profile: {', '.join(perf.PROFILES)}.")
flags.DEFINE_list("xla_flags", [], "Extra XLA flags for this process (appended to $XLA_FLAGS).")
flags.DEFINE_boolean("eval", True, "Also time the eval step.")
flags.DEFINE_boolean("pipeline", True, "Also measure the input pipeline's img/s (TensorFlow).")
flags.DEFINE_integer("pipeline_batches", 30, "Batches timed for the pipeline figure.")
cli.shared_flag(flags.DEFINE_string, "data_dir", None, "TFDS data dir to read the dataset from when prepared "
                    "there (else synthetic data in a temp dir).")
flags.DEFINE_string("json_out", None, "Write the results here as JSON.")
flags.DEFINE_enum("suite", None, list(suite.SUITES), "Run a fixed list of cases instead of "
                  "--model (gpu: what gpu_check.sh runs; tiny: the same on a CPU in seconds).")
flags.DEFINE_list("suite_cases", [], "Only these cases of --suite (keys like "
                  "resnet50_bfloat16_b256).")
flags.DEFINE_float("suite_budget_s", 380.0, "Wall-clock budget of a suite; cases that would "
                   "overrun it are skipped with a note.")
flags.DEFINE_string("suite_trial_of", None, "Append this suite run's cases, as an XLA-flag "
                    "trial (with --xla_flags), to the report at this path.")


def model_names(spec: str) -> list[str]:
  from cnnlab import models
  if spec == "all":
    return models.names()
  names = [s.strip() for s in spec.split(",") if s.strip()]
  bad = [n for n in names if n not in models.names()]
  if bad or not names:
    cli.usage_error(f"--model={spec!r}: unknown {bad}; valid: all, "
                    f"{', '.join(models.names())}")
  return names


def _options(threads: int, torch_device: str) -> runner.Options:
  try:
    shape = tuple(int(s) for s in FLAGS.input_shape)
  except ValueError:
    cli.usage_error(f"--input_shape={','.join(FLAGS.input_shape)!r} must be integers")
  return runner.Options(
      batch_size=FLAGS.batch_size, image_size=FLAGS.image_size, input_shape=shape,
      dtype=FLAGS.dtype, kernels=FLAGS.kernels, rounds=FLAGS.rounds, warmup=FLAGS.warmup,
      steps_per_round=FLAGS.steps_per_round, round_seconds=FLAGS.round_seconds,
      eval=FLAGS.eval, pipeline=FLAGS.pipeline, pipeline_batches=FLAGS.pipeline_batches,
      data_dir=FLAGS.data_dir, peak_gflops=FLAGS.peak_gflops, threads=threads,
      channels_last=FLAGS.channels_last, torch_device=torch_device)


def _check_shapes(names, opts: runner.Options) -> None:
  """Bad --input_shape / --image_size: one line before anything is compiled."""
  from cnnlab.bench import jax_side
  for name in names:
    try:
      jax_side.input_shape(name, opts.image_size, opts.input_shape)
    except ValueError as e:
      cli.usage_error(f"--input_shape: {e}")


def run_models(names, opts: runner.Options, torch) -> list[dict]:
  results = []
  for name in names:
    print(f"benchmarking {name} ...", flush=True)
    try:
      results.append(runner.bench_model(name, opts, torch))
    except TorchUnavailable as e:   # no comparison is possible: say so once and stop
      print(f"error: {e}", file=sys.stderr, flush=True)
      results.append({"model": name, "error": str(e)})
      break
    except RuntimeError as e:   # keep going with the other models
      print(f"  {name}: {e}", file=sys.stderr, flush=True)
      results.append({"model": name, "error": str(e)})
  ok = [r for r in results if "error" not in r]
  print(runner.table(ok))
  for r in ok:
    if r["ratio_train"] is not None:
      ev = "" if r["ratio_eval"] is None else f" (eval {r['ratio_eval']:.2f}x)"
      print(f"{r['model']}: cnnlab / PyTorch train = {r['ratio_train']:.2f}x wall-clock, "
            f"{r['ratio_train_cpu']:.2f}x per CPU-second{ev}")
  return results


def run_suite(torch, threads: int, torch_device: str) -> dict:
  try:
    cases = suite.select(FLAGS.suite, FLAGS.suite_cases)
  except ValueError as e:
    cli.usage_error(str(e))
  json_path = None if FLAGS.suite_trial_of else FLAGS.json_out
  report = suite.run(cases, timing=suite.TIMING[FLAGS.suite], budget_s=FLAGS.suite_budget_s,
                     json_path=json_path, peak=FLAGS.peak_gflops / 1e3 or None, torch=torch,
                     torch_device=torch_device, threads=threads,
                     ceiling_sizes=(None if FLAGS.suite_trial_of
                                    else suite.CEILING_SIZES[FLAGS.suite]),
                     log=lambda line: print(line, flush=True))
  if FLAGS.suite_trial_of:
    suite.record_trial(FLAGS.suite_trial_of, FLAGS.xla_flags, report)
  return report


def _check_flags() -> None:
  if not FLAGS.model and not FLAGS.suite:
    cli.usage_error("--model is required (a registry name, a list, or 'all'), or --suite")
  if FLAGS.model and FLAGS.suite:
    cli.usage_error(f"--model={FLAGS.model!r} and --suite={FLAGS.suite!r}: give one")
  if FLAGS.rounds < 1 or FLAGS.warmup < 0 or FLAGS.threads < 0 or FLAGS.host_devices < 0:
    cli.usage_error("--rounds must be >= 1, --warmup, --threads and --host_devices >= 0")
  if FLAGS.suite_trial_of and not os.path.isfile(FLAGS.suite_trial_of):
    cli.usage_error(f"--suite_trial_of={FLAGS.suite_trial_of!r}: no such report")


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  _check_flags()
  try:
    applied = perf.configure(FLAGS.perf, threads=FLAGS.threads or None,
                             host_devices=FLAGS.host_devices or None, xla_flags=FLAGS.xla_flags)
  except ValueError as e:
    cli.usage_error(str(e))
  threads = FLAGS.threads or len(os.sched_getaffinity(0))
  logging.set_verbosity(logging.WARNING)
  load_before = os.getloadavg()
  import jax
  torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"   # starts the backend
  try:
    perf.check_applied(applied)
  except RuntimeError as e:
    cli.usage_error(str(e))
  names = None if FLAGS.suite else model_names(FLAGS.model)
  opts = _options(threads, torch_device)
  if names:
    _check_shapes(names, opts)
  try:
    torch = TorchWorker(FLAGS.torch_python) if FLAGS.compare == "torch" else None
  except RuntimeError as e:
    cli.usage_error(str(e))
  try:
    if FLAGS.suite:
      report = run_suite(torch, threads, torch_device)
      return 0 if all("error" not in c for c in report["cases"]) else 1
    results = run_models(names, opts, torch)
  finally:
    if torch is not None:
      torch.close()
  out = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                     "cpus": threads, "jax": jax.__version__,
                     "device": str(jax.devices()[0].device_kind),
                     "xla_flags": os.environ.get("XLA_FLAGS", ""), "perf": FLAGS.perf,
                     "perf_applied": applied, "loadavg_before": load_before,
                     "loadavg_after": os.getloadavg()},
         "flags": {k: FLAGS[k].value for k in ("model", "batch_size", "image_size",
                                               "input_shape", "rounds", "warmup",
                                               "steps_per_round", "compare", "threads",
                                               "dtype", "kernels", "peak_gflops")},
         "results": results}
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(out, f, indent=2)
  return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
  cli.run(main, uses_tensorflow=False)   # perf.configure must run before the backend starts
