"""The entry points on a LeNet-5 workdir trained for two steps on a small real MNIST:
experiments/predict.py on files the test writes (good, bad, a folder, a never-trained
workdir) and experiments/visualize.py writing every picture kind."""
import csv
import json
import os
import types

import jax
import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from conftest import lenet_config


@pytest.fixture(scope="module")
def workdir(mnist_data_dir, tmp_path_factory):
  from cnnlab.training import train_and_evaluate
  config = lenet_config(mnist_data_dir, num_train_steps=2, eval_every_steps=2,
                        checkpoint_every_steps=2)
  path = str(tmp_path_factory.mktemp("lenet_wd"))
  train_and_evaluate(config, path)
  return path


def _write_inputs(root):
  rs = np.random.RandomState(0)
  digits = [rs.randint(0, 256, (28, 28), dtype=np.uint8) for _ in range(3)]
  os.makedirs(root / "folder")
  Image.fromarray(digits[0]).save(root / "a.png")
  Image.fromarray(digits[1]).save(root / "folder" / "b.png")
  Image.fromarray(digits[2]).save(root / "folder" / "c.jpg", quality=100)
  Image.fromarray(np.stack([digits[0]] * 3, -1)).save(root / "rgb.png")
  Image.fromarray(digits[0][:20, :20]).save(root / "small.png")
  (root / "broken.png").write_text("not an image")
  np.savetxt(root / "series.csv", rs.randn(28), delimiter=",")
  return digits


def test_predict_on_good_and_bad_files(workdir, tmp_path, capsys):
  from cnnlab.data import datasets
  from cnnlab.explain import features, trained_run
  from experiments import predict
  digits = _write_inputs(tmp_path)
  inputs = [str(tmp_path / n) for n in ("a.png", "folder", "rgb.png", "small.png",
                                        "broken.png", "series.csv", "missing.png")]
  out = str(tmp_path / "out" / "preds.csv")
  rows, failed = predict.predict(workdir, inputs, top_k=2, out=out, explain="gradcam")
  assert failed == 5
  with open(out) as f:
    table = list(csv.DictReader(f))
  assert table == rows and len(rows) == 8
  assert {"path", "predicted", "probability"} <= set(table[0])
  assert [os.path.basename(r["path"]) for r in rows] == [     # the order given, folder expanded
      "a.png", "b.png", "c.jpg", "rgb.png", "small.png", "broken.png", "series.csv",
      "missing.png"]
  errors = {os.path.basename(r["path"]): r["error"] for r in rows if r["error"]}
  assert errors == {
      "rgb.png": "3 channel(s); the model takes grey images (1 channel)",
      "small.png": "a 20x20 image; the model takes 28x28 (resize it first)",
      "broken.png": errors["broken.png"], "series.csv": errors["series.csv"],
      "missing.png": "no such file or folder"}
  assert errors["broken.png"].startswith("not a readable image")
  assert "this model takes 28x28x1 images" in errors["series.csv"]
  # the probabilities are the model's on the training preprocessing of the pixels
  run = trained_run.load(workdir)
  info = datasets.get("mnist")
  x = (np.stack(digits)[..., None] / 255.0 - info.mean[0]) / info.std[0]
  probs = np.asarray(jax.nn.softmax(features.apply_inference(run.model, run.variables, x)))
  good = [r for r in rows if not r["error"]]
  assert [os.path.basename(r["path"]) for r in good] == ["a.png", "b.png", "c.jpg"]
  for r, p in zip(good[:2], probs[:2]):           # PNG is lossless
    assert r["predicted"] == str(p.argmax())
    assert abs(float(r["probability"]) - p.max()) < 1e-5
    assert len(r["top_k"].split(";")) == 2
  printed = capsys.readouterr()
  assert printed.out.splitlines()[0].startswith(f"{inputs[0]}: {good[0]['predicted']} ")
  assert printed.err.count("error: ") == 5
  explained = sorted(os.listdir(tmp_path / "out" / "explanations"))
  assert explained == ["a.png.gradcam.png", "b.png.gradcam.png", "c.jpg.gradcam.png"]
  assert matplotlib.image.imread(str(tmp_path / "out" / "explanations" / explained[0])).std() > 0


def test_predict_exit_status_and_never_trained_workdir(workdir, tmp_path, monkeypatch, capsys):
  from cnnlab.training import ConfigError
  from experiments import predict
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "ok.png")
  with pytest.raises(ConfigError, match="holds no config.json: it was never trained"):
    predict.predict(str(tmp_path), [str(tmp_path / "ok.png")])
  flags = types.SimpleNamespace(workdir=workdir, checkpoint="latest", top_k=1,
                                out=str(tmp_path / "p.csv"), explain=None, layer=None,
                                inputs=[str(tmp_path / "ok.png")])
  monkeypatch.setattr(predict, "FLAGS", flags)
  predict.main(["predict"])                                 # all good: returns (status 0)
  flags.inputs = [str(tmp_path / "ok.png"), str(tmp_path / "nope.png")]
  with pytest.raises(SystemExit) as exit_info:
    predict.main(["predict"])
  assert exit_info.value.code == predict.EXIT_SOME_FAILED
  flags.explain = "lime"
  with pytest.raises(SystemExit) as exit_info:
    predict.main(["predict"])
  assert exit_info.value.code == 2
  assert "error: --explain: unknown explanation 'lime'" in capsys.readouterr().err


def test_visualize_every_kind(workdir, tmp_path):
  from experiments import visualize   # (not with experiments.evaluate: both define --workdir)
  from cnnlab import viz
  with open(os.path.join(workdir, "eval_test.json"), "w") as f:   # as experiments.evaluate
    json.dump({"eval_accuracy": 0.5, "split": "test",
               "confusion_matrix": (np.eye(10, dtype=int) * 90 + 1).tolist()}, f)
  written = visualize.visualize(workdir, str(tmp_path / "fig"), layers=["conv2"],
                                image_index=40, what=visualize.KINDS, max_examples=300)
  assert sorted(written) == sorted(visualize.KINDS)
  rows, cols = viz.grid_shape(16 + 1)
  assert _png_size(written["feature_maps"]) == (cols * 100, rows * 100 + 50)
  assert _png_size(written["filters"]) == (4 * 80, 4 * 80 + 50)    # conv2's 16 filters
  for path in written.values():
    assert matplotlib.image.imread(path).std() > 0
  written = visualize.visualize(workdir, str(tmp_path / "fig2"), layers=["conv1", "conv2"],
                                what=["feature_maps"])
  assert sorted(written) == ["feature_maps[conv1]", "feature_maps[conv2]"]
  from cnnlab.training import ConfigError
  with pytest.raises(ConfigError, match="valid: conv1, conv2"):
    visualize.visualize(workdir, str(tmp_path / "fig"), layers=["nope"], what=["gradcam"])
  with pytest.raises(ConfigError, match="nope is not a picture kind; valid: filters"):
    visualize.visualize(workdir, str(tmp_path / "fig"), what=["filters", "nope"])


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
