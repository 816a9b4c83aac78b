"""experiments/gpu_check.sh and cnnlab.bench.suite: the GPU script runs end to end on a CPU with
the tiny suite (same steps, tiny sizes) and writes the documented report; cases that are not
registered or would overrun the wall budget are skipped with a reason; flag trials are
appended to the report. No timing is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cnnlab import models
from cnnlab.bench import runner, suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PYTHON = "/work/torchvenv/bin/python"   # this machine's torch venv, where it exists


def _figures_ok(res):
  assert "error" not in res, res.get("error")
  for key in ("train_img_s", "train_ms_step", "compile_s", "flops_per_step", "achieved_tflops",
              "mfu_vs_matmul"):
    assert res[key] > 0, key
  assert res["finite"] is True and res["kernels"]   # what models.create picked (auto)
  assert res["step_memory_mb"]["total"] > 0
  assert res["mfu_vs_peak"] is None          # no datasheet peak for a CPU


def test_tiny_gpu_check_runs_end_to_end(tmp_path):
  has_torch = os.path.exists(TORCH_PYTHON)
  # A wall budget no loaded machine reaches: which cases run must not depend on the load
  # (the budget logic itself is test_budget_and_registry_skip_cases' subject).
  env = dict(os.environ, GPU_CHECK_TINY="1", OUT=str(tmp_path), GPU_CHECK_WALL_S="7200",
             GPU_CHECK_TORCH_PYTHON=TORCH_PYTHON if has_torch else sys.executable)
  r = subprocess.run(["bash", os.path.join(ROOT, "experiments", "gpu_check.sh")], env=env,
                     capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
  log = (tmp_path / "gpu_check.log").read_text()
  assert "gpu_check done" in log
  summary = log[log.index("== summary"):]             # the table printed last
  assert "lenet5_bfloat16_b8: " in summary and "trial --xla_cpu_enable_fast_math" in summary
  report = json.loads((tmp_path / "gpu_check.json").read_text())
  assert report["environment"]["backend"] == "cpu"
  assert report["environment"]["versions"]["jax"]
  assert report["ceilings"]["matmul_tflops"] > 0 and report["ceilings"]["elementwise_gbs"] > 0
  registered = set(models.names())
  expected = [c.key for c in suite.TINY if c.model in registered]
  assert [c["case"] for c in report["cases"]] == expected
  for res in report["cases"]:
    _figures_ok(res)
  skipped = {s["case"]: s["reason"] for s in report["skipped"]}
  assert set(skipped) == {c.key for c in suite.TINY if c.model not in registered}
  assert all("not registered" in why for why in skipped.values())
  first = report["cases"][0]                  # the case with the PyTorch comparison
  if has_torch:
    assert report["torch"]["torch"] and first["torch"]["train_img_s"] > 0
    assert first["ratio_train"] > 0
  else:
    assert "pip install torch" in report["torch"]["error"] and first["torch"] is None
  (trial,) = report["xla_flag_trials"]
  assert trial["xla_flags"] == ["--xla_cpu_enable_fast_math=false"]
  assert trial["case"] == first["case"] and trial["ratio_vs_default"] > 0


def _fake_bench(calls):
  def bench(name, opts, torch=None):
    calls.append((name, opts.batch_size, opts.dtype))
    return {"model": name, "train_img_s": 100.0, "train_ms_step": 10.0, "compile_s": 1.0,
            "achieved_gflops": 50.0, "torch": None}
  return bench


def test_budget_and_registry_skip_cases(tmp_path, monkeypatch):
  """The first case always runs; a case that would overrun the budget, or whose model is not
  registered, is skipped with its reason; the report on disk is complete after every case."""
  calls = []
  monkeypatch.setattr(runner, "bench_model", _fake_bench(calls))
  clock = iter(range(0, 10_000, 30))          # every perf_counter call: 30 s later
  monkeypatch.setattr(suite.time, "perf_counter", lambda: float(next(clock)))
  cases = (suite.Case("lenet5", 8), suite.Case("not_a_model", 8, optional=True),
           suite.Case("lenet5", 16))
  out = tmp_path / "r.json"
  report = suite.run(cases, timing={}, budget_s=45, json_path=str(out), peak=100.0,
                     ceiling_sizes=None, log=lambda line: None)
  assert calls == [("lenet5", 8, "bfloat16")]
  assert report["cases"][0]["mfu_vs_peak"] == pytest.approx(0.05 / 100.0)
  reasons = {s["case"]: s["reason"] for s in report["skipped"]}
  assert "not registered" in reasons["not_a_model_bfloat16_b8"]
  assert reasons["lenet5_bfloat16_b16"].startswith("wall budget")
  assert json.loads(out.read_text())["skipped"] == report["skipped"]


def test_case_selection_and_trials(tmp_path):
  assert [c.key for c in suite.select("gpu", ["resnet50_float32_b256"])] == [
      "resnet50_float32_b256"]
  with pytest.raises(ValueError, match="resnet50_bfloat16_b256"):
    suite.select("gpu", ["resnet50_b7"])
  main = tmp_path / "main.json"
  main.write_text(json.dumps({"cases": [{"case": "a", "train_img_s": 200.0}]}))
  suite.record_trial(str(main), ["--xla_x=1"], {"cases": [{"case": "a", "train_img_s": 300.0},
                                                          {"case": "a", "error": "boom"}]})
  trials = json.loads(main.read_text())["xla_flag_trials"]
  assert trials[0]["ratio_vs_default"] == pytest.approx(1.5)
  assert trials[1]["error"] == "boom" and "ratio_vs_default" not in trials[1]


def test_gpu_suite_covers_the_issue():
  """ResNet-50 bf16 at 128/256/512 and float32 at one batch; ResNet-18, GoogLeNet, VGG-16 at
  one; resnet1d and r3d_18 optional; the dense bf16 peak of the H200."""
  keys = {c.key for c in suite.GPU}
  assert {"resnet50_bfloat16_b128", "resnet50_bfloat16_b256", "resnet50_bfloat16_b512",
          "resnet50_float32_b256"} <= keys
  assert {c.model for c in suite.GPU} >= {"resnet18", "googlenet", "vgg16", "resnet1d",
                                          "r3d_18"}
  assert all(c.optional for c in suite.GPU if c.model in ("resnet1d", "r3d_18"))
  assert suite.peak_tflops("NVIDIA H200") == pytest.approx(989.4)
  assert suite.peak_tflops("cpu") is None


def test_an_interpreter_that_cannot_run_it_fails_in_one_line(tmp_path):
  """Before any device work: a Python that cannot install the carried wheels or import the
  train-step path stops the script with an error line and a non-zero status."""
  env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_TINY="1", GPU_CHECK_PYTHON="false")
  r = subprocess.run(["bash", os.path.join(ROOT, "experiments", "gpu_check.sh")], env=env,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode in (1, 2)
  assert r.stdout.startswith("error: ") and not (tmp_path / "gpu_check.json").exists()
