"""cnnlab.interop.torchvision: parity with torchvision's logits, and the converter's errors.

Parity needs no torch: each fixture in tests/fixtures/torchvision/ holds the seeds, the
torchvision state_dict's keys and shapes, and torchvision's eval-mode logits (made by
tests/make_torchvision_fixtures.py). The same synthetic weights and inputs are rebuilt here in
numpy, converted, and run through cnnlab's model.
"""
from __future__ import annotations

import glob
import os
import sys
import types

import jax
import numpy as np
import pytest

from cnnlab import models
from cnnlab.models import layers
from cnnlab.interop import torchvision as tv
import make_torchvision_fixtures as fx

TOLERANCE = 1e-4   # absolute, float32 (the bar)
FIXTURES = sorted(glob.glob(os.path.join(fx.FIXTURE_DIR, "*.npz")))


def _case(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def test_every_torchvision_layout_model_has_a_fixture():
  covered = {fx.load_fixture(p)["model"] for p in FIXTURES}
  # ModelInfo.torchvision names the builder: "resnet50", or "video.r3d_18" (models.video).
  layout = {n for n in models.names() if models.info(n).torchvision in (n, f"video.{n}")}
  assert set(tv.SUPPORTED) == layout
  assert layout <= covered, f"no parity fixture for {sorted(layout - covered)}"


@pytest.mark.parametrize("path", FIXTURES, ids=_case)
def test_parity_with_torchvision(path):
  f = fx.load_fixture(path)
  weights = fx.synthetic_state_dict(f["weight_seed"], f["keys"], f["shapes"])
  assert fx.checksum(weights) == pytest.approx(f["checksum"], rel=1e-12), (
      "the synthetic weights no longer match the fixture's; regenerate with "
      "tests/make_torchvision_fixtures.py")
  assert tv.infer_model_name(weights) == f["model"]
  variables = tv.convert(weights)
  del weights
  x = np.moveaxis(fx.synthetic_inputs(f["input_seed"], f["input_shape"]), 1, -1)   # NC* -> N*C
  model = models.create(f["model"], num_classes=f["logits"].shape[-1])
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
  diff = float(np.abs(logits - f["logits"]).max())
  print(f"{_case(path)}: max |cnnlab - torchvision| = {diff:.2e}")
  assert diff <= TOLERANCE, f"{_case(path)}: max abs diff {diff:.3e} > {TOLERANCE}"


# --- converter behaviour on small state dicts -------------------------------------------------
@pytest.fixture(scope="module")
def resnet18_state():
  f = fx.load_fixture(os.path.join(fx.FIXTURE_DIR, "resnet18_97.npz"))
  return fx.synthetic_state_dict(f["weight_seed"], f["keys"], f["shapes"])


def test_layout_of_converted_variables(resnet18_state):
  v = tv.convert(resnet18_state, "resnet18")
  assert set(v) == {"params", "batch_stats"}
  w = resnet18_state["layer2.0.downsample.0.weight"]                   # OIHW (128, 64, 1, 1)
  np.testing.assert_array_equal(v["params"]["layer2_0"]["downsample_conv"]["kernel"],
                                np.transpose(w, (2, 3, 1, 0)))
  np.testing.assert_array_equal(v["params"]["fc"]["kernel"], resnet18_state["fc.weight"].T)
  np.testing.assert_array_equal(v["params"]["bn1"]["scale"], resnet18_state["bn1.weight"])
  np.testing.assert_array_equal(v["batch_stats"]["layer1_0"]["bn2"]["var"],
                                resnet18_state["layer1.0.bn2.running_var"])
  assert layers.count_params(v["params"]) == models.info("resnet18").num_params


def test_missing_key_is_named(resnet18_state):
  sd = dict(resnet18_state)
  del sd["layer3.1.conv2.weight"], sd["bn1.running_var"]
  with pytest.raises(ValueError, match=r"2 missing: .*layer3\.1\.conv2\.weight") as e:
    tv.convert(sd, "resnet18")
  assert "bn1.running_var" in str(e.value)


def test_unexpected_key_is_named(resnet18_state):
  sd = dict(resnet18_state, **{"layer9.0.conv1.weight": np.zeros((3, 3, 1, 1), np.float32),
                               "fc.gamma": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"2 unexpected: .*layer9\.0\.conv1\.weight") as e:
    tv.convert(sd, "resnet18")
  assert "fc.gamma" in str(e.value)


def test_bookkeeping_and_rank_errors(resnet18_state):
  sd = dict(resnet18_state, **{"fc.num_batches_tracked": np.zeros((), np.int64)})
  sd["bn1.weight"] = np.ones((64, 1), np.float32)
  with pytest.raises(ValueError, match=r"1 unexpected: fc\.num_batches_tracked; "
                                       r"1 mis-shaped: bn1\.weight \(64, 1\)"):
    tv.convert(sd, "resnet18")


def test_misshaped_key_is_named(resnet18_state):
  sd = dict(resnet18_state)
  sd["layer1.0.conv1.weight"] = np.zeros((64, 64, 5, 5), np.float32)
  with pytest.raises(ValueError, match=r"1 mis-shaped: layer1\.0\.conv1\.weight "
                                       r"\(64, 64, 5, 5\) \(expected \(64, 64, 3, 3\)\)"):
    tv.convert(sd, "resnet18")


def test_long_lists_are_truncated_with_a_count(resnet18_state):
  sd = {k: v for k, v in resnet18_state.items() if not k.startswith("layer4.")}
  with pytest.raises(ValueError, match=r"missing: .*\.\.\. and \d+ more"):
    tv.convert(sd, "resnet18")


def test_wrong_architecture_is_a_mismatch(resnet18_state):
  with pytest.raises(ValueError, match="does not match cnnlab's resnet34: .* missing: layer"):
    tv.convert(resnet18_state, "resnet34")


def test_unknown_model_names_are_rejected(resnet18_state):
  with pytest.raises(ValueError, match="lenet5.*supported: alexnet"):
    tv.convert(resnet18_state, "lenet5")
  with pytest.raises(ValueError, match="cannot tell which torchvision model"):
    tv.convert({"foo.weight": np.zeros((2, 2), np.float32)})


def test_class_count_and_dataparallel_prefix(resnet18_state):
  sd = {f"module.{k}": v for k, v in resnet18_state.items()}
  sd["module.fc.weight"] = np.ones((10, 512), np.float32)
  sd["module.fc.bias"] = np.zeros(10, np.float32)
  v = tv.convert(sd)
  assert v["params"]["fc"]["kernel"].shape == (512, 10)


def test_googlenet_without_aux_heads():
  f = fx.load_fixture(os.path.join(fx.FIXTURE_DIR, "googlenet_99.npz"))
  kept = [(k, s) for k, s in zip(f["keys"], f["shapes"]) if not k.startswith("aux")]
  sd = fx.synthetic_state_dict(f["weight_seed"], *zip(*kept))
  v = tv.convert(sd)
  assert "aux1" not in v["params"]
  assert layers.count_params(v["params"]) == models.info("googlenet").num_params


def test_safetensors_round_trip(tmp_path, resnet18_state):
  from safetensors.numpy import save_file
  path = tmp_path / "resnet18.safetensors"
  save_file(dict(resnet18_state), str(path))
  v = tv.load(path)
  ref = tv.convert(resnet18_state)
  for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_array_equal(a, b)


def test_unsupported_file_types(tmp_path):
  bad = tmp_path / "weights.h5"
  bad.write_bytes(b"")
  with pytest.raises(ValueError, match=r"\.safetensors, \.pth or \.pt"):
    tv.load(bad)
  with pytest.raises(FileNotFoundError):
    tv.load(tmp_path / "absent.pth")


class _FakeTensor:
  """Just enough of torch.Tensor for the .pth reader (the tests never import torch)."""
  dtype = "torch.float32"

  def __init__(self, array):
    self.array = array

  def detach(self):
    return self

  def cpu(self):
    return self

  def numpy(self):
    return self.array


def test_pth_is_read_with_weights_only(tmp_path, monkeypatch, resnet18_state):
  calls = []

  def fake_load(path, **kwargs):
    calls.append(kwargs)
    return {"state_dict": {k: _FakeTensor(v) for k, v in resnet18_state.items()}, "epoch": 3}

  fake_torch = types.ModuleType("torch")
  fake_torch.Tensor, fake_torch.load = _FakeTensor, fake_load
  monkeypatch.setitem(sys.modules, "torch", fake_torch)
  path = tmp_path / "resnet18.pth"
  path.write_bytes(b"")
  v = tv.load(path)
  assert calls == [{"map_location": "cpu", "weights_only": True}]
  np.testing.assert_array_equal(v["params"]["fc"]["kernel"], resnet18_state["fc.weight"].T)


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)   # makes `import torch` fail
  path = tmp_path / "w.pth"
  path.write_bytes(b"")
  with pytest.raises(ImportError, match=r"needs torch.*\.safetensors"):
    tv.load(path)
