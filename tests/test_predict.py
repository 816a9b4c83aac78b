"""The entry points on a LeNet-5 workdir trained for two steps on a small real MNIST:
experiments/predict.py on files the test writes (good, bad, a folder, a never-trained
workdir) and experiments/visualize.py writing every picture kind."""
import csv
import json
import os
import re

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
  from cnnlab.explain import features
  from cnnlab.training import load_trained
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
  assert errors == {   # a mismatch is refused, naming the option that would convert it
      "rgb.png": "3 channel(s); the model takes grey images (1 channel): pass --grey to "
                 "convert it",
      "small.png": "a 20x20 image; the model takes 28x28: pass --resize to scale and "
                   "centre-crop it",
      "broken.png": errors["broken.png"], "series.csv": errors["series.csv"],
      "missing.png": "no such file or folder"}
  assert errors["broken.png"].startswith("not a readable image")
  assert "this model takes 28x28x1 images" in errors["series.csv"]
  # the probabilities are the model's on the training preprocessing of the pixels
  run = load_trained(workdir, "auto")
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
  explained = sorted(os.listdir(tmp_path / "out" / "preds_explanations"))
  assert explained == ["a.png.gradcam.png", "b.png.gradcam.png", "c.jpg.gradcam.png"]
  picture = tmp_path / "out" / "preds_explanations" / explained[0]
  assert matplotlib.image.imread(str(picture)).std() > 0


def _main(tmp_path, **values):
  """experiments.predict's main with its flags set to ``values`` (others at their defaults)."""
  from absl import flags
  from absl.testing import flagsaver
  from experiments import predict
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  values = {"checkpoint": "latest", "top_k": 1, "out": None, "explain": None, "layer": None,
            "grey": False, "resize": False, "invert": False, **values}
  with flagsaver.flagsaver(**values):
    predict.main(["predict"])


def test_predict_exit_status_and_never_trained_workdir(workdir, tmp_path, capsys):
  from cnnlab.training import ConfigError
  from experiments import predict
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "ok.png")
  with pytest.raises(ConfigError, match="holds no config.json: it was never trained"):
    predict.predict(str(tmp_path), [str(tmp_path / "ok.png")])
  assert not os.path.exists(tmp_path / "predictions")        # nothing written
  ok = str(tmp_path / "ok.png")
  _main(tmp_path, workdir=workdir, inputs=[ok], out=str(tmp_path / "p.csv"))   # status 0
  with pytest.raises(SystemExit) as exit_info:
    _main(tmp_path, workdir=workdir, inputs=[ok, str(tmp_path / "nope.png")],
          out=str(tmp_path / "q.csv"))
  assert exit_info.value.code == predict.EXIT_SOME_FAILED
  with pytest.raises(SystemExit) as exit_info:
    _main(tmp_path, workdir=workdir, inputs=[ok], explain="lime")
  assert exit_info.value.code == 2
  assert "error: --explain: unknown explanation 'lime'" in capsys.readouterr().err


def test_each_invocation_writes_its_own_csv_and_never_overwrites(workdir, tmp_path, capsys):
  """Without --out: a new <workdir>/predictions/<UTC time>.csv per invocation (two in the same
  second get -2); an --out that exists is refused before anything runs; when every input
  fails the CSV still lists them with their errors."""
  from cnnlab.training import ConfigError
  from experiments import predict
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "ok.png")
  folder = os.path.join(workdir, "predictions")
  before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
  predict.predict(workdir, [str(tmp_path / "ok.png")])
  predict.predict(workdir, [str(tmp_path / "missing.png")])   # every input fails
  made = sorted(set(os.listdir(folder)) - before)
  assert len(made) == 2 and all(re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?\.csv", m) for m in made)
  tables = {}
  for m in made:
    with open(os.path.join(folder, m)) as f:
      tables[m] = list(csv.DictReader(f))
  assert sorted(len(t) for t in tables.values()) == [1, 1]
  failed = [t[0] for t in tables.values() if t[0]["error"]]
  assert len(failed) == 1 and failed[0]["error"] == "no such file or folder"
  assert [t[0]["predicted"] for t in tables.values() if not t[0]["error"]] != [""]
  out = tmp_path / "mine.csv"
  out.write_text("keep me")
  capsys.readouterr()
  with pytest.raises(ConfigError, match="mine.csv exists; predict never overwrites"):
    predict.predict(workdir, [str(tmp_path / "ok.png")], out=str(out))
  assert out.read_text() == "keep me" and "predictions:" not in capsys.readouterr().out


def test_explicit_conversions_for_a_photo(workdir, tmp_path, capsys):
  """A dark-on-light RGB photo of another size: refused as it is (naming --grey / --resize),
  converted when asked (one line each saying what was done), with a polarity hint until
  --invert; the model sees exactly the converted pixels."""
  from cnnlab.data import datasets
  from cnnlab.explain import features, user_files
  from cnnlab.training import load_trained
  from experiments import predict
  photo = np.full((84, 60, 3), 230, np.uint8)          # light paper ...
  photo[20:64, 25:35] = (20, 30, 40)                   # ... a dark stroke
  Image.fromarray(photo).save(tmp_path / "photo.png")
  path = str(tmp_path / "photo.png")
  rows, failed = predict.predict(workdir, [path], out=str(tmp_path / "a.csv"))
  assert failed == 1 and "--grey" in rows[0]["error"]
  rows, failed = predict.predict(workdir, [path], out=str(tmp_path / "b.csv"),
                                 conversions=user_files.Conversions(grey=True))
  assert failed == 1 and "--resize" in rows[0]["error"]
  capsys.readouterr()
  rows, failed = predict.predict(workdir, [path], out=str(tmp_path / "c.csv"),
                                 conversions=user_files.Conversions(grey=True, resize=True))
  printed = capsys.readouterr().out
  assert failed == 0 and rows[0]["predicted"]
  assert (f"{path}: converted RGB to grey (0.299 R + 0.587 G + 0.114 B); resized 84x60 to "
          f"39x28 (Lanczos), centre-cropped to 28x28") in printed
  hint = re.search(rf"^{re.escape(path)}: hint: mostly light \(mean intensity (0\.\d+)\).*"
                   r"pass --invert", printed, re.M)
  assert hint and float(hint.group(1)) > 0.5
  rows, failed = predict.predict(workdir, [path], out=str(tmp_path / "d.csv"),
                                 conversions=user_files.Conversions(True, True, True))
  printed = capsys.readouterr().out
  assert "hint" not in printed and "inverted (255 - value)" in rows[0]["notes"]
  # The model saw BT.601 grey, resized and cropped, inverted, then the training preprocessing.
  grey = np.round(photo.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
  small, _ = user_files.resize_and_crop(grey.astype(np.uint8)[..., None], (28, 28))
  info = datasets.get("mnist")
  x = ((255 - small.astype(np.float32)) / 255.0 - info.mean[0]) / info.std[0]
  run = load_trained(workdir, "auto")
  p = np.asarray(jax.nn.softmax(features.apply_inference(run.model, run.variables, x[None])))[0]
  assert rows[0]["predicted"] == str(p.argmax())
  assert abs(float(rows[0]["probability"]) - p.max()) < 1e-5
  assert small.shape == (28, 28, 1) and small[:, 14].min() < 60 < small[:, 0].min()


def test_visualize_every_kind(workdir, tmp_path):
  from experiments import visualize   # (not with experiments.evaluate: both define --workdir)
  from cnnlab.explain import figures
  with open(os.path.join(workdir, "eval_test.json"), "w") as f:   # as experiments.evaluate
    json.dump({"eval_accuracy": 0.5, "split": "test",
               "confusion_matrix": (np.eye(10, dtype=int) * 90 + 1).tolist()}, f)
  written = visualize.visualize(workdir, str(tmp_path / "fig"), layers=["conv2"],
                                image_index=40, what=visualize.KINDS, max_examples=300)
  assert sorted(written) == sorted(visualize.KINDS)
  rows, cols = figures.grid_shape(16 + 1)
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
