"""Bad input: every mistake is reported in one line naming the key, the bad value and what is
allowed, with exit status 2, before anything is compiled — and nothing already written is
touched. The table runs ``train_and_evaluate`` under the entry points' own error mapping
(cli.errors_to_exit_codes) in-process; the last cases run the real command in a subprocess
(``--config.x`` overrides are parsed by absl at process start, so unknown keys are tested
there)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, counting_compiles

CONFIG = "--config=experiments/configs/lenet5_mnist.py"

# (config overrides, substrings the single error line must contain)
CASES = [
    ({"model.name": "resnet5"}, ["config.model.name='resnet5'", "valid models:", "resnet50"]),
    ({"dataset.name": "mnits"}, ["config.dataset.name='mnits'", "valid datasets:", "mnist"]),
    ({"optimizer.name": "adam"}, ["config.optimizer.name='adam'", "sgd, adamw, lars"]),
    ({"schedule.name": "linear"}, ["config.schedule.name='linear'", "constant, step"]),
    ({"batch_size": 0}, ["config.batch_size=0", "positive integer"]),
    ({"batch_size": -8}, ["config.batch_size=-8", "positive integer"]),
    ({"eval_batch_size": -1}, ["config.eval_batch_size=-1", "positive integer"]),
    ({"optimizer.learning_rate": 0.0}, ["config.optimizer.learning_rate=0.0", "positive number"]),
    ({"optimizer.learning_rate": -0.1}, ["config.optimizer.learning_rate=-0.1",
                                         "positive number"]),
    ({"num_epochs": 0.0}, ["config.num_epochs=0.0", "positive number"]),
    ({"num_train_steps": 0}, ["config.num_train_steps=0", "positive integer"]),
    ({"model.dtype": "float8"}, ["config.model.dtype='float8'", "float32, bfloat16"]),
    ({"model.num_classes": 100}, ["config.model.num_classes=100", "mnist has 10 classes"]),
    ({"dataset.preprocess": "inception"}, ["config.dataset.preprocess='inception'",
                                           "standard, lenet1998"]),
    ({"dataset.eval_split": "validation"}, ["config.dataset.eval_split='validation'",
                                            "train, test"]),
    ({"dataset.train_split": "tran"}, ["config.dataset.train_split='tran'", "train, test"]),
    ({"dataset.image_size": 64}, ["image_size=64", "28x28"]),
    ({"label_smoothing": 1.5}, ["config.label_smoothing=1.5", "[0, 1)"]),
    ({"loss": "hinge"}, ["config.loss='hinge'", "cross_entropy, lenet_map"]),
    ({"ema_decay": 1.0}, ["config.ema_decay=1.0", "[0, 1)"]),
    ({"grad_accum_steps": 3}, ["config.grad_accum_steps=3", "per-device batch 128"]),
    ({"grad_accum_steps": 0}, ["config.grad_accum_steps=0", ">= 1"]),
    ({"optimizer.weight_decay": -1.0}, ["config.optimizer.weight_decay=-1.0", ">= 0"]),
    ({"optimizer.weight_decay_mode": "coupled"}, ["weight_decay_mode='coupled'",
                                                  "l2, decoupled"]),
    ({"optimizer.momentum": 1.5}, ["config.optimizer.momentum=1.5", "[0, 1)"]),
    ({"schedule.warmup_epochs": -1.0}, ["config.schedule.warmup_epochs=-1.0", ">= 0"]),
    ({"schedule.name": "step", "schedule.boundaries": (5.0, 2.0)},
     ["config.schedule.boundaries=[5.0, 2.0]", "increasing order"]),
    ({"schedule.name": "piecewise", "schedule.boundaries": (2.0, 4.0),
      "schedule.rates": (0.1, 0.01)}, ["config.schedule.rates=[0.1, 0.01]",
                                       "len(boundaries)+1 = 3"]),
    ({"schedule.name": "step", "schedule.decay_factor": 2.0},
     ["config.schedule.decay_factor=2.0", "(0, 1]"]),
    ({"log_every_steps": 0}, ["config.log_every_steps=0", "positive integer or -1"]),
    ({"checkpoint_every_steps": -5}, ["config.checkpoint_every_steps=-5", "or -1"]),
    ({"seed": -1}, ["config.seed=-1", "non-negative integer"]),
    ({"model.name": "alexnet"}, ["too small for model 'alexnet'", "224x224x3"]),
    ({"model.kwargs": {"widht": 2}}, ["config.model.kwargs", "widht"]),
]


def _apply(config, overrides):
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _exit_status(fn, capsys):
  """Runs ``fn`` under the entry points' error mapping; returns (status, stderr)."""
  from experiments import cli
  try:
    with cli.errors_to_exit_codes():
      fn()
    status = 0
  except SystemExit as e:
    status = e.code
  return status, capsys.readouterr().err


@pytest.mark.parametrize("overrides,expected", CASES,
                         ids=[",".join(f"{k}={v}" for k, v in c[0].items())[:50] for c in CASES])
def test_bad_config_is_one_line_exit_2(capsys, tmp_path, mnist_data_dir, overrides, expected):
  from experiments.configs import lenet5_mnist
  from cnnlab.training import train_and_evaluate
  config = lenet5_mnist.get_config()
  config.dataset.data_dir = mnist_data_dir
  config.compilation_cache_dir = ""
  _apply(config, overrides)
  with counting_compiles() as compiles:
    status, err = _exit_status(lambda: train_and_evaluate(config, str(tmp_path)), capsys)
  lines = err.strip().splitlines()
  assert status == 2, err
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  for piece in expected:
    assert piece in lines[0], (piece, lines[0])
  assert not os.path.exists(tmp_path / "checkpoints")
  assert compiles == []                                  # refused before anything compiled


def _lenet(data_dir, **overrides):
  from experiments.configs import lenet5_mnist
  config = lenet5_mnist.get_config()
  config.dataset.data_dir = str(data_dir)
  config.compilation_cache_dir = ""
  return _apply(config, overrides)


def test_missing_dataset_offline_fails_fast(capsys, tmp_path):
  from cnnlab.training import train_and_evaluate
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  with counting_compiles() as compiles:
    status, err = _exit_status(lambda: train_and_evaluate(_lenet(empty), str(tmp_path / "wd")),
                               capsys)
  assert compiles == []                                  # refused before anything compiled
  lines = err.strip().splitlines()
  assert status == 2 and len(lines) == 1, err
  assert "python -m experiments.prepare_data --dataset=mnist --source_dir=DIR" in lines[0]


def test_raw_data_dir_without_the_dataset_names_where_it_looked(capsys, tmp_path, monkeypatch):
  from experiments import train   # first-use preparation is the entry point's
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  monkeypatch.setenv("CNNLAB_RAW_DATA_DIR", str(tmp_path / "raw"))   # no mnist/ inside
  status, err = _exit_status(lambda: train.train(_lenet(empty), str(tmp_path / "wd")),
                             capsys)
  lines = err.strip().splitlines()
  assert status == 2 and len(lines) == 1, err
  assert f"CNNLAB_RAW_DATA_DIR={str(tmp_path / 'raw')!r}" in lines[0]
  assert str(tmp_path / "raw" / "mnist") in lines[0]
  assert not os.path.exists(tmp_path / "wd" / "checkpoints")


def test_corrupt_raw_file_during_first_use_preparation_is_one_line(capsys, tmp_path,
                                                                   monkeypatch):
  """A damaged original file met while preparing from $CNNLAB_RAW_DATA_DIR: PrepareError as
  one line, exit 2 — not a traceback."""
  from experiments import train
  raw = tmp_path / "raw" / "mnist"
  raw.mkdir(parents=True)
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    (raw / name).write_bytes(b"not the original file")
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  monkeypatch.setenv("CNNLAB_RAW_DATA_DIR", str(tmp_path / "raw"))
  status, err = _exit_status(lambda: train.train(_lenet(empty), str(tmp_path / "wd")), capsys)
  lines = err.strip().splitlines()
  assert status == 2 and len(lines) == 1, err
  assert lines[0].startswith("error: ") and "mnist" in lines[0]
  assert not os.path.exists(tmp_path / "wd" / "checkpoints")


def test_features_only_num_classes_is_refused_with_a_reason(capsys, tmp_path, mnist_data_dir):
  from cnnlab.training import train_and_evaluate
  config = _lenet(mnist_data_dir, **{"model.num_classes": 0})
  status, err = _exit_status(lambda: train_and_evaluate(config, str(tmp_path)), capsys)
  lines = err.strip().splitlines()
  assert status == 2 and len(lines) == 1, err
  assert "config.model.num_classes=0" in lines[0] and "features-only" in lines[0]
  assert "10 classes" in lines[0]


def test_workdir_of_another_model_is_refused_untouched(capsys, tmp_path, mnist_data_dir):
  from conftest import lenet_config
  from cnnlab.training import train_and_evaluate
  wd = tmp_path / "wd"
  train_and_evaluate(lenet_config(mnist_data_dir, num_train_steps=2, checkpoint_every_steps=2,
                                  eval_every_steps=0), str(wd))
  capsys.readouterr()
  before = {p: os.path.getsize(os.path.join(r, p)) for r, _, fs in os.walk(wd) for p in fs}
  other = _lenet(mnist_data_dir, **{"model.name": "lenet5_1998", "dataset.preprocess": "lenet1998"})
  status, err = _exit_status(lambda: train_and_evaluate(other, str(wd)), capsys)
  lines = err.strip().splitlines()
  assert status == 2 and len(lines) == 1, err
  assert "different model" in lines[0] and "params/c1" in lines[0] and "params/conv1" in lines[0]
  after = {p: os.path.getsize(os.path.join(r, p)) for r, _, fs in os.walk(wd) for p in fs}
  assert after == before


@pytest.mark.parametrize("args,expected", [
    (["--config.model.name=resnet5"], "config.model.name='resnet5'"),
    (["--config.foo=1"], "foo"),
    (["--config=experiments/configs/no_such_recipe.py"], "no_such_recipe"),
    (["--config.dataset.data_dir=/nonexistent/cnnlab_tfds"],
     "is not prepared in /nonexistent/cnnlab_tfds"),
])
def test_real_command_exit_2_without_traceback(args, expected, tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.train", CONFIG, *args,
                         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert expected in lines[0] and "Traceback" not in proc.stderr
