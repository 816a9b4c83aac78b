r"""Where one model's train step spends its time, per operation category, in cnnlab and
(optionally) in PyTorch eager on the same machine: the question a speed gap raises next.

    python -m experiments.profile_step --model=resnet18 --kernels=cpu+onednn --threads=2 \
        --compare=torch --torch_python=/path/to/venv/bin/python

The cnnlab side is the benchmark's step (``cnnlab.bench.jax_side.JaxBench``: the engine's
jitted train step on a fixed batch), timed untraced and then traced with ``jax.profiler``; the
trace's XLA:CPU thunks (fusions, convolutions, the oneDNN extension's FFI calls) are summed per
category (``cnnlab.bench.profile``). The PyTorch side is cnnlab.bench.torch_worker's step under
``torch.profiler`` (self CPU time per operator). Categories are thread-seconds per step: XLA
may run two independent thunks at once, so a column can add up to more than the wall time.
XLA fuses BatchNorm into elementwise and reduction fusions, which land in "elementwise"; PyTorch
has batch-norm kernels ("batchnorm"): the "not conv" row is the like-for-like comparison.
"""
from __future__ import annotations

import json
import os
import tempfile

from absl import flags

from cnnlab.bench import profile, runner
from cnnlab.bench.torch_client import TorchWorker
from experiments import cli, perf

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registry name.")
flags.DEFINE_integer("batch_size", 0, "Global batch; 0: the benchmark's default for the input.")
flags.DEFINE_list("input_shape", [], "Per-example input shape, channels last; default: the "
                  "model's documented one.")
flags.DEFINE_enum("kernels", "cpu+onednn", ["auto", "plain", "cpu", "cpu+onednn"],
                  "cnnlab.models.kernels for the model.")
flags.DEFINE_integer("steps", 3, "Steps timed and profiled (after 3 warm-up steps).")
flags.DEFINE_integer("threads", 0, "Threads for both sides; 0: every CPU this process may use.")
flags.DEFINE_integer("top", 12, "Largest operations listed per side.")
flags.DEFINE_enum("compare", "none", ["none", "torch"], "Also profile PyTorch eager.")
flags.DEFINE_string("torch_python", "python3", "Interpreter that has torch + torchvision.")
flags.DEFINE_string("json_out", None, "Write every figure here as JSON.")


def profile_cnnlab(name: str, batch: int, shape, kernels: str, steps: int):
  """(untraced seconds per step, {thunk: (seconds, calls)} over ``steps`` steps, JaxBench)."""
  import jax
  from cnnlab.bench.jax_side import JaxBench
  jb = JaxBench(name, batch, shape, "float32", with_eval=False, kernels=kernels)
  jb.train(3)
  wall = jb.train(steps)["seconds"] / steps
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      jb.train(steps)
    rows = profile.xla_thunk_times(trace_dir)
  return wall, rows, jb


def _table(columns: dict[str, dict[str, float]], walls: dict[str, float]) -> str:
  heads = list(columns)
  lines = [f"{'category':<12}" + "".join(f"{h + ' ms/step':>22}{'share':>7}" for h in heads)]
  for cat in profile.CATEGORIES:
    cells = ""
    for h in heads:
      total = sum(columns[h].values()) or 1.0
      cells += f"{1e3 * columns[h][cat]:>22.1f}{100 * columns[h][cat] / total:>6.0f}%"
    lines.append(f"{cat:<12}{cells}")
  lines.append(f"{'sum':<12}" + "".join(f"{1e3 * sum(columns[h].values()):>22.1f}{'':>7}"
                                         for h in heads))
  # XLA fuses BatchNorm's passes into elementwise / reduction fusions ("elementwise" here)
  # where PyTorch has batch-norm kernels: compare this row, not the two categories.
  lines.append(f"{'not conv':<12}" + "".join(
      f"{1e3 * (sum(columns[h].values()) - columns[h]['conv']):>22.1f}{'':>7}" for h in heads))
  lines.append(f"{'wall':<12}" + "".join(f"{1e3 * walls[h]:>22.1f}{'':>7}" for h in heads))
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  from cnnlab import models
  if FLAGS.model not in models.names():
    cli.usage_error(f"--model={FLAGS.model!r} is not a registry name; valid: "
                    f"{', '.join(models.names())}")
  if FLAGS.steps < 1 or FLAGS.threads < 0 or FLAGS.top < 1:
    cli.usage_error(f"--steps={FLAGS.steps} and --top={FLAGS.top} must be >= 1, --threads="
                    f"{FLAGS.threads} >= 0")
  from cnnlab.bench import jax_side
  try:
    shape = jax_side.input_shape(FLAGS.model, 0, [int(s) for s in FLAGS.input_shape])
  except ValueError as e:
    cli.usage_error(f"--input_shape: {e}")
  perf.configure("default", threads=FLAGS.threads or None)
  threads = FLAGS.threads or len(os.sched_getaffinity(0))
  batch = FLAGS.batch_size or runner.default_batch(shape)
  wall, rows, jb = profile_cnnlab(FLAGS.model, batch, shape, FLAGS.kernels, FLAGS.steps)
  per_step = {k: (s / FLAGS.steps, c // FLAGS.steps) for k, (s, c) in rows.items()}
  known = profile.hlo_categories(jb.train_fn.as_text())
  columns = {"cnnlab": profile.by_category(per_step,
                                           lambda n: profile.xla_category(n, known))}
  walls = {"cnnlab": wall}
  out = {"model": FLAGS.model, "batch_size": batch, "input_shape": list(shape),
         "kernels": jb.kernels, "threads": threads, "cnnlab_wall_s": wall,
         "cnnlab_categories_s": columns["cnnlab"],
         "cnnlab_top": profile.top(per_step, FLAGS.top)}
  if FLAGS.compare == "torch":
    torch = TorchWorker(FLAGS.torch_python)
    try:
      opts = runner.Options(threads=threads, batch_size=batch)
      worker, _, error = runner.torch_setup(torch, FLAGS.model, jb, shape, batch, opts)
      if worker is None:
        cli.usage_error(f"--compare=torch: {error}")
      reply = torch.call(cmd="profile", steps=FLAGS.steps)
    finally:
      torch.close()
    ops = {o["name"]: (o["seconds"] / FLAGS.steps, o["calls"] // FLAGS.steps)
           for o in reply["ops"]}
    columns["PyTorch"] = profile.by_category(ops, profile.torch_category)
    walls["PyTorch"] = reply["seconds"] / FLAGS.steps
    out.update(torch_wall_s=walls["PyTorch"], torch_categories_s=columns["PyTorch"],
               torch_top=profile.top(ops, FLAGS.top, group=str))
  print(f"{FLAGS.model}, batch {batch}, input {tuple(shape)}, kernels {jb.kernels}, "
        f"{threads} threads, per train step (PyTorch's wall is under its profiler):")
  print(_table(columns, walls))
  for side, key in (("cnnlab", "cnnlab_top"), ("PyTorch", "torch_top")):
    if key in out:
      print(f"\nlargest {side} operations (ms/step, calls/step):")
      for name, secs, calls in out[key]:
        print(f"  {1e3 * secs:9.1f}  {calls:5d}  {name[:90]}")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(out, f, indent=2)
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  cli.run(main, uses_tensorflow=False)
