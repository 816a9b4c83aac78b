"""``model.kernels='auto'`` is decided once, in resolve, from the devices, and recorded in
config.json (issues 27 and 29): the oneDNN set on a single-process CPU host where the extension
builds, the CPU formulations where it cannot (with the reason), XLA's plain ops elsewhere."""
import os
import subprocess
import sys

import pytest

from cnnlab.config import Devices, choose_kernels
from conftest import ROOT, spec_of


@pytest.mark.parametrize("requested,devices,want,why", [
    ("auto", Devices(onednn=""), "cpu+onednn", "oneDNN"),
    ("auto", Devices(onednn="no C++ compiler ('g++' not on PATH)"), "cpu", "no C++ compiler"),
    ("auto", Devices(platform="gpu", onednn=""), "plain", "gpu"),
    ("auto", Devices(process_count=2, device_count=2, onednn=""), "plain", "multi-process"),
    ("cpu+onednn", Devices(onednn="switched off"), "cpu", "switched off"),
    ("plain", Devices(onednn=""), "plain", "asked for"),
])
def test_choose_kernels(requested, devices, want, why):
  got, reason = choose_kernels(requested, devices)
  assert got == want and why in reason and "\n" not in reason


def test_the_choice_is_recorded_in_config_json():
  from experiments.configs import lenet5_mnist
  spec = spec_of(lenet5_mnist.get_config())          # Devices(): oneDNN not probed
  record = spec.record()
  assert record["model"]["kernels"] == "auto"        # what the user asked ...
  assert record["resolved"]["kernels"] == spec.model.kernels == "cpu"    # ... what it became
  assert "not probed" in record["resolved"]["kernels_why"]


@pytest.mark.slow
def test_without_a_compiler_a_run_uses_xlas_convolutions(tmp_path):
  """No C++ compiler and an empty extension cache: 'auto' resolves to the CPU formulations,
  saying why in one line, and the model still builds and runs."""
  code = ("from experiments.configs import lenet5_mnist\n"
          "from cnnlab import config, platform\n"
          "from cnnlab.data import datasets\n"
          "c = lenet5_mnist.get_config()\n"
          "s = config.resolve(c, datasets.describe(c.dataset, require_prepared=False),\n"
          "                   platform.describe())\n"
          "print('KERNELS', s.model.kernels, '|', s.model.kernels_why)\n")
  env = dict(os.environ, CXX="/nonexistent/c++", CNNLAB_CACHE_DIR=str(tmp_path / "cache"),
             PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  line = [l for l in proc.stdout.splitlines() if l.startswith("KERNELS")]
  assert proc.returncode == 0 and line, proc.stderr[-2000:]
  assert line[0].startswith("KERNELS cpu | XLA's convolutions: oneDNN unavailable")
  assert "compiler" in line[0]
