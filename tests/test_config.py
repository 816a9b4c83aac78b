"""cnnlab.config: one default per key, every derived number computed once and right, the spec
round-trips from every recipe, bad values refused with a reason."""
import ast
import glob
import importlib
import os

import pytest

from cnnlab import config as config_lib
from cnnlab.data import datasets
from conftest import spec_of, ROOT
from test_recipes import VARIANTS


def _recipe(name, arg):
  module = importlib.import_module(f"experiments.configs.{name}")
  return module.get_config(arg) if arg else module.get_config()


def _resolve(c, devices=1, processes=1, n=None):
  info = datasets.get(c.dataset.name)
  n = n or info.splits[c.dataset.train_split or info.train_split]
  return spec_of(c, devices=devices, processes=processes, n=n)


def _leaves(c, prefix=""):
  for k, v in c.items():
    if hasattr(v, "items") and f"{prefix}{k}" != "model.kwargs":
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def test_no_second_default_in_the_library():
  """No ``x.get("<config key>", <default>)`` outside cnnlab/config/: a config key's default
  lives in config.defaults() (dataset options: config.DATASET_OPTIONS) and nowhere else."""
  keys = {k.rpartition(".")[2] for k in _leaves(config_lib.defaults())}
  offenders = []
  for path in glob.glob(os.path.join(ROOT, "cnnlab", "**", "*.py"), recursive=True):
    if os.path.join("cnnlab", "config", "") in path:
      continue
    for node in ast.walk(ast.parse(open(path).read())):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "get" and len(node.args) == 2
          and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys
          and not (isinstance(node.args[1], ast.Constant) and node.args[1].value is None)):
        offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.args[0].value}")
  assert not offenders, offenders


def test_unknown_key_is_refused_and_missing_keys_take_the_default():
  c = _recipe("lenet5_mnist", None).to_dict()
  c["optimizer"]["momentun"] = 0.9
  with pytest.raises(config_lib.ConfigError, match="config.optimizer.momentun is not a known"):
    config_lib.complete(c)
  del c["optimizer"]["momentun"], c["optimizer"]["momentum"], c["label_smoothing"]
  done = config_lib.complete(c)
  defaults = config_lib.defaults()
  assert done.optimizer.momentum == defaults.optimizer.momentum == 0.9
  assert done.label_smoothing == defaults.label_smoothing


@pytest.mark.parametrize("recipe,arg", [(r, a) for r, a, _ in VARIANTS])
def test_spec_round_trips_from_every_recipe(recipe, arg):
  spec = _resolve(_recipe(recipe, arg))
  again = _resolve(spec.to_config())
  assert again == spec
  assert spec.loop.total_steps >= spec.loop.steps_per_epoch > 0
  assert all(0 < b < spec.loop.total_steps for b in spec.schedule.boundaries)


@pytest.mark.parametrize("recipe,arg", [("resnet20_cifar10", "20"),
                                        ("resnet50_imagenet", "50,classic"),
                                        ("lenet5_1998_mnist", None)])
def test_batch_size_override_keeps_the_schedule_in_epochs(recipe, arg):
  base = _resolve(_recipe(recipe, arg))
  c = _recipe(recipe, arg)
  c.batch_size = base.loop.global_batch * 2
  big = _resolve(c)
  assert big.loop.steps_per_epoch == base.data.train_examples // big.loop.global_batch
  epochs = lambda s, steps: steps / s.loop.steps_per_epoch  # noqa: E731
  assert epochs(big, big.loop.total_steps) == pytest.approx(
      epochs(base, base.loop.total_steps), rel=0.01)
  for a, b in zip(big.schedule.boundaries, base.schedule.boundaries):
    assert epochs(big, a) == pytest.approx(epochs(base, b), rel=0.01)
  assert len(big.schedule.boundaries) == len(base.schedule.boundaries)


def test_device_count_changes_only_the_per_device_batch():
  one = _resolve(_recipe("resnet20_cifar10", "20"), devices=1)
  four = _resolve(_recipe("resnet20_cifar10", "20"), devices=4, processes=2)
  assert (four.schedule, four.optim, four.data) == (one.schedule, one.optim, one.data)
  assert four.loop.steps_per_epoch == one.loop.steps_per_epoch
  assert four.loop.device_batch == one.loop.device_batch // 4
  assert four.loop.host_batch == one.loop.global_batch // 2


def test_resnet20_schedule_is_the_papers_in_epochs():
  spec = _resolve(_recipe("resnet20_cifar10", "20"))
  assert spec.loop.steps_per_epoch == 50_000 // 128
  assert spec.loop.total_steps == pytest.approx(64_000, rel=0.002)
  assert spec.schedule.boundaries == pytest.approx((32_000, 48_000), rel=0.002)
  assert spec.schedule.values == pytest.approx((0.1, 0.01, 0.001))


def test_auto_batch_size_and_linear_scaling():
  c = _recipe("lenet5_mnist", None)
  c.batch_size = -1                       # min(16, N // 10), a multiple of the devices
  assert _resolve(c, n=100).loop.global_batch == 10
  assert _resolve(c, n=100, devices=4).loop.global_batch == 8
  assert _resolve(c, n=60_000).loop.global_batch == 16
  r = _recipe("resnet50_imagenet", "50,classic")
  r.batch_size = 1024
  assert _resolve(r).optim.learning_rate == pytest.approx(0.4)


@pytest.mark.parametrize("key,value,expected", [
    ("model.num_classes", 0, "features-only"),
    ("schedule.unit", "hours", "epochs, steps"),
    ("schedule.name", "plateau", None),
    ("best_metric", "test_accuracy", "eval_accuracy"),
    ("batch_size", 4096 * 32, "larger than the train split"),
    ("model.kernels", "fastest", "one of auto"),
    ("checkpoint_every_steps", 0, "positive integer or -1"),
])
def test_refusals_name_key_value_and_reason(key, value, expected):
  c = _recipe("lenet5_mnist", None)
  section, _, leaf = key.rpartition(".")
  (c[section] if section else c)[leaf] = value
  if expected is None:
    _resolve(c)
    return
  with pytest.raises(config_lib.ConfigError) as e:
    _resolve(c)
  assert f"config.{key}={value!r}" in str(e.value) and expected in str(e.value)
  assert "\n" not in str(e.value)


def test_num_classes_defaults_to_the_dataset():
  spec = _resolve(_recipe("resnet20_cifar10", "20"))
  assert _recipe("resnet20_cifar10", "20").model.num_classes is None
  assert spec.model.num_classes == spec.data.num_classes == 10


def test_checkpoint_best_only_saves_when_the_train_loss_improves():
  """The loop's save policy on its own (no training): windows of checkpoint_every steps,
  ranked by their mean train loss, saved only when better — and always at the end."""
  from cnnlab.training import loop as loop_lib

  class Recorder:
    def __init__(self):
      self.saved = []

    def save(self, step, state, metrics=None):
      self.saved.append((step, metrics))

  c = _recipe("lenet5_mnist", None)
  c.checkpoint_every_steps, c.checkpoint_best_only = 2, True
  c.best_metric = "train_loss"
  spec = _resolve(c)
  ckpt = Recorder()
  run = loop_lib.RunBooks(spec, parts=None, ckpt=ckpt, writer=None, start_step=0)
  for step, loss, always in ((2, 1.0, False), (4, 2.0, False), (6, 0.5, False),
                             (8, 0.7, False), (10, 0.9, True)):
    run.step = step
    run.losses.update({step - 1: loss, step: loss})
    run.save(lambda: None, None, always=always)
  assert [s for s, _ in ckpt.saved] == [2, 6, 10]
  assert [m["train_loss"] for _, m in ckpt.saved] == [1.0, 0.5, 0.9]
  assert spec.loop.best_mode == "min"


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "..", "shared", "datasets", "ucr",
                                                   "GunPoint")),
                    reason="needs the UCR GunPoint files in ../shared/datasets/ucr")
def test_series_recipe_resolves_rank_and_batch_from_the_data(tmp_path):
  """A 1-D recipe: the input shape (L, C), the class count and the auto batch
  min(16, n_train // 10) all come from the prepared dataset (GunPoint: 50 train series of
  length 150, 2 classes -> batch 5, 10 steps per epoch)."""
  from cnnlab.datasets import prepare
  from experiments.configs import fcn1d_ucr
  prepare.prepare("ucr/GunPoint", os.path.join(ROOT, "..", "shared", "datasets", "ucr",
                                               "GunPoint"), str(tmp_path))
  c = fcn1d_ucr.get_config()
  c.dataset.data_dir = str(tmp_path)
  spec = spec_of(c)
  assert spec.model.input_shape == (150, 1) and spec.model.num_classes == 2
  assert (spec.loop.global_batch, spec.loop.steps_per_epoch) == (5, 10)
  assert spec.schedule.plateau_every_steps == 10 and spec.loop.best_mode == "min"


def test_every_entry_point_imports_in_one_process():
  """Entry points share the flags they have in common (--config, --workdir, --data_dir,
  --host_devices...): importing them together, as the test suite does, must not raise
  DuplicateFlagError."""
  import subprocess
  import sys
  from conftest import ROOT
  mods = ["train", "evaluate", "predict", "visualize", "checkpoints", "benchmark",
          "prepare_data", "report", "reproduce"]
  code = "; ".join(f"import experiments.{m}" for m in mods) + "; print('ok')"
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
