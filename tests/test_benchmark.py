"""experiments/benchmark.py: it runs end to end and writes the documented JSON; its set-up path
works for every registered model; rounds alternate between the two sides. No timing is
asserted (this machine's timings are not something a test can pin down)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cnnlab import models
from experiments import bench_jax, benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One model per family (and both LeNets) get the full train + eval step traced.
TRACED = ("lenet5", "lenet5_1998", "alexnet", "alexnet_2012", "vgg11_bn", "googlenet",
          "resnet18", "resnet20")


def _run(*args, timeout=240):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "experiments.benchmark", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def test_smoke_run_writes_table_and_json(tmp_path):
  out = tmp_path / "bench.json"
  r = _run("--model=lenet5", "--batch_size=8", "--rounds=2", "--warmup=0",
           "--steps_per_round=1", "--pipeline_batches=2", f"--json_out={out}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "train img/s" in r.stdout and "lenet5" in r.stdout
  data = json.loads(out.read_text())
  assert set(data) == {"machine", "flags", "results"}
  assert {"jax", "device", "loadavg_before", "perf_applied"} <= set(data["machine"])
  (res,) = data["results"]
  assert set(benchmark.RESULT_KEYS) <= set(res)
  assert res["model"] == "lenet5" and res["batch_size"] == 8 and res["image_size"] == 28
  for key in ("train_img_s", "train_ms_step", "train_img_per_cpu_s", "eval_img_s", "compile_s",
              "pipeline_img_s", "peak_rss_mb"):
    assert res[key] > 0, key
  assert len(res["train_img_s_rounds"]) == 2
  assert res["flops_per_step"] > 0 and res["mfu"] is None    # no --peak_gflops given
  assert res["pipeline_dataset"] == "mnist" and res["pipeline_source"] == "synthetic"
  assert res["torch"] is None and res["ratio_train"] is None


def test_missing_torch_interpreter_is_a_usage_error():
  r = _run("--model=lenet5", "--compare=torch", "--torch_python=/nonexistent/python")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith(
      "error: --torch_python='/nonexistent/python' cannot be started")


def test_interpreter_without_torch_names_the_pip_command():
  """A Python without torch: the worker dies importing it, and the driver says what to do."""
  if importlib.util.find_spec("torch") is not None:   # looked up, never imported
    pytest.skip("this interpreter has torch")
  worker = benchmark.TorchWorker(sys.executable)
  try:
    with pytest.raises(benchmark.TorchUnavailable,
                       match="pip install torch==2.14.1 torchvision==0.29.1"):
      worker.call(cmd="setup", model="lenet5", batch_size=8, image_size=28)
  finally:
    worker.close()


def test_usage_errors():
  r = _run("--model=no_such_model")
  assert r.returncode == 2 and "no_such_model" in r.stderr
  r = _run("--model=lenet5", "--perf=turbo")
  assert r.returncode == 2 and "turbo" in r.stderr


@pytest.mark.parametrize("name", models.names())
def test_every_model_sets_up(name):
  """The benchmark's set-up for every registered model, at its documented input size: the
  state's shapes (init traced); one model per family also traces the train and eval steps."""
  import jax
  size = models.info(name).input_shape[0]
  setup = bench_jax.Setup(name, 2, size, "float32")
  state = jax.eval_shape(setup.init)
  assert jax.tree.leaves(state.params)
  if name in TRACED:
    new_state, metrics, outs = setup.eval_shape()
    assert {"train_loss", "train_accuracy", "grad_norm", "finite"} <= set(metrics)
    assert {"loss_sum", "correct", "count"} <= set(outs)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_dataset_and_defaults_follow_the_model_family():
  assert bench_jax.dataset_for("lenet5", 28) == ("mnist", None)
  assert bench_jax.dataset_for("lenet5_1998", 32) == ("mnist", "lenet1998")
  assert bench_jax.dataset_for("resnet20", 32) == ("cifar10", None)
  assert bench_jax.dataset_for("resnet50", 224) == ("imagenet2012", None)
  assert benchmark.default_batch(28) == 128 and benchmark.default_batch(224) == 16
  cfg = bench_jax.train_config("googlenet", 16, 224, "bfloat16")
  assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.9
  assert cfg.optimizer.weight_decay == 1e-4 and cfg.aux_loss_weight == 0.3
  assert cfg.model.dtype == "bfloat16"


class _Side:
  def __init__(self, log, name):
    self.log, self.name = log, name

  def train(self, steps):
    self.log.append(self.name)
    return {"seconds": 1.0, "cpu_seconds": 1.0, "images": steps}

  def call(self, cmd, steps):
    return getattr(self, cmd)(steps)


def test_rounds_interleave_and_alternate_who_goes_first():
  log = []
  mine, theirs = benchmark._interleaved("train", _Side(log, "jax"), _Side(log, "torch"),
                                        steps=3, rounds=3, warmup=1)
  assert log == ["jax", "torch", "torch", "jax", "jax", "torch", "torch", "jax"]
  assert len(mine) == len(theirs) == 3
  assert benchmark._paired_ratio(mine, theirs) == 1.0
