"""How libgomp's waiting policy changes a oneDNN train step on a loaded machine.

  python -m experiments.bench_omp_load [--busy=2] [--rounds=2] [--steps=8]

libgomp reads its waiting policy once, when it loads, so every variant runs in a fresh child
process with its own environment: ``library`` (no OpenMP variable: what cnnlab now sets by
itself, passive), ``passive`` (OMP_WAIT_POLICY=PASSIVE exported), ``default``
(GOMP_SPINCOUNT=300000: libgomp's behaviour when nothing is set, what a library user got
before cnnlab set the policy itself), ``spin10k`` (GOMP_SPINCOUNT=10000) and ``xla`` (no
oneDNN: kernels.CPU). The child times a CIFAR ResNet-20 train step (batch
``--batch``) with ``kernels.CPU`` + the oneDNN conv. ``--busy=N`` starts N busy-loop processes
for the whole measurement (a loaded machine); variants run interleaved, ``--rounds`` times.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_integer("busy", 2, "Busy-loop processes running during the measurement.")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds over the variants.")
flags.DEFINE_integer("steps", 8, "Timed train steps per child.")
flags.DEFINE_integer("batch", 64, "Batch size of the ResNet-20 step.")
flags.DEFINE_list("variants", ["library", "default", "spin10k", "xla"], "Variants to time.")
flags.DEFINE_string("child", "", "Internal: run one variant's timing in this process.")
FLAGS = flags.FLAGS

_OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
VARIANTS = {"library": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "default": {"GOMP_SPINCOUNT": "300000"}, "spin10k": {"GOMP_SPINCOUNT": "10000"},
            "xla": {}}


def _child(variant: str, steps: int, batch: int) -> None:
  import time
  import dataclasses
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from cnnlab.models import kernels, onednn, resnet

  k = kernels.CPU if variant == "xla" else dataclasses.replace(kernels.CPU, conv=onednn.conv)
  net, tx = resnet.CifarResNet(3, num_classes=10, kernels=k), optax.sgd(0.1, momentum=0.9)

  def step(state, x, y):
    params, stats, opt = state
    def loss(params):
      logits, new = net.apply({"params": params, "batch_stats": stats}, x, train=True,
                              mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (_, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt

  v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  state = (v["params"], v["batch_stats"], tx.init(v["params"]))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, 32, 32, 3)), jnp.float32)
  y = jnp.arange(batch) % 10
  step = jax.jit(step)
  for _ in range(2):
    state = jax.block_until_ready(step(state, x, y))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state = jax.block_until_ready(step(state, x, y))
    times.append(time.perf_counter() - start)
  print(f"ms {statistics.median(times) * 1e3:.1f}")


def _run(variant: str) -> float:
  env = {k: v for k, v in os.environ.items() if k not in _OMP_VARS}
  env.update(VARIANTS[variant])
  env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, "-m", "experiments.bench_omp_load", f"--child={variant}",
                         f"--steps={FLAGS.steps}", f"--batch={FLAGS.batch}"], env=env,
                        capture_output=True, text=True, check=True)
  return float(done.stdout.split("ms ")[-1])


def main(argv):
  del argv
  if FLAGS.child:
    return _child(FLAGS.child, FLAGS.steps, FLAGS.batch)
  busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(FLAGS.busy)]
  try:
    times = {v: [] for v in FLAGS.variants}
    for _ in range(FLAGS.rounds):
      for v in FLAGS.variants:
        times[v].append(_run(v))
        print(f"{v}: {times[v][-1]:.1f} ms", flush=True)
  finally:
    for p in busy:
      p.kill()
  base = statistics.median(times["xla"]) if "xla" in times else None
  for v, t in times.items():
    rel = f" ({base / statistics.median(t):.2f}x XLA-only)" if base else ""
    print(f"| {v} | {statistics.median(t):.1f} ms{rel} | {', '.join(f'{x:.0f}' for x in t)} |")


if __name__ == "__main__":
  app.run(main)
