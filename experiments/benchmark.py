r"""Measures cnnlab's real train step (and eval step, and input pipeline), optionally against
the same model in PyTorch eager.

    python -m experiments.benchmark --model=resnet18 --batch_size=16 --compare=torch \
        --torch_python=/path/to/venv/bin/python --json_out=/tmp/resnet18.json
    python -m experiments.benchmark --model=all --rounds=3 --compare=none

What is timed (per model):
- train: ``cnnlab.training.steps.make_train_step`` — the step the training loop runs: forward
  and backward with BatchNorm in train mode, softmax cross-entropy (+ auxiliary heads), L2 weight
  decay in the loss, SGD with momentum 0.9, the finiteness guard and the per-step metrics —
  jitted by ``steps.jit_steps`` with the state donated, on one fixed synthetic batch already on
  the device. A round is ``steps_per_round`` steps ended by one host sync (the loop, too, only
  syncs when it logs); img/s and ms/step are the median over ``--rounds`` rounds after
  ``--warmup`` rounds.
- compile: seconds to lower and compile the train step (no persistent cache is used here).
- eval: the eval step (logits, loss, top-1/top-5 counts with a mask), same protocol.
- FLOPs: XLA's cost analysis of the compiled train step; MFU = achieved FLOP/s over
  ``--peak_gflops`` when given (2 Zen4 cores: ~166 fp32 GFLOP/s, see BUILD_NOTES.md).
- memory: this process's RSS high-water mark (includes compilation), and the device's peak
  bytes where the backend reports them (GPU/TPU).
- pipeline: ``cnnlab.data.pipeline.measure_throughput`` for the model's dataset family (MNIST,
  CIFAR-10 or ImageNet) at the same batch size; from ``--data_dir`` when the dataset is prepared
  there, else from small synthetic raw files (cnnlab.data.synthetic) prepared into a temp dir.

``--compare=torch`` starts ``experiments/torch_bench.py`` under ``--torch_python`` (an
interpreter with ``pip install torch==2.14.1 torchvision==0.29.1``; torch is never a cnnlab
dependency) as a long-lived worker and alternates rounds — one JAX round, one PyTorch round — so
both sides see the same machine load; the ratio reported is the median of the per-round ratios
(JAX img/s / PyTorch img/s), > 1 means cnnlab is faster. Both sides use ``--threads`` threads
(JAX: the process's CPU affinity, PyTorch: ``torch.set_num_threads``). Each round also records
the process's CPU time, so a second ratio ("cpu ratio": images per CPU-second) is reported: on a
machine shared with other jobs, wall-clock rates of multi-threaded runs swing by 2-20x (a
descheduled thread stalls every parallel region; PyTorch's OpenMP suffers most), while work per
CPU-second stays within a few percent. Run with ``--threads=1`` for the most stable comparison;
the JSON records the load average before and after.

Output: a table on stdout; ``--json_out`` writes every number (schema in ``RESULT_KEYS``).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app, flags, logging

from cnnlab import perf
from experiments import cli
from experiments.bench_jax import JaxBench, device_peak_mb, peak_rss_mb, pipeline_throughput

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # before TensorFlow (the pipeline) loads

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registry name (python -c 'import cnnlab; "
                    "print(cnnlab.list_models())'), a comma-separated list, or 'all'.")
flags.DEFINE_integer("batch_size", 0, "Global batch; 0: 128 for 28-32 px models, 16 otherwise.")
flags.DEFINE_integer("image_size", 0, "Input side; 0: the model's ModelInfo.input_shape.")
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
flags.DEFINE_float("peak_gflops", 0.0, "Peak GFLOP/s of the device, for MFU (0: no MFU).")
flags.DEFINE_integer("host_devices", 0, "Split this CPU host into N XLA devices (data "
                     "parallel over them; cnnlab.perf.configure(host_devices=N)); 0: as set.")
flags.DEFINE_string("perf", "default", f"cnnlab.perf profile: {', '.join(perf.PROFILES)}.")
flags.DEFINE_list("xla_flags", [], "Extra XLA flags for this process (appended to $XLA_FLAGS).")
flags.DEFINE_boolean("eval", True, "Also time the eval step.")
flags.DEFINE_boolean("pipeline", True, "Also measure the input pipeline's img/s.")
flags.DEFINE_integer("pipeline_batches", 30, "Batches timed for the pipeline figure.")
flags.DEFINE_string("data_dir", None, "TFDS data dir to read the dataset from when prepared "
                    "there (else synthetic data in a temp dir).")
flags.DEFINE_string("json_out", None, "Write the results here as JSON.")

RESULT_KEYS = ("model", "batch_size", "image_size", "dtype", "threads", "devices",
               "steps_per_round",
               "compile_s", "train_img_s", "train_ms_step", "train_img_s_rounds",
               "train_img_per_cpu_s", "eval_img_s", "flops_per_step", "achieved_gflops", "mfu",
               "peak_rss_mb", "device_peak_mb", "pipeline_dataset", "pipeline_source",
               "pipeline_img_s", "pipeline_vs_train", "torch", "ratio_train", "ratio_train_cpu",
               "ratio_eval")


# --- the PyTorch worker -------------------------------------------------------------------------
class TorchUnavailable(RuntimeError):
  """The PyTorch worker is gone (torch missing, crashed): no comparison for any model."""


class TorchWorker:
  """experiments/torch_bench.py in its own process, one JSON request / reply per line."""

  def __init__(self, python: str):
    self.python = python
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_bench.py")
    try:
      self.proc = subprocess.Popen([python, script, "--serve"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, bufsize=1)
    except OSError as e:
      raise RuntimeError(f"--torch_python={python!r} cannot be started: {e}") from None

  def call(self, **cmd) -> dict:
    try:
      self.proc.stdin.write(json.dumps(cmd) + "\n")
      self.proc.stdin.flush()
    except OSError:   # broken pipe: the worker is gone; readline below says so
      pass
    line = self.proc.stdout.readline()
    if not line:
      raise TorchUnavailable(
          f"the PyTorch worker exited (status {self.proc.wait()}); is torch installed for "
          f"--torch_python={self.python}? pip install torch==2.14.1 torchvision==0.29.1")
    reply = json.loads(line)
    if not reply.pop("ok", False):
      raise RuntimeError(f"PyTorch worker: {reply.get('error')}")
    return reply

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()


# --- driver -------------------------------------------------------------------------------------
def _median_rate(rounds, clock: str = "seconds") -> float:
  return statistics.median(r["images"] / r[clock] for r in rounds)


def _paired_ratio(mine, theirs, clock: str = "seconds") -> float:
  """Median over rounds of (JAX img/s) / (PyTorch img/s), each pair measured back to back."""
  return statistics.median((a["images"] / a[clock]) / (b["images"] / b[clock])
                           for a, b in zip(mine, theirs))


def _interleaved(kind: str, jax_side: JaxBench, torch: TorchWorker | None, steps: int,
                 rounds: int, warmup: int):
  """Alternates JAX and PyTorch rounds (which side goes first alternates too)."""
  mine, theirs = [], []
  for r in range(warmup + rounds):
    order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
    for side in order:
      if side == "jax":
        out = getattr(jax_side, kind)(steps)
        (mine if r >= warmup else []).append(out)
      elif torch is not None:
        out = torch.call(cmd=kind, steps=steps)
        (theirs if r >= warmup else []).append(out)
  return mine, theirs


def default_batch(image_size: int) -> int:
  return 128 if image_size <= 32 else 16


def bench_model(name: str, torch: TorchWorker | None, threads: int) -> dict:
  from cnnlab import models
  info = models.info(name)
  size = FLAGS.image_size or info.input_shape[0]
  batch = FLAGS.batch_size or default_batch(size)
  res = {"model": name, "batch_size": batch, "image_size": size, "dtype": FLAGS.dtype,
         "threads": threads}
  jb = JaxBench(name, batch, size, FLAGS.dtype)
  res["devices"] = jb.devices
  res["compile_s"] = jb.compile_s
  jb.train(1)
  steps = FLAGS.steps_per_round
  if steps <= 0:
    one = min(jb.train(1)["seconds"] for _ in range(2))
    steps = max(1, int(round(FLAGS.round_seconds / max(one, 1e-6))))
  res["steps_per_round"] = steps
  t_info = torch_error = None
  if torch is not None:
    try:
      t_info = torch.call(cmd="setup", model=name, batch_size=batch, image_size=size,
                          channels=info.input_shape[-1], num_classes=jb.num_classes,
                          threads=threads, dtype=FLAGS.dtype, channels_last=FLAGS.channels_last,
                          aux_loss_weight=float(jb.config.aux_loss_weight),
                          weight_decay=float(jb.config.optimizer.weight_decay))
    except TorchUnavailable:
      raise
    except RuntimeError as e:    # e.g. no PyTorch equivalent (lenet5_1998): JAX side only
      print(f"  {name}: no PyTorch comparison: {e}", file=sys.stderr, flush=True)
      torch, torch_error = None, str(e)
  mine, theirs = _interleaved("train", jb, torch, steps, FLAGS.rounds, FLAGS.warmup)
  res["train_img_s"] = _median_rate(mine)
  res["train_ms_step"] = 1000.0 * batch / res["train_img_s"]
  res["train_img_s_rounds"] = [r["images"] / r["seconds"] for r in mine]
  res["train_img_per_cpu_s"] = _median_rate(mine, "cpu_seconds")
  res["flops_per_step"] = jb.flops
  res["achieved_gflops"] = jb.flops * res["train_img_s"] / batch / 1e9
  res["mfu"] = res["achieved_gflops"] / FLAGS.peak_gflops if FLAGS.peak_gflops > 0 else None
  res["eval_img_s"] = None
  ev_mine = ev_theirs = []
  if FLAGS.eval:
    ev_steps = max(1, steps * 2)
    ev_mine, ev_theirs = _interleaved("eval", jb, torch, ev_steps, max(3, FLAGS.rounds // 2), 1)
    res["eval_img_s"] = _median_rate(ev_mine)
  res["peak_rss_mb"] = peak_rss_mb()
  res["device_peak_mb"] = device_peak_mb()
  res["torch"] = res["ratio_train"] = res["ratio_train_cpu"] = res["ratio_eval"] = None
  if torch_error:
    res["torch"] = {"error": torch_error}
  if torch is not None:
    t = {**t_info, "train_img_s": _median_rate(theirs),
         "train_img_s_rounds": [r["images"] / r["seconds"] for r in theirs],
         "train_img_per_cpu_s": _median_rate(theirs, "cpu_seconds")}
    t["train_ms_step"] = 1000.0 * batch / t["train_img_s"]
    res["ratio_train"] = _paired_ratio(mine, theirs)
    res["ratio_train_cpu"] = _paired_ratio(mine, theirs, "cpu_seconds")
    if FLAGS.eval:
      t["eval_img_s"] = _median_rate(ev_theirs)
      res["ratio_eval"] = _paired_ratio(ev_mine, ev_theirs)
    res["torch"] = t
  del jb
  res.update(pipeline_dataset=None, pipeline_source=None, pipeline_img_s=None,
             pipeline_vs_train=None)
  if FLAGS.pipeline:
    res.update(pipeline_throughput(name, batch, size, FLAGS.data_dir, FLAGS.pipeline_batches))
    res["pipeline_vs_train"] = res["pipeline_img_s"] / res["train_img_s"]
  return res


def _fmt(v, spec="{:,.1f}") -> str:
  return "-" if v is None else spec.format(v)


def table(results) -> str:
  head = ("model", "batch", "size", "dev", "train img/s", "ms/step", "torch img/s", "ratio",
          "cpu ratio", "eval img/s", "torch eval", "ratio", "compile s", "GFLOP/s", "MFU",
          "RSS MB", "pipe img/s")
  rows = [head]
  for r in results:
    t = r.get("torch") or {}
    rows.append((r["model"], str(r["batch_size"]), str(r["image_size"]),
                 str(r.get("devices", 1)), _fmt(r["train_img_s"]), _fmt(r["train_ms_step"]),
                 _fmt(t.get("train_img_s")),
                 _fmt(r["ratio_train"], "{:.2f}"), _fmt(r.get("ratio_train_cpu"), "{:.2f}"),
                 _fmt(r["eval_img_s"]),
                 _fmt(t.get("eval_img_s")), _fmt(r["ratio_eval"], "{:.2f}"),
                 _fmt(r["compile_s"]), _fmt(r["achieved_gflops"]), _fmt(r["mfu"], "{:.1%}"),
                 _fmt(r["peak_rss_mb"], "{:,.0f}"), _fmt(r["pipeline_img_s"], "{:,.0f}")))
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                             enumerate(zip(row, widths))) for row in rows)


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


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not FLAGS.model:
    cli.usage_error("--model is required (a registry name, a list, or 'all')")
  if FLAGS.rounds < 1 or FLAGS.warmup < 0 or FLAGS.threads < 0 or FLAGS.host_devices < 0:
    cli.usage_error("--rounds must be >= 1, --warmup, --threads and --host_devices >= 0")
  try:
    applied = perf.configure(FLAGS.perf, threads=FLAGS.threads or None,
                             host_devices=FLAGS.host_devices or None, xla_flags=FLAGS.xla_flags)
  except ValueError as e:
    cli.usage_error(str(e))
  names = model_names(FLAGS.model)
  threads = FLAGS.threads or len(os.sched_getaffinity(0))
  logging.set_verbosity(logging.WARNING)
  load_before = os.getloadavg()
  import jax
  try:
    torch = TorchWorker(FLAGS.torch_python) if FLAGS.compare == "torch" else None
  except RuntimeError as e:
    cli.usage_error(str(e))
  results = []
  try:
    for name in names:
      print(f"benchmarking {name} ...", flush=True)
      try:
        results.append(bench_model(name, torch, threads))
      except TorchUnavailable as e:   # no comparison is possible: say so once and stop
        print(f"error: {e}", file=sys.stderr, flush=True)
        results.append({"model": name, "error": str(e)})
        break
      except RuntimeError as e:   # keep going with the other models
        print(f"  {name}: {e}", file=sys.stderr, flush=True)
        results.append({"model": name, "error": str(e)})
  finally:
    if torch is not None:
      torch.close()
  ok = [r for r in results if "error" not in r]
  print(table(ok))
  for r in ok:
    if r["ratio_train"] is not None:
      print(f"{r['model']}: cnnlab / PyTorch train = {r['ratio_train']:.2f}x wall-clock, "
            f"{r['ratio_train_cpu']:.2f}x per CPU-second (eval "
            f"{_fmt(r['ratio_eval'], '{:.2f}')}x)")
  out = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                     "cpus": threads, "jax": jax.__version__,
                     "device": str(jax.devices()[0].device_kind),
                     "xla_flags": os.environ.get("XLA_FLAGS", ""), "perf": FLAGS.perf,
                     "perf_applied": applied, "loadavg_before": load_before,
                     "loadavg_after": os.getloadavg()},
         "flags": {k: FLAGS[k].value for k in ("model", "batch_size", "image_size", "rounds",
                                               "warmup", "steps_per_round", "compare",
                                               "threads", "dtype", "peak_gflops")},
         "results": results}
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(out, f, indent=2)
  return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
  cli.run(main, uses_tensorflow=False)   # perf.configure must run before the backend starts
