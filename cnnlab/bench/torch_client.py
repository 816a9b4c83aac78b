"""The driver's end of the PyTorch comparison: a worker program (``python -m
cnnlab.bench.torch_worker --serve``) run under another interpreter — one that has torch, with
or without JAX — one JSON request / reply per line on its stdin / stdout.

torch is never imported here, nor anywhere in cnnlab: the worker is a separate program, so the
JAX process stays free of it and the two sides can even use different Python installations.
"""
from __future__ import annotations

import json
import os
import subprocess

PIP_HINT = "pip install torch==2.14.1 torchvision==0.29.1"


class TorchUnavailable(RuntimeError):
  """The PyTorch worker is gone (torch missing, crashed): no comparison for any model."""


WORKER = "cnnlab.bench.torch_worker"
# The folder holding the cnnlab package, so another interpreter finds this same copy of it.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TorchWorker:
  """``python -m cnnlab.bench.torch_worker --serve`` in its own process; ``call(cmd=...,
  **args)`` -> reply dict."""

  def __init__(self, python: str):
    self.python = python
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    try:
      self.proc = subprocess.Popen([python, "-m", WORKER, "--serve"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
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
          f"--torch_python={self.python}? {PIP_HINT}")
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
