"""Per-op timing of train-mode BatchNorm (+ residual add + ReLU): forward + backward.

  python -m experiments.bench_bn [--shapes=resnet50] [--rounds=5] [--variants=plain,cpu,onednn]

Each shape is one jitted function computing y and the vector-Jacobian product of a fixed
cotangent with respect to x, scale, bias (and the residual): what a train step does per
BatchNorm. Variants: ``plain`` (kernels.plain_batch_norm_train, autodiff), ``cpu``
(kernels.batch_norm_train, the hand-written XLA backward), ``onednn`` (onednn.batch_norm_train,
the extension's native kernels).
They run interleaved round by round; the table gives median milliseconds and the ratio to
``plain`` measured in the same rounds. On a loaded machine ``taskset -c 0 ... --clock=cpu``
(one thread each, CPU time) is far steadier than elapsed time.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models import kernels, onednn
from experiments.bn_shapes import SHAPES   # one table for this and bench_bn_torch.py

flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
flags.DEFINE_float("round_s", 0.3, "Seconds per variant per round.")
flags.DEFINE_list("variants", ["plain", "cpu", "onednn"], "Variants to time.")
flags.DEFINE_list("shapes", [], "Only shapes whose name contains one of these (default: all).")
flags.DEFINE_enum("clock", "wall", ["wall", "cpu"], "wall: elapsed time; cpu: this process's CPU "
                  "time (all threads), steadier on a loaded machine - pair it with `taskset -c 0` "
                  "so that XLA and the kernels run one thread each.")
FLAGS = flags.FLAGS

VARIANTS = {"plain": kernels.plain_batch_norm_train, "cpu": kernels.batch_norm_train,
            "onednn": onednn.batch_norm_train}


def _step(bn, residual: bool, relu: bool):
  def f(x, scale, bias, res, dy):
    def g(x, scale, bias, res):
      return bn(x, scale, bias, res if residual else None, 1e-5, relu, jnp.float32)[0]
    y, vjp = jax.vjp(g, x, scale, bias, res)
    return y, vjp(dy)
  return jax.jit(f)


def _time(fn, args, seconds) -> float:
  clock = time.process_time if FLAGS.clock == "cpu" else time.perf_counter
  n, start, used = 0, time.perf_counter(), clock()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(fn(*args))
    n += 1
  return (clock() - used) / n * 1e3


def main(argv):
  del argv
  print("| BatchNorm | " + " | ".join(f"{v} ms" for v in FLAGS.variants) + " | "
        + " | ".join(f"{v} vs plain" for v in FLAGS.variants if v != "plain")
        + " |\n|---|" + "---|" * (2 * len(FLAGS.variants) - 1))
  for name, (shape, residual, relu) in SHAPES.items():
    if FLAGS.shapes and not any(part in name for part in FLAGS.shapes):
      continue
    rng = np.random.default_rng(0)
    x, res, dy = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))
    scale = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
    args = (x, scale, bias, res, dy)
    fns = {v: _step(VARIANTS[v], residual, relu) for v in FLAGS.variants}
    for fn in fns.values():
      jax.block_until_ready(fn(*args))
    times = {v: [] for v in fns}
    for _ in range(FLAGS.rounds):
      for v, fn in fns.items():
        times[v].append(_time(fn, args, FLAGS.round_s))
    med = {v: statistics.median(t) for v, t in times.items()}
    ratio = lambda v: statistics.median(a / b for a, b in zip(times["plain"], times[v]))
    print(f"| {name} | " + " | ".join(f"{med[v]:.2f}" for v in fns) + " | "
          + " | ".join(f"{ratio(v):.2f}x" for v in fns if v != "plain") + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
