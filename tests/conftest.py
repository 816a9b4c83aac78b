"""Shared fixtures: a small real MNIST prepared once per session, configs, subprocess runs."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(ROOT, "..", "shared", "datasets", "mnist")
SMALL_SPLIT = 1024

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
  """TFDS data dir holding MNIST cut to 1,024 train / 1,024 test examples (TFDS's own
  max_examples_per_split). Real files from ../shared/datasets when present, else synthetic
  idx files the project writes itself."""
  from cnnlab.data import prepare, synthetic
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  if os.path.isdir(SHARED_MNIST):
    prepare.prepare("mnist", SHARED_MNIST, data_dir, max_examples_per_split=SMALL_SPLIT)
  else:
    raw = str(tmp_path_factory.mktemp("raw_mnist"))
    sums = synthetic.write_mnist(raw)
    prepare.prepare("mnist", raw, data_dir, checksums=sums, max_examples_per_split=SMALL_SPLIT)
  return data_dir


def lenet_config(data_dir, **overrides):
  """The main recipe shrunk for tests; ``overrides`` use dotted keys."""
  from experiments.configs import lenet5_mnist
  c = lenet5_mnist.get_config()
  c.dataset.data_dir = data_dir
  c.batch_size = 32
  c.num_train_steps = 6
  c.log_every_steps = 1
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 3
  c.keep_checkpoints = 10
  c.compilation_cache_dir = ""
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def run_worker(config_overrides: dict, workdir: str, data_dir: str, *, devices: int = 1,
               extra_args=(), env=None, timeout=300, check=True):
  """Runs tests/workers/train_worker.py in a fresh process with ``devices`` CPU devices."""
  e = dict(os.environ, **(env or {}))
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
  cmd = [sys.executable, os.path.join(ROOT, "tests", "workers", "train_worker.py"),
         "--workdir", workdir, "--data_dir", data_dir,
         "--overrides", json.dumps(config_overrides), *extra_args]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)
  if check and proc.returncode != 0:
    raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
  return proc


def worker_result(proc) -> dict:
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  raise AssertionError(f"no RESULT line in:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
