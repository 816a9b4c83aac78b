"""cnnlab.bench.profile and experiments/profile_step.py: HLO fusions are classified by what they
compute, a real trace of a train step yields the step's thunks (the oneDNN extension's FFI calls
among them when it is built), and the entry point prints its table and refuses bad flags in one
line. No timing is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cnnlab.bench import profile
from cnnlab.models import onednn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HLO = """\
HloModule jit_step

%fused_computation.3 (param_0: f32[2,4,4,3], param_1: f32[3,3,3,8]) -> f32[2,4,4,8] {
  %param_0 = f32[2,4,4,3]{3,2,1,0} parameter(0)
  %param_1 = f32[3,3,3,8]{3,2,1,0} parameter(1)
  ROOT %convolution.1 = f32[2,4,4,8]{3,2,1,0} convolution(%param_0, %param_1), window={size=3x3}
}

%fused_computation.4 (param_0.2: f32[8,8]) -> f32[8] {
  %param_0.2 = f32[8,8]{1,0} parameter(0)
  ROOT %dot.7 = f32[8]{0} dot(%param_0.2, %param_0.2), lhs_contracting_dims={1}
}

%fused_computation.5 (param_0.3: f32[8]) -> f32[] {
  %param_0.3 = f32[8]{0} parameter(0)
  %constant.2 = f32[] constant(0)
  ROOT %reduce.1 = f32[] reduce(%param_0.3, %constant.2), dimensions={0}
}

ENTRY %main.9 (Arg_0.1: f32[2,4,4,3], Arg_1.2: f32[3,3,3,8]) -> f32[] {
  %ynn_fusion.1 = f32[2,4,4,8]{3,2,1,0} fusion(%Arg_0.1, %Arg_1.2), kind=kCustom, calls=%fused_computation.3
  %ynn_fusion.2 = f32[8]{0} fusion(%x), kind=kCustom, calls=%fused_computation.4
  ROOT %ynn_fusion.3 = f32[] fusion(%y), kind=kCustom, calls=%fused_computation.5
}
"""


def test_hlo_fusions_are_classified_by_their_called_computation():
  known = profile.hlo_categories(HLO)
  assert known == {"ynn_fusion.1": "conv", "ynn_fusion.2": "matmul"}
  assert profile.xla_category("ynn_fusion.1", known) == "conv"
  assert profile.xla_category("ynn_fusion.3", known) == "elementwise"   # a plain reduction
  assert profile.xla_category("ffi_call.12") == "conv"
  assert profile.xla_category("copy.3") == "copy"
  assert profile.xla_category("custom-call.1") == "other"


def test_torch_operators_fall_into_the_same_categories():
  cases = {"aten::mkldnn_convolution": "conv", "aten::convolution_backward": "conv",
           "aten::addmm": "matmul", "aten::native_batch_norm": "batchnorm",
           "aten::native_batch_norm_backward": "batchnorm",
           "aten::max_pool2d_with_indices": "pool", "aten::copy_": "copy",
           "aten::relu_": "elementwise", "Optimizer.step#SGD.step": "other"}
  assert {k: profile.torch_category(k) for k in cases} == cases


def test_by_category_and_top_add_up_instances():
  rows = {"fusion.1": (0.5, 2), "fusion.2": (0.25, 1), "ffi_call.3": (1.0, 3)}
  cats = profile.by_category(rows, profile.xla_category)
  assert set(cats) == set(profile.CATEGORIES)
  assert cats["conv"] == 1.0 and cats["elementwise"] == 0.75
  assert profile.top(rows, 2) == [("ffi_call", 1.0, 3), ("fusion", 0.75, 3)]


def test_trace_of_a_real_train_step_has_its_convolutions(tmp_path):
  from experiments.profile_step import profile_cnnlab
  kernels = "cpu+onednn" if onednn.available() else "plain"
  wall, rows, jb = profile_cnnlab("fcn1d", 4, (16, 1), kernels, steps=2)
  assert wall > 0 and rows
  known = profile.hlo_categories(jb.train_fn.as_text())
  cats = profile.by_category(rows, lambda n: profile.xla_category(n, known))
  assert cats["conv"] > 0 and cats["elementwise"] > 0
  if kernels == "cpu+onednn":
    ffi = sum(c for name, (_, c) in rows.items() if name.startswith("ffi_call"))
    # Per step: 3 convs x (forward, backward-weights) + backward-data of the 2 upper ones,
    # and 3 native BatchNorms x (forward, backward).
    assert ffi == 2 * (8 + 6)


def test_entry_point_prints_the_table_and_writes_json(tmp_path):
  out = tmp_path / "p.json"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  r = subprocess.run([sys.executable, "-m", "experiments.profile_step", "--model=fcn1d",
                      "--batch_size=4", "--input_shape=16,1", "--steps=1", "--kernels=cpu",
                      f"--json_out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=240)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "category" in r.stdout and "not conv" in r.stdout and "wall" in r.stdout
  data = json.loads(out.read_text())
  assert data["model"] == "fcn1d" and data["batch_size"] == 4 and data["kernels"] == "cpu"
  assert data["cnnlab_categories_s"]["conv"] > 0 and data["cnnlab_top"]


@pytest.mark.parametrize("args, words", [
    (["--model=nope"], ["--model='nope'", "resnet18"]),
    (["--model=fcn1d", "--steps=0"], ["--steps=0"]),
    (["--model=fcn1d", "--input_shape=16,3,3"], ["--input_shape", "fcn1d"]),
])
def test_bad_flags_are_one_line_errors(args, words):
  r = subprocess.run([sys.executable, "-m", "experiments.profile_step", *args], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  last = r.stderr.strip().splitlines()[-1]
  assert all(w in last for w in words), last
