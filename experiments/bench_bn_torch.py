"""PyTorch eager's train-mode BatchNorm (+ residual add + ReLU), forward + backward, on the shapes
of ``experiments/bench_bn.py`` — the per-op reference for cnnlab's BatchNorm kernels.

  VENV/bin/python experiments/bench_bn_torch.py [--threads=2] [--clock=wall|cpu] [--rounds=5]

Runs in a venv with torch only (imports nothing of cnnlab or JAX). Channels-last tensors, the
module's own batch_norm (running statistics updated, as in training), autograd for the
backward; milliseconds per call, median over rounds of ``--round_s`` seconds each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# Run as a script from a torch-only venv: the shapes table sits beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bn_shapes import SHAPES  # noqa: E402


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
