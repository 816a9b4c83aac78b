"""Weights out: ``cnnlab.interop.torchvision.export`` is the exact inverse of ``convert``.

* Round trip on every torchvision-layout model: random cnnlab variables (shapes from
  ``jax.eval_shape``) -> ``export`` gives exactly torchvision's state_dict keys and shapes (the
  key/shape lists stored in the parity fixtures, read off torchvision itself), ``convert`` gives
  the variables back bit for bit, and ``export`` of those gives the state dict back.
* Parity in torch: tests/make_torchvision_fixtures.py exported seeded cnnlab-side weights with
  ``save``, loaded the file into torchvision with ``load_state_dict(strict=True)`` and stored
  torch's logits (fixtures ``export_*.npz``); here cnnlab's logits on the same weights must match.
"""
from __future__ import annotations

import functools
import glob
import os
import sys
import types
import zlib

import jax
import numpy as np
import pytest
from flax import traverse_util

from cnnlab import models
from cnnlab.interop import torchvision as tv
import make_torchvision_fixtures as fx

TOLERANCE = 1e-4
PARITY = sorted(glob.glob(os.path.join(fx.FIXTURE_DIR, "*.npz")))
EXPORT_PARITY = sorted(glob.glob(os.path.join(fx.EXPORT_DIR, "*.npz")))


def _torchvision_layouts() -> dict[str, tuple[list, list]]:
  """model -> (torchvision keys, shapes), from the first parity fixture of each model."""
  out = {}
  for path in PARITY:
    f = fx.load_fixture(path)
    out.setdefault(f["model"], (f["keys"], f["shapes"]))
  return out


LAYOUTS = _torchvision_layouts()


@functools.lru_cache(maxsize=None)
def _abstract_variables(name: str, kwargs: tuple) -> dict:
  return fx.abstract_variables(name, **dict(kwargs))


def _random_variables(name: str, **kwargs) -> dict:
  """cnnlab variables of ``name`` with distinct random values (float32), no model compute."""
  out = {}
  for path, leaf in _abstract_variables(name, tuple(sorted(kwargs.items()))).items():
    # Distinct entries, cheaply (VGG has 144M): a ramp from an offset drawn per variable.
    offset = np.random.default_rng([5, zlib.crc32("/".join(path).encode())]).random() * 1e3
    size = int(np.prod(leaf.shape))
    out[path] = (np.arange(size, dtype=np.float32) + np.float32(offset)).reshape(leaf.shape)
  return traverse_util.unflatten_dict(out)


def _same(a, b) -> bool:
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def _assert_same_tree(a, b):
  fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
  assert set(fa) == set(fb)
  bad = [p for p in fa if not _same(fa[p], fb[p])]
  assert not bad, f"{len(bad)} variables differ, e.g. {bad[:3]}"


def test_every_supported_model_has_a_torchvision_layout():
  assert set(tv.SUPPORTED) <= set(LAYOUTS), sorted(set(tv.SUPPORTED) - set(LAYOUTS))


@pytest.mark.parametrize("name", tv.SUPPORTED)
def test_export_and_convert_are_inverses(name):
  kwargs = {"aux_logits": True} if name == "googlenet" else {}
  variables = _random_variables(name, **kwargs)
  state = tv.export(variables, name)
  keys, shapes = LAYOUTS[name]
  assert sorted(state) == sorted(keys)                       # torchvision's keys exactly
  assert {k: v.shape for k, v in state.items()} == dict(zip(keys, shapes))
  for k, v in state.items():
    assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32), k
  back = tv.convert(state, name)                             # convert . export = identity
  _assert_same_tree(back, variables)
  again = tv.export(back, name)                              # export . convert = identity
  assert set(again) == set(state)
  bad = [k for k in state if not _same(again[k], state[k])]
  assert not bad, f"{len(bad)} entries differ, e.g. {bad[:3]}"


def test_export_layouts(tmp_path):
  v = _random_variables("resnet18", num_classes=7)
  sd = tv.export(v, "resnet18", num_batches_tracked=12)
  np.testing.assert_array_equal(sd["layer2.0.downsample.0.weight"],
                                np.transpose(v["params"]["layer2_0"]["downsample_conv"]["kernel"],
                                             (3, 2, 0, 1)))
  np.testing.assert_array_equal(sd["fc.weight"], v["params"]["fc"]["kernel"].T)
  np.testing.assert_array_equal(sd["bn1.running_var"], v["batch_stats"]["bn1"]["var"])
  assert sd["bn1.num_batches_tracked"].shape == () and int(sd["bn1.num_batches_tracked"]) == 12
  assert tv.torchvision_kwargs(v, "resnet18") == {"num_classes": 7}
  path = tv.save(v, "resnet18", tmp_path / "r18.safetensors")
  read = tv.read_state_dict(path)
  assert set(read) == set(sd) and read["bn1.num_batches_tracked"].shape == ()
  _assert_same_tree(tv.load(path), v)


def test_export_errors_name_the_variables():
  v = _random_variables("resnet18", num_classes=5)
  del v["params"]["layer1_0"]["conv1"]
  v["batch_stats"]["bn1"]["var"] = np.ones(3, np.float32)
  with pytest.raises(ValueError, match=r"do not match cnnlab's resnet18: 1 missing: "
                                       r"params/layer1_0/conv1/kernel; 1 mis-shaped: "
                                       r"batch_stats/bn1/var \(3,\) \(expected \(64,\)\)"):
    tv.export(v, "resnet18")
  with pytest.raises(ValueError, match=r"model_name='lenet5' has no torchvision layout"):
    tv.export(v, "lenet5")
  with pytest.raises(ValueError, match=r"collection\(s\) \['intermediates'\]"):
    tv.export(dict(v, intermediates={}), "resnet18")
  with pytest.raises(ValueError, match="features-only"):
    tv.export(_random_variables("resnet18", num_classes=0), "resnet18")


def test_googlenet_pretrained_needs_transform_input():
  v = _random_variables("googlenet", num_classes=10, aux_logits=False)
  sd = tv.export(v, "googlenet")
  model, _ = tv.build(sd, torchvision_pretrained=True)
  assert model.transform_input and not model.aux_logits and model.num_classes == 10
  model, _ = tv.build(sd)
  assert not model.transform_input
  assert tv.model_kwargs("googlenet") == {"transform_input": True}   # what evaluate.py uses
  assert tv.model_kwargs("googlenet", torchvision_pretrained=False) == {}
  assert tv.model_kwargs("resnet50", torchvision_pretrained=True) == {}
  assert tv.torchvision_kwargs(v, "googlenet", transform_input=True) == {
      "num_classes": 10, "aux_logits": False, "transform_input": True, "init_weights": False}


def test_every_model_has_an_export_parity_fixture():
  covered = {fx.load_fixture(p)["model"] for p in EXPORT_PARITY}
  assert {m for m, _, _ in fx.EXPORT_CASES.values()} <= covered
  assert {"resnet18", "googlenet", "alexnet"} <= covered


@pytest.mark.parametrize("path", EXPORT_PARITY, ids=lambda p: os.path.basename(p)[:-4])
def test_exported_weights_give_torchvisions_logits(path):
  f = fx.load_fixture(path)
  model = models.create(f["model"], **f["create_kwargs"])
  variables = fx.cnnlab_side_variables(f["model"], f["weight_seed"], **f["create_kwargs"])
  assert fx.checksum(tv.export(variables, f["model"])) == pytest.approx(f["checksum"], rel=1e-12)
  x = np.moveaxis(fx.synthetic_inputs(f["input_seed"], f["input_shape"]), 1, -1)
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
  diff = float(np.abs(logits - f["logits"]).max())
  print(f"{os.path.basename(path)}: max |cnnlab - torchvision(exported)| = {diff:.2e}")
  assert diff <= TOLERANCE


def test_pth_writer_uses_torch_save_and_never_half_writes(tmp_path, monkeypatch):
  saved = {}

  def fake_save(obj, path):
    if saved:
      raise OSError("disk full")
    saved.update(obj)
    with open(path, "wb") as f:
      f.write(b"pth")

  fake_torch = types.ModuleType("torch")
  fake_torch.from_numpy, fake_torch.save = (lambda a: ("tensor", a.shape)), fake_save
  monkeypatch.setitem(sys.modules, "torch", fake_torch)
  v = _random_variables("resnet18", num_classes=3)
  path = tmp_path / "r18.pth"
  tv.save(v, "resnet18", path)
  assert saved["fc.weight"] == ("tensor", (3, 512)) and path.read_bytes() == b"pth"
  with pytest.raises(OSError, match="disk full"):
    tv.save(v, "resnet18", path)
  assert path.read_bytes() == b"pth" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=r"writing .* needs torch.*\.safetensors"):
    tv.save(v, "resnet18", tmp_path / "other.pth")
