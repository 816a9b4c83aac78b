"""PyTorch eager's train-mode BatchNorm (+ residual add + ReLU), forward + backward, on the shapes
of ``experiments/bench_bn.py`` — the per-op reference for cnnlab's BatchNorm kernels.

  VENV/bin/python experiments/bench_bn_torch.py [--threads=2] [--clock=wall|cpu] [--rounds=5]

Runs in a venv with torch only (imports nothing of cnnlab or JAX). Channels-last tensors, the
module's own batch_norm (running statistics updated, as in training), autograd for the
backward; milliseconds per call, median over rounds of ``--round_s`` seconds each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# Kept equal to experiments/bench_bn.py's SHAPES: name -> ((N, *spatial, C), residual, relu).
SHAPES = {
    "resnet20 16ch 32x32 b128 relu": ((128, 32, 32, 16), False, True),
    "resnet20 16ch 32x32 b128 +res relu": ((128, 32, 32, 16), True, True),
    "resnet20 64ch 8x8 b128 +res relu": ((128, 8, 8, 64), True, True),
    "resnet18 64ch 112x112 b16 relu (stem)": ((16, 112, 112, 64), False, True),
    "resnet18 64ch 56x56 b16 +res relu": ((16, 56, 56, 64), True, True),
    "resnet18 256ch 14x14 b16 relu": ((16, 14, 14, 256), False, True),
    "resnet18 512ch 7x7 b16 no relu (shortcut)": ((16, 7, 7, 512), False, False),
    "resnet50 64ch 56x56 b16 relu": ((16, 56, 56, 64), False, True),
    "resnet50 256ch 56x56 b16 +res relu": ((16, 56, 56, 256), True, True),
    "resnet50 512ch 28x28 b16 no relu (shortcut)": ((16, 28, 28, 512), False, False),
    "resnet50 1024ch 14x14 b16 +res relu": ((16, 14, 14, 1024), True, True),
    "resnet1d 128ch L256 b16 relu": ((16, 256, 128), False, True),
}


def _tensor(shape, requires_grad=False):
  """A channels-last tensor with logical shape (N, C, *spatial)."""
  n, *spatial, c = shape
  t = torch.randn(n, *spatial, c).movedim(-1, 1)  # memory stays channels-last
  return t.requires_grad_(requires_grad)


def _step(shape, residual, relu):
  c = shape[-1]
  x, dy = _tensor(shape, True), _tensor(shape)
  res = _tensor(shape, True) if residual else None
  weight, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
  mean, var = torch.zeros(c), torch.ones(c)

  def run():
    y = F.batch_norm(x, mean, var, weight, bias, training=True, momentum=0.1, eps=1e-5)
    if res is not None:
      y = y + res
    if relu:
      y = F.relu(y)
    y.backward(dy)
    x.grad = weight.grad = bias.grad = None
    if res is not None:
      res.grad = None
  return run


def _time(run, seconds, clock) -> float:
  n, start, used = 0, time.perf_counter(), clock()
  while time.perf_counter() - start < seconds:
    run()
    n += 1
  return (clock() - used) / n * 1e3


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--round_s", type=float, default=0.3)
  parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  clock = time.process_time if args.clock == "cpu" else time.perf_counter
  print("| BatchNorm | torch ms |\n|---|---|")
  for name, (shape, residual, relu) in SHAPES.items():
    run = _step(shape, residual, relu)
    run()
    times = [_time(run, args.round_s, clock) for _ in range(args.rounds)]
    print(f"| {name} | {statistics.median(times):.2f} |", flush=True)


if __name__ == "__main__":
  main()
