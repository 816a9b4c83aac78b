"""The training engine end to end on a small real MNIST: what a run writes, resume, CLI
overrides, multiple devices and processes."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_real_dataset, lenet_config, run_worker, worker_result, xla_flags


def _train(config, workdir):
  from cnnlab.training import train_and_evaluate
  return train_and_evaluate(config, str(workdir))


def test_run_writes_metrics_tensorboard_checkpoints(mnist_data_dir, tmp_path):
  final = _train(lenet_config(mnist_data_dir), tmp_path)
  assert final["step"] == 6 and final["eval_count"] == 1024
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train_rows = [r for r in rows if "train_loss" in r]
  eval_rows = [r for r in rows if "eval_accuracy" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
  for key in ("train_loss", "train_accuracy", "learning_rate", "images_per_sec"):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert [r["step"] for r in eval_rows] == [3, 6]
  assert all({"eval_loss", "eval_top5"} <= set(r) for r in eval_rows)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  assert json.load(open(tmp_path / "config.json"))["model"]["name"] == "lenet5"
  # TensorBoard's own reader sees the scalars.
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  assert {"train_loss", "eval_accuracy", "learning_rate"} <= tags
  events = acc.Tensors("train_loss") if "train_loss" in acc.Tags()["tensors"] else \
      acc.Scalars("train_loss")
  assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
  from tensorboard.util import tensor_util
  value = float(tensor_util.make_ndarray(events[0].tensor_proto)) if hasattr(
      events[0], "tensor_proto") else events[0].value
  assert value == pytest.approx(train_rows[0]["train_loss"], rel=1e-6)
  # Running the finished run again is a no-op on its files (issue 28 item 3: it used to rewrite
  # the wall time and append a duplicate eval row).
  before = {f: (tmp_path / f).read_bytes() for f in ("final_metrics.json", "metrics.jsonl",
                                                      "config.json")}
  again = _train(lenet_config(mnist_data_dir), tmp_path)
  assert again == json.loads(before["final_metrics.json"])
  assert {f: (tmp_path / f).read_bytes() for f in before} == before
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]


def test_resume_is_bit_identical(mnist_data_dir, tmp_path):
  """10 uninterrupted steps == 5 steps, restart, 5 more (same params to the bit)."""
  cfg = dict(num_train_steps=10, checkpoint_every_steps=5, eval_every_steps=5)
  full = _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "full")
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "10")
  resumed = _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "resumed")
  assert resumed["params_fingerprint"] == full["params_fingerprint"]
  # A different seed gives different parameters: the fingerprint can tell runs apart.
  other = _train(lenet_config(mnist_data_dir, seed=1, **cfg), tmp_path / "other")
  assert other["params_fingerprint"] != full["params_fingerprint"]


def test_plateau_and_train_loss_selection_resume_bit_identically(mnist_data_dir, tmp_path):
  """A plateau schedule's counters are optimizer state: 5 + restart + 5 == 10 steps to the
  bit; the final metrics are those of the checkpoint with the lowest train loss."""
  cfg = dict(num_train_steps=10, checkpoint_every_steps=2, eval_every_steps=5,
             **{"schedule.name": "plateau", "schedule.plateau_every_steps": 2,
                "schedule.plateau_patience": 1, "schedule.plateau_rtol": 0.5,
                "schedule.plateau_factor": 0.5, "optimizer.learning_rate": 1e-3,
                "best_metric": "train_loss", "report_best": True})
  full = _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "full")
  rates = [r["learning_rate"] for r in json_rows(tmp_path / "full") if "learning_rate" in r]
  assert rates[0] == pytest.approx(1e-3) and min(rates) < 1e-3      # it did reduce
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  for step in ("6", "8", "10"):
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / step, ignore_errors=True)
  resumed = _train(lenet_config(mnist_data_dir, **cfg), tmp_path / "resumed")
  assert resumed["params_fingerprint"] == full["params_fingerprint"]
  assert full["selected_by"] == "train_loss (min)" and full["selected_step"] in (2, 4, 6, 8, 10)
  assert {"last_eval_accuracy", "eval_accuracy", "eval_count"} <= set(full)


def json_rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


def _cli(args, **kw):
  env = dict(os.environ, XLA_FLAGS=kw.pop("xla_flags", xla_flags()))
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=kw.pop("timeout", 300))


def test_cli_overrides_and_summary(mnist_data_dir, tmp_path):
  proc = _cli(["--config=experiments/configs/lenet5_mnist.py", f"--workdir={tmp_path}",
               f"--config.dataset.data_dir={mnist_data_dir}", "--config.num_train_steps=4",
               "--config.batch_size=64", "--config.optimizer.learning_rate=0.01",
               "--config.eval_every_steps=0", "--config.compilation_cache_dir=",
               "--host_devices=2"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["batch_size"] == 64 and saved["optimizer"]["learning_rate"] == 0.01
  assert "tensorboard --logdir" in proc.stdout and "eval_accuracy=" in proc.stdout
  assert "data parallel: 2 cpu device(s) in 1 process(es), global batch 64" in proc.stdout


def test_batch_not_dividing_devices_is_a_usage_error(mnist_data_dir, tmp_path):
  proc = _cli(["--config=experiments/configs/lenet5_mnist.py", f"--workdir={tmp_path}",
               f"--config.dataset.data_dir={mnist_data_dir}", "--config.batch_size=63",
               "--host_devices=2"])
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: config.batch_size=63 is invalid: must be a multiple of the device count 2 "
      "(and process count 1)"]
  assert not os.path.exists(tmp_path / "checkpoints")


def test_two_devices_match_one_device(mnist_data_dir, tmp_path):
  cfg = {"num_train_steps": 5, "eval_every_steps": 0, "checkpoint_every_steps": 5}
  one = worker_result(run_worker(cfg, str(tmp_path / "d1"), mnist_data_dir, devices=1))
  two = worker_result(run_worker(cfg, str(tmp_path / "d2"), mnist_data_dir, devices=2))
  assert one["devices"] == 1 and two["devices"] == 2
  np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-5)
  assert two["eval_count"] == one["eval_count"] == 1024
  assert two["eval_accuracy"] == pytest.approx(one["eval_accuracy"], abs=2e-3)


@pytest.mark.slow
def test_many_steps_on_two_cpu_devices(mnist_data_dir, tmp_path):
  """XLA:CPU's all-reduce rendezvous aborts unsynchronised multi-device runs after ~50-100
  steps; the loop synchronises each step on CPU, so 240 steps must complete."""
  cfg = {"num_train_steps": 240, "eval_every_steps": 0, "checkpoint_every_steps": 240,
         "log_every_steps": 60, "batch_size": 16}
  out = worker_result(run_worker(cfg, str(tmp_path), mnist_data_dir, devices=2, timeout=600))
  assert out["step"] == 240 and out["devices"] == 2
  losses = np.asarray(out["losses"])
  assert len(losses) == 4 and np.isfinite(losses).all() and losses[-1] < losses[0]   # learned


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree(mnist_data_dir, tmp_path):
  """Two processes on localhost joined by jax.distributed (gloo): one global batch, one
  checkpoint, identical parameters in both."""
  port = _free_port()
  cfg = {"num_train_steps": 4, "eval_every_steps": 4, "checkpoint_every_steps": 4}
  env = dict(os.environ, XLA_FLAGS=xla_flags(1),
             PYTHONPATH=ROOT)
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "tests", "workers", "train_worker.py"),
       "--workdir", str(tmp_path), "--data_dir", mnist_data_dir, "--overrides", json.dumps(cfg),
       "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
      for i in range(2)]
  outs = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=400)
    assert p.returncode == 0, stderr[-3000:]
    outs.append(worker_result(subprocess.CompletedProcess([], 0, stdout, stderr)))
  assert {o["process_index"] for o in outs} == {0, 1}
  assert all(o["devices"] == 2 for o in outs)
  assert outs[0]["params_fingerprint"] == outs[1]["params_fingerprint"]
  assert outs[0]["eval_count"] == outs[1]["eval_count"] == 1024
  assert os.listdir(tmp_path / "checkpoints") == ["4"]


def test_train_command_joins_a_two_process_run(mnist_data_dir, tmp_path):
  """The multi-host flags of experiments/train.py: jax.distributed starts before the backend."""
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/lenet5_mnist.py",
       f"--workdir={tmp_path}", f"--config.dataset.data_dir={mnist_data_dir}",
       "--config.num_train_steps=2", "--config.batch_size=32", "--config.eval_every_steps=0",
       "--config.compilation_cache_dir=", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
      env=dict(os.environ, XLA_FLAGS=xla_flags())) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
  assert "data parallel: 2 cpu device(s) in 2 process(es), global batch 32" in outs[0][0]
  assert json.load(open(tmp_path / "final_metrics.json"))["step"] == 2


def test_restore_onto_another_device_count(mnist_data_dir, tmp_path):
  cfg = {"num_train_steps": 4, "eval_every_steps": 0, "checkpoint_every_steps": 4}
  run_worker(cfg, str(tmp_path), mnist_data_dir, devices=2)
  cfg["num_train_steps"] = 8
  proc = run_worker(cfg, str(tmp_path), mnist_data_dir, devices=1)
  out = worker_result(proc)
  assert "resumed from checkpoint step 4" in proc.stdout
  assert out["step"] == 8 and out["devices"] == 1


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "..", "shared", "datasets", "mnist")),
                    reason="needs the original MNIST files in ../shared/datasets")
def test_main_job_prepares_from_raw_files_on_first_use(tmp_path):
  """The README's main command, shortened: CNNLAB_RAW_DATA_DIR + an empty data dir."""
  data_dir = tmp_path / "tfds"
  env = dict(os.environ, XLA_FLAGS=xla_flags(),
             CNNLAB_RAW_DATA_DIR=os.path.join(ROOT, "..", "shared", "datasets"))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/lenet5_mnist.py",
       f"--workdir={tmp_path / 'wd'}", f"--config.dataset.data_dir={data_dir}",
       "--config.num_train_steps=30", "--config.compilation_cache_dir="],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "preparing mnist from" in proc.stdout
  final = json.load(open(tmp_path / "wd" / "final_metrics.json"))
  assert final["eval_count"] == 10000 and final["eval_accuracy"] > 0.5
  assert_real_dataset("mnist", str(data_dir))     # what was prepared is the real MNIST


def test_console_shows_rates_as_whole_numbers():
  from cnnlab import metrics
  assert metrics.format_value("images_per_sec", 12_904.6) == "12,905"
  assert metrics.format_value("images_per_sec", 61.25) == "61.25"
  assert metrics.format_value("train_loss", 0.0123456) == "0.01235"
  line = metrics.Progress(100, 128).line(10, {"train_loss": 0.5, "images_per_sec": 12_900.0})
  assert "images_per_sec=12,900" in line and "e+04" not in line
