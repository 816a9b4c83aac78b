"""Per-layer convolution timing: XLA vs the oneDNN FFI extension (forward + both backwards).

  python -m experiments.bench_onednn [--layers=resnet] [--rounds=7] [--weights=plain,any]

Each layer is one jitted function computing the convolution's output and both gradients
(what a train step does per conv); the variants run interleaved round by round and the table
gives median milliseconds per call and the ratio to XLA measured in the same rounds.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp

from cnnlab.models import kernels, onednn

flags.DEFINE_integer("rounds", 7, "Interleaved rounds.")
flags.DEFINE_float("round_s", 0.3, "Seconds per variant per round.")
flags.DEFINE_list("weights", ["plain", "any"], "oneDNN weight layouts to time.")
flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.")
flags.DEFINE_list("layers", [], "Only layers whose name contains one of these (default: all).")
flags.DEFINE_boolean("cpu_kernels", False, "Also time kernels.CPU.conv (XLA; 1x1 as a dot).")
FLAGS = flags.FLAGS

# name: (x shape, kernel, Cout, stride, groups) - 3x3 'same' unless the kernel says otherwise.
LAYERS = {
    "resnet20 s1 16ch 32x32 b128": ((128, 32, 32, 16), (3, 3), 16, 1, 1),
    "resnet20 s3 64ch 8x8 b128": ((128, 8, 8, 64), (3, 3), 64, 1, 1),
    "resnet18 l1 64ch 56x56 b16": ((16, 56, 56, 64), (3, 3), 64, 1, 1),
    "resnet18 l3 256ch 14x14 b16": ((16, 14, 14, 256), (3, 3), 256, 1, 1),
    "resnet18 stem 7x7/2 224 b16": ((16, 224, 224, 3), (7, 7), 64, 2, 1),
    "resnet50 1x1 256->64 56x56 b16": ((16, 56, 56, 256), (1, 1), 64, 1, 1),
    "alexnet2012 g2 5x5 27x27 b16": ((16, 27, 27, 96), (5, 5), 256, 1, 2),
    "lenet5 c3 5x5 14x14 b128": ((128, 14, 14, 6), (5, 5), 16, 1, 1),
    "resnet1d 3 128ch L256 b32": ((32, 256, 128), (3,), 128, 1, 1),
    "r3d 3x3x3 64ch 8x28x28 b4": ((4, 8, 28, 28, 64), (3, 3, 3), 64, 1, 1),
}


def _step(conv, stride, kernel, groups):
  pad = tuple(((k - 1) // 2, k // 2) for k in kernel)
  kw = dict(strides=(stride,) * len(kernel), padding=pad, dilation=(1,) * len(kernel),
            groups=groups)

  def loss(x, w):
    y = conv(x, w, **kw)
    return jnp.sum(y * y), y
  return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))


def _time(fn, args, seconds) -> float:
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(fn(*args))
    n += 1
  return (time.perf_counter() - start) / n * 1e3


def main(argv):
  del argv
  dtype = jnp.dtype(FLAGS.dtype)
  if not onednn.available():
    raise SystemExit(f"oneDNN extension unavailable: {onednn.unavailable_reason()}")
  names = (["kernels.CPU"] if FLAGS.cpu_kernels else []) + [f"oneDNN {w}" for w in FLAGS.weights]
  print("| layer | XLA ms | " + " | ".join(f"{n} ms (speed-up)" for n in names) + " |\n|---|---|"
        + "---|" * len(names))
  for name, (shape, kernel, cout, stride, groups) in LAYERS.items():
    if FLAGS.layers and not any(part in name for part in FLAGS.layers):
      continue
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, shape, dtype)
    w = jax.random.normal(kw, (*kernel, shape[-1] // groups, cout), dtype) * 0.05
    variants = {"xla": _step(onednn.xla_conv, stride, kernel, groups)}
    if FLAGS.cpu_kernels:
      variants["cpu"] = _step(kernels.CPU.conv, stride, kernel, groups)
    for layout in FLAGS.weights:
      variants[layout] = _step(onednn.make_conv(weights_any=layout == "any"), stride, kernel,
                               groups)
      jax.block_until_ready(variants[layout](x, w))
    jax.block_until_ready(variants["xla"](x, w))
    times = {k: [] for k in variants}
    for _ in range(FLAGS.rounds):
      for k, fn in variants.items():
        times[k].append(_time(fn, (x, w), FLAGS.round_s))
    ratio = lambda k: statistics.median(a / b for a, b in zip(times["xla"], times[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    cells = " | ".join(f"{med[k]:.2f} ({ratio(k):.2f}x)" for k in variants if k != "xla")
    print(f"| {name} | {med['xla']:.2f} | {cells} |", flush=True)


if __name__ == "__main__":
  app.run(main)
