"""Shared fixtures: a small real MNIST prepared once per session, configs, subprocess runs."""
import contextlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(ROOT, "..", "shared", "datasets", "mnist")
SMALL_SPLIT = 1024

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# XLA:CPU compile time dominates this suite (hundreds of small programs, each compiled once
# per process); LLVM's backend optimisations are much of it, and the tests check values, not
# speed. Level 1 (of 0-3, default 2) ran three compile-heavy tests in 178 s instead of 216 s on
# an AVX2 machine; level 0 was slower overall (unoptimised float64 / elementwise loops), see
# BUILD_NOTES "Test suite". Test-only: entry points and benchmarks never set it. It is set
# before jax is imported, and every subprocess a test starts gets it through ``xla_flags``.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"


def xla_flags(devices=None) -> str:
  """The XLA_FLAGS value for a test process: the suite's compile setting, plus a forced host
  device count when ``devices`` is given."""
  return TEST_XLA_FLAGS + (f" --xla_force_host_platform_device_count={devices}"
                           if devices else "")


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()


def pytest_report_header(config):
  """Says which MNIST the shared fixture uses, so a run without ../shared is visible."""
  if os.path.isdir(SHARED_MNIST):
    return f"mnist_data_dir fixture: real MNIST files from {os.path.abspath(SHARED_MNIST)}"
  return ("mnist_data_dir fixture: SYNTHETIC idx files (../shared/datasets/mnist absent); the "
          "real-data tests skip")


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
  """TFDS data dir holding MNIST cut to 1,024 train / 1,024 test examples (TFDS's own
  max_examples_per_split). Real files from ../shared/datasets when present, else synthetic
  idx files the project writes itself."""
  from cnnlab.datasets import prepare, synthetic
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  if os.path.isdir(SHARED_MNIST):
    prepare.prepare("mnist", SHARED_MNIST, data_dir, max_examples_per_split=SMALL_SPLIT)
  else:
    import warnings
    warnings.warn("../shared/datasets/mnist is absent: tests use synthetic MNIST files")
    raw = str(tmp_path_factory.mktemp("raw_mnist"))
    sums = synthetic.write_mnist(raw)
    prepare.prepare("mnist", raw, data_dir, checksums=sums, max_examples_per_split=SMALL_SPLIT)
  return data_dir


# Per-class counts of the original files (../shared/datasets/README.md).
REAL_COUNTS = {
    "mnist": {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]},
    "fashion_mnist": {"train": [6000] * 10, "test": [1000] * 10},
}


def assert_real_dataset(name, data_dir):
  """A full build of the real ``name`` in ``data_dir``: split sizes, per-class counts, and the
  catalogue's normalisation constants equal to the training images' mean / std."""
  import gzip
  import numpy as np
  import tensorflow_datasets as tfds
  from cnnlab.data import datasets
  info = datasets.get(name)
  builder = tfds.builder(info.tfds_name, data_dir=data_dir)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 60_000,
                                                                          "test": 10_000}
  for split, want in REAL_COUNTS[name].items():
    ds = tfds.load(info.tfds_name, split=split, data_dir=data_dir, batch_size=-1,
                   download=False, decoders={"image": tfds.decode.SkipDecoding()})
    labels = tfds.as_numpy(ds)["label"]
    assert np.bincount(labels, minlength=10).tolist() == want, (name, split)
  with gzip.open(os.path.join(ROOT, "..", "shared", "datasets", name,
                              "train-images-idx3-ubyte.gz")) as f:
    pixels = np.frombuffer(f.read()[16:], np.uint8) / 255.0
  assert abs(pixels.mean() - info.mean[0]) < 1e-4 and abs(pixels.std() - info.std[0]) < 1e-4


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
  e["XLA_FLAGS"] = xla_flags(devices)
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


MAX_WORKERS = 4


def cifar_resnet_trainer(kernel_set, n_batches: int = 4):
  """(jitted step(state, (x, y)) -> state, initial state, ``n_batches`` batches of eight 8x8x3
  images): SGD with momentum on a CIFAR ResNet (one block per stage, projection shortcuts) built
  with ``kernel_set`` — the small train-mode setting in which kernel sets are compared."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from cnnlab.models import resnet
  net, tx = resnet.CifarResNet(1, num_classes=10, shortcut="B", kernels=kernel_set), \
      optax.sgd(0.1, momentum=0.9)

  def step(state, batch):
    params, stats, opt = state

    def loss(params):
      logits, new = net.apply({"params": params, "batch_stats": stats}, batch[0], train=True,
                              mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), new
    (_, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt

  variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  rng = np.random.default_rng(0)
  batches = [(jnp.asarray(rng.standard_normal((8, 8, 8, 3)), jnp.float32),
              jnp.arange(8) % 10) for _ in range(n_batches)]
  return jax.jit(step), state, batches


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compiles():
  """Yields a list that collects one entry per XLA backend compilation inside the block (JAX's
  public monitoring events): "refused before anything is compiled" without a wall-clock bound,
  so the verdict does not depend on the machine's load."""
  import jax
  compiles = []

  def listener(event, duration, **kwargs):
    del kwargs
    if event == BACKEND_COMPILE_EVENT:
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """Marks the cases listed in tests/slow_tests.txt ``slow`` (tests/tiers.py: the inner loop's
  split by measured time) — first, before ``-m`` deselects. ``CNNLAB_TIERS_FILE_ONLY=1`` leaves
  them unmarked, so tiers.py can ask which cases are marked in their files."""
  config.cnnlab_collected = {item.nodeid for item in items}     # before any deselection
  if os.environ.get("CNNLAB_TIERS_FILE_ONLY") == "1":
    return
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import tiers
  listed = tiers.read_list()
  for item in items:
    if item.nodeid in listed:
      item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
  """The suite spreads over the cores with pytest-xdist (``-n auto``, worksteal) unless the
  command says otherwise: ``-n 0`` / ``-n N`` are honoured, and ``-p no:xdist`` runs it in one
  process (so ``-n`` is not in pyproject's addopts, where it would break ``-p no:xdist``).
  xdist's workers run this hook too: they must not spawn workers of their own."""
  if os.environ.get("PYTEST_XDIST_WORKER") or hasattr(config, "workerinput"):
    return
  if config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None) is None:
    config.option.numprocesses = "auto"
    config.option.dist = "worksteal"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
  """``-n auto`` (pyproject's addopts): one worker per core, at most MAX_WORKERS, since every
  worker imports JAX and TensorFlow (~1 GiB each) and the XLA:CPU compiles are what the
  workers share the cores for."""
  del config
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count() or 1
  return max(1, min(MAX_WORKERS, cores))


def spec_of(config, *, devices: int = 1, processes: int = 1, n: int | None = None,
            data_dir_prepared: bool = False):
  """``cnnlab.config.resolve`` of ``config`` for ``devices`` devices in ``processes``
  processes, without a device query or oneDNN probe: the dataset's facts come from the
  catalogue (or the prepared metadata when ``data_dir_prepared``), the train split sized ``n``
  when given (no data is read either way)."""
  import dataclasses
  from cnnlab import config as config_lib
  from cnnlab.data import datasets
  c = config_lib.complete(config)
  facts = datasets.describe(c.dataset, require_prepared=data_dir_prepared)
  if n is not None:
    split = c.dataset.train_split or facts.train_split
    facts = dataclasses.replace(facts, split_sizes={**facts.split_sizes, split: int(n)})
  return config_lib.resolve(c, facts, config_lib.Devices(device_count=devices,
                                                         process_count=processes))
