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

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from cnnlab import perf
from experiments import cli

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
flags.DEFINE_string("perf", "default", f"cnnlab.perf profile: {', '.join(perf.PROFILES)}.")
flags.DEFINE_list("xla_flags", [], "Extra XLA flags for this process (appended to $XLA_FLAGS).")
flags.DEFINE_boolean("eval", True, "Also time the eval step.")
flags.DEFINE_boolean("pipeline", True, "Also measure the input pipeline's img/s.")
flags.DEFINE_integer("pipeline_batches", 30, "Batches timed for the pipeline figure.")
flags.DEFINE_string("data_dir", None, "TFDS data dir to read the dataset from when prepared "
                    "there (else synthetic data in a temp dir).")
flags.DEFINE_string("json_out", None, "Write the results here as JSON.")

RESULT_KEYS = ("model", "batch_size", "image_size", "dtype", "threads", "steps_per_round",
               "compile_s", "train_img_s", "train_ms_step", "train_img_s_rounds",
               "train_img_per_cpu_s", "eval_img_s", "flops_per_step", "achieved_gflops", "mfu",
               "peak_rss_mb", "device_peak_mb", "pipeline_dataset", "pipeline_source",
               "pipeline_img_s", "pipeline_vs_train", "torch", "ratio_train", "ratio_train_cpu",
               "ratio_eval")
DATASET_FOR_FAMILY = {"lenet": "mnist", "resnet_cifar": "cifar10"}   # else imagenet2012


# --- the JAX side -------------------------------------------------------------------------------
def dataset_for(model_name: str, image_size: int) -> tuple[str, str | None]:
  """(dataset name, preprocess) that feed ``model_name`` in the recipes."""
  from cnnlab import models
  name = DATASET_FOR_FAMILY.get(models.info(model_name).family, "imagenet2012")
  pre = "lenet1998" if name == "mnist" and image_size == 32 else None
  return name, pre


def train_config(model_name: str, batch_size: int, image_size: int, dtype: str):
  """A recipe-like config: SGD momentum 0.9, L2 weight decay 1e-4, constant lr."""
  from experiments.configs.base import base
  c = base()
  c.model.name = model_name
  c.model.dtype = dtype
  c.dataset.name, pre = dataset_for(model_name, image_size)
  if pre:
    c.dataset.preprocess = pre
  c.batch_size = batch_size
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = "l2"
  c.aux_loss_weight = 0.3 if model_name == "googlenet" else 0.0
  return c


class Setup:
  """Everything the benchmark runs for one model, before anything is compiled: the model, the
  recipe-like optimizer, the pure train/eval steps and the state initialiser."""

  def __init__(self, model_name: str, batch_size: int, image_size: int, dtype: str):
    import jax
    from cnnlab import models
    from cnnlab.training import optim, steps, validation
    from cnnlab.training.state import create_state
    self.config = train_config(model_name, batch_size, image_size, dtype)
    self.model = validation.build_model(self.config)
    self.num_classes = self.model.num_classes
    self.batch_size = batch_size
    self.image_shape = (image_size, image_size, models.info(model_name).input_shape[-1])
    schedule = optim.create_schedule(self.config, 1000, 100_000)
    tx = optim.create_optimizer(self.config, schedule)
    self.init = lambda: create_state(self.model, tx, jax.random.PRNGKey(0),  # noqa: E731
                                     self.image_shape)
    self.train_step = steps.make_train_step(self.model, tx, self.config, schedule)
    self.eval_step = steps.make_eval_step(self.model)

  def abstract_batch(self, mask: bool = False) -> dict:
    import jax
    import jax.numpy as jnp
    b = {"image": jax.ShapeDtypeStruct((self.batch_size, *self.image_shape), jnp.float32),
         "label": jax.ShapeDtypeStruct((self.batch_size,), jnp.int32)}
    if mask:
      b["mask"] = jax.ShapeDtypeStruct((self.batch_size,), jnp.bool_)
    return b

  def eval_shape(self):
    """(state, train metrics, eval outputs) as shapes: traces everything, compiles nothing."""
    import jax
    state = jax.eval_shape(self.init)
    new_state, metrics = jax.eval_shape(self.train_step, state, self.abstract_batch())
    outs = jax.eval_shape(self.eval_step, state, self.abstract_batch(mask=True))
    return new_state, metrics, outs


class JaxBench:
  """The real train/eval steps of one model, compiled, on a fixed synthetic batch."""

  def __init__(self, model_name: str, batch_size: int, image_size: int, dtype: str):
    import jax
    import numpy as np
    from cnnlab import parallel
    from cnnlab.training import steps
    self.jax = jax
    setup = Setup(model_name, batch_size, image_size, dtype)
    self.num_classes = setup.num_classes
    mesh = parallel.create_mesh()
    repl = parallel.replicated(mesh)
    sharding = jax.tree.map(lambda _: repl, jax.eval_shape(setup.init))
    self.state = jax.jit(setup.init, out_shardings=sharding)()
    p_train, p_eval = steps.jit_steps(mesh, setup.train_step, setup.eval_step, sharding)
    rng = np.random.default_rng(0)
    host = {"image": rng.standard_normal((batch_size, *setup.image_shape), np.float32),
            "label": rng.integers(0, self.num_classes, batch_size).astype(np.int32)}
    self.batch = parallel.shard_batch(mesh, host)
    self.eval_batch = parallel.shard_batch(mesh, {**host, "mask": np.ones(batch_size, bool)})
    self.batch_size = batch_size
    self.sync = parallel.needs_step_sync(mesh)   # the loop's per-step sync on multi-device CPU
    t0 = time.perf_counter()
    self.train_fn = p_train.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.flops = _flops(self.train_fn)
    self.eval_fn = p_eval.lower(self.state, self.eval_batch).compile()

  def train(self, steps: int) -> dict:
    pending = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      self.state, m = self.train_fn(self.state, self.batch)
      pending.append(m)
      if self.sync:
        self.jax.block_until_ready(self.state)
    self.jax.device_get(pending)                     # metrics to the host: the round's sync
    self.jax.block_until_ready(self.state)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch_size}

  def eval(self, steps: int) -> dict:
    outs = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      outs.append(self.eval_fn(self.state, self.eval_batch))
      if self.sync:
        self.jax.block_until_ready(outs[-1])
    self.jax.device_get(outs)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "images": steps * self.batch_size}


def _flops(compiled) -> float:
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) if cost else 0.0
  except Exception:  # not every backend implements cost analysis
    return 0.0


def device_peak_mb() -> float | None:
  import jax
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:
    stats = None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: kB


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


# --- the input pipeline -------------------------------------------------------------------------
def _synthetic_data_dir(dataset: str, root: str) -> str:
  """Writes small raw files in the dataset's original format and prepares them with TFDS."""
  from cnnlab.data import prepare, synthetic
  raw, data_dir = os.path.join(root, "raw"), os.path.join(root, "tfds")
  if dataset == "mnist":
    sums = synthetic.write_mnist(raw)
    prepare.prepare("mnist", raw, data_dir, checksums=sums, max_examples_per_split=4096)
  elif dataset == "cifar10":
    sums = synthetic.write_cifar(raw, "cifar10", n_train=4096, n_test=256)
    prepare.prepare("cifar10", raw, data_dir, checksums=sums)
  else:   # photo-like JPEGs of ImageNet's typical size, so decoding costs what it really does
    sums = synthetic.write_imagenet(raw, classes=4, per_class=24, n_val=8,
                                    size_range=(300, 500), solid=False)
    prepare.prepare("imagenet2012", raw, data_dir, checksums=sums)
  return data_dir


def pipeline_throughput(model_name: str, batch_size: int, image_size: int,
                        data_dir: str | None, num_batches: int) -> dict:
  import tensorflow_datasets as tfds
  from cnnlab.data import datasets, pipeline
  tfds.disable_progress_bar()
  name, pre = dataset_for(model_name, image_size)
  source = "synthetic"
  with tempfile.TemporaryDirectory(prefix="cnnlab_bench_") as tmp:
    use_dir = None
    if data_dir:
      try:
        datasets.builder(datasets.get(name), data_dir)
        use_dir, source = data_dir, data_dir
      except datasets.DatasetUnavailableError:
        pass
    if use_dir is None:
      with contextlib.redirect_stdout(sys.stderr):   # TFDS prints its progress to stdout
        use_dir = _synthetic_data_dir(name, tmp)
    over = {"data_dir": use_dir, "shuffle_buffer": 256}
    if pre:
      over["preprocess"] = pre
    if name == "imagenet2012":
      over["image_size"] = image_size
    cfg = pipeline.make_config(name, **over)
    rate = pipeline.measure_throughput(cfg, global_batch_size=batch_size,
                                       num_batches=num_batches, warmup=3)
  return {"pipeline_dataset": name, "pipeline_source": source, "pipeline_img_s": rate}


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
                          aux_loss_weight=0.3, weight_decay=1e-4)
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
  head = ("model", "batch", "size", "train img/s", "ms/step", "torch img/s", "ratio",
          "cpu ratio", "eval img/s", "torch eval", "ratio", "compile s", "GFLOP/s", "MFU",
          "RSS MB", "pipe img/s")
  rows = [head]
  for r in results:
    t = r.get("torch") or {}
    rows.append((r["model"], str(r["batch_size"]), str(r["image_size"]),
                 _fmt(r["train_img_s"]), _fmt(r["train_ms_step"]), _fmt(t.get("train_img_s")),
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
  if FLAGS.rounds < 1 or FLAGS.warmup < 0 or FLAGS.threads < 0:
    cli.usage_error("--rounds must be >= 1, --warmup and --threads >= 0")
  try:
    applied = perf.configure(FLAGS.perf, threads=FLAGS.threads or None,
                             xla_flags=FLAGS.xla_flags)
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
