"""The entry points on segmentation runs: tiny U-Nets trained for two steps on datasets the test
writes (image + mask PNGs; NIfTI volumes + labels) — experiments/evaluate.py (task-aware
metrics and the pixel confusion), experiments/predict.py (one mask per input, any size, the
input's affine, counts and mL in the CSV) and experiments/visualize.py (overlay, contours,
Dice; classification-only kinds refused)."""
import csv
import json
import os

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow    # each module fixture prepares a dataset and trains (~1 min)

CLASSES = ["background", "cell", "nucleus"]
LABELS = {"values": [0, 1, 2], "class_names": CLASSES}


def _blob_mask(shape, rng):
  mask = np.zeros(shape, np.uint8)
  lo = [int(rng.integers(1, max(2, n // 3))) for n in shape]
  mask[tuple(slice(a, a + n // 2) for a, n in zip(lo, shape))] = 1
  mask[tuple(slice(a + 1, a + 3) for a in lo)] = 2
  return mask


def _pixels(mask, rng):
  return (rng.integers(0, 40, mask.shape) + 90 * mask).astype(np.uint8)


def _folders_2d(src, rng):
  for split, sizes in (("train", [(16, 16), (24, 20), (16, 18)]),
                       ("validation", [(16, 16), (20, 22)])):
    for i, shape in enumerate(sizes):
      mask = _blob_mask(shape, rng)
      for kind, array in (("image", _pixels(mask, rng)), ("label", mask)):
        os.makedirs(os.path.join(src, split, kind), exist_ok=True)
        Image.fromarray(array).save(os.path.join(src, split, kind, f"s{i}.png"))
  with open(os.path.join(src, "labels.json"), "w") as f:
    json.dump(LABELS, f)


def _folders_3d(src, rng):
  import nibabel
  for split, n in (("train", 2), ("validation", 1)):
    for i in range(n):
      mask = _blob_mask((10, 12, 9), rng)
      for kind, array in (("image", _pixels(mask, rng).astype(np.float32)), ("label", mask)):
        os.makedirs(os.path.join(src, split, kind), exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(array, np.diag([2.0, 1.5, 1.0, 1.0])),
                     os.path.join(src, split, kind, f"v{i}.nii.gz"))
  with open(os.path.join(src, "labels.json"), "w") as f:
    json.dump(LABELS, f)


def _train(root, name, rank):
  from cnnlab.datasets import prepare
  from cnnlab.training import train_and_evaluate
  from experiments.configs import unet3d_phantoms, unet_isbi2012
  rng = np.random.default_rng(rank)
  (_folders_2d if rank == 2 else _folders_3d)(os.path.join(root, "src"), rng)
  tfds_dir = os.path.join(root, "tfds")
  prepare.prepare(name, os.path.join(root, "src"), tfds_dir)
  c = unet_isbi2012.get_config() if rank == 2 else unet3d_phantoms.get_config()
  c.dataset.name, c.dataset.data_dir = name, tfds_dir
  c.model.kwargs = {"base_channels": 2, "depth": 2 if rank == 2 else 1, "padding": "same"}
  c.dataset.crop_shape = c.dataset.tile_shape = (16, 16) if rank == 2 else (8, 8, 8)
  if rank == 2:
    c.dataset.border_w0, c.dataset.elastic_prob = 0.0, 0.0
  else:
    c.dataset.preprocess, c.dataset.window = "zscore", None
  c.batch_size, c.num_train_steps, c.eval_every_steps = 2, 2, 2
  c.checkpoint_every_steps, c.log_every_steps, c.compilation_cache_dir = 2, 1, ""
  workdir = os.path.join(root, "wd")
  final = train_and_evaluate(c, workdir)
  return workdir, final


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
  return _train(str(tmp_path_factory.mktemp("seg2d")), "segmentation/h9toy", 2)


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
  return _train(str(tmp_path_factory.mktemp("seg3d")), "segvolumes/h9toy", 3)


def test_evaluate_writes_the_segmentation_metrics_and_pixel_confusion(run2d, capsys):
  from experiments import evaluate
  workdir, final = run2d
  result = evaluate.evaluate(None, workdir, checkpoint="latest")
  print(evaluate.summary(result, "X"))
  line = capsys.readouterr().out.strip()
  saved = json.load(open(os.path.join(workdir, "eval_validation.json")))
  assert saved["split"] == "validation" and saved["class_names"] == CLASSES
  for key in ("eval_pixel_error", "eval_mean_dice", "eval_dice_nucleus", "eval_iou_cell",
              "eval_loss", "eval_count"):
    assert saved[key] == pytest.approx(final[key], abs=1e-6), key   # the run's own evaluation
  m = np.asarray(saved["confusion_matrix"])
  assert m.shape == (3, 3) and m.sum() == 16 * 16 + 20 * 22 and saved["eval_count"] == 2
  assert 1 - np.trace(m) / m.sum() == pytest.approx(saved["eval_pixel_error"])
  dice = 2 * np.diag(m) / (m.sum(0) + m.sum(1))
  np.testing.assert_allclose([saved[f"eval_dice_{n}"] for n in CLASSES], dice, atol=1e-9)
  assert line.startswith("validation: mean_dice=") and "dice: background=" in line
  assert "top1" not in line and line.endswith("count=2 -> X")


def _inputs_2d(root):
  rng = np.random.default_rng(5)
  odd = _pixels(_blob_mask((21, 27), rng), rng)
  Image.fromarray(odd).save(root / "odd.png")
  Image.fromarray(odd[:16, :16]).save(root / "tile.tif")
  Image.fromarray(np.stack([odd] * 3, -1)).save(root / "colour.png")
  return odd


def _csv(path):
  with open(path) as f:
    return {os.path.basename(r["path"]): r for r in csv.DictReader(f)}


def test_predict_writes_one_mask_per_image_beside_the_csv(run2d, tmp_path, capsys):
  import jax
  from cnnlab.training import load_trained
  from experiments import predict
  workdir, _ = run2d
  odd = _inputs_2d(tmp_path)
  out = tmp_path / "out" / "p.csv"
  inputs = [str(tmp_path / n) for n in ("odd.png", "tile.tif", "colour.png")]
  rows, failed = predict.predict(workdir, inputs, out=str(out))
  assert failed == 1 and "colour.png: 3 channel(s)" in capsys.readouterr().err
  table = _csv(out)
  assert list(table["odd.png"])[:4] == ["path", "mask", "shape", "spacing_mm"]
  mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "odd.png"))
  assert mask.dtype == np.uint8 and mask.shape == odd.shape and mask.max() < 3
  assert table["odd.png"]["mask"] == str(tmp_path / "out" / "masks" / "odd.png")
  assert [int(table["odd.png"][f"pixels_{n}"]) for n in CLASSES] == \
      np.bincount(mask.ravel(), minlength=3).tolist()
  assert table["odd.png"]["shape"] == "21x27" and "ml_cell" not in table["odd.png"]
  # A 16x16 input is one tile: its mask is the network's own argmax on x / 255.
  t = load_trained(workdir, "auto")
  x = odd[:16, :16, None].astype(np.float32)[None] / 255.0
  expected = np.asarray(jax.numpy.argmax(t.model.apply(t.variables, x, train=False), -1))[0]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/masks/tile.png")), expected)
  # Again with --grey: the colour image is accepted; earlier masks are never overwritten.
  from cnnlab.explain import user_files
  predict.predict(workdir, inputs[:1] + inputs[2:], out=str(tmp_path / "out" / "q.csv"),
                  conversions=user_files.Conversions(grey=True))
  assert sorted(os.listdir(tmp_path / "out" / "masks")) == [
      "colour.png", "odd-2.png", "odd.png", "tile.png"]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/masks/odd-2.png")), mask)


def test_predict_default_folder_and_refusals(run2d, tmp_path):
  from cnnlab.explain import user_files
  from cnnlab.training import ConfigError
  from experiments import predict
  workdir, _ = run2d
  _inputs_2d(tmp_path)
  predict.predict(workdir, [str(tmp_path / "odd.png")])
  assert "odd.png" in os.listdir(os.path.join(workdir, "masks"))
  assert len(os.listdir(os.path.join(workdir, "predictions"))) == 1
  with pytest.raises(ConfigError, match="--explain=gradcam: heat maps explain a classif"):
    predict.predict(workdir, [str(tmp_path / "odd.png")], explain="gradcam")
  with pytest.raises(ConfigError, match="--resize: a segmentation run predicts each input at"):
    predict.predict(workdir, [str(tmp_path / "odd.png")],
                    conversions=user_files.Conversions(resize=True))


def test_predict_volumes_nifti_npy_and_a_dicom_series(run3d, tmp_path, capsys):
  import nibabel
  pytest.importorskip("pydicom")
  from test_dicom import _series
  from cnnlab.data import volumes
  from experiments import predict
  workdir, _ = run3d
  rng = np.random.default_rng(7)
  scan = _pixels(_blob_mask((11, 13, 7), rng), rng).astype(np.float32)
  affine = np.array([[0, 0, 1.2, -5], [0, 2.0, 0, 3], [3.0, 0, 0, 7], [0, 0, 0, 1]])
  nibabel.save(nibabel.Nifti1Image(scan, affine), str(tmp_path / "scan.nii.gz"))
  np.save(tmp_path / "plain.npy", scan)
  _series(str(tmp_path / "CT_7"), n=4, rows=9, cols=10)
  inputs = [str(tmp_path / n) for n in ("scan.nii.gz", "plain.npy", "CT_7")]
  rows, failed = predict.predict(workdir, inputs, out=str(tmp_path / "v.csv"))
  assert failed == 0
  assert "plain.npy: a .npy volume has no geometry" in capsys.readouterr().out
  table = _csv(tmp_path / "v.csv")
  nii = nibabel.load(str(tmp_path / "masks" / "scan.nii.gz"))
  np.testing.assert_allclose(nii.affine, affine)
  mask = np.asarray(nii.dataobj)
  assert mask.shape == scan.shape and nii.get_data_dtype() == np.uint8
  row = table["scan.nii.gz"]
  counts = np.bincount(mask.ravel(), minlength=3)
  assert [int(row[f"voxels_{n}"]) for n in CLASSES] == counts.tolist()
  assert row["spacing_mm"] == "3x2x1.2"
  assert float(row["ml_cell"]) == pytest.approx(counts[1] * 3 * 2 * 1.2 / 1000, abs=1e-3)
  npy = nibabel.load(str(tmp_path / "masks" / "plain.nii.gz"))
  np.testing.assert_array_equal(npy.affine, np.eye(4))
  np.testing.assert_array_equal(np.asarray(npy.dataobj), mask)      # same voxels, same mask
  assert table["plain.npy"]["ml_cell"] == "" and "identity affine" in table["plain.npy"]["notes"]
  ct = nibabel.load(str(tmp_path / "masks" / "CT_7.nii.gz"))
  np.testing.assert_allclose(ct.affine, volumes.affine(str(tmp_path / "CT_7")))
  assert ct.shape == (4, 9, 10) and table["CT_7"]["shape"] == "4x9x10"
  assert table["CT_7"]["ml_background"] != ""


def _png_ok(path):
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.std() > 0
  return image.shape


def test_visualize_segmentation_kinds_in_2d(run2d, tmp_path):
  from cnnlab.training import ConfigError
  from experiments import visualize
  workdir, _ = run2d
  written = visualize.visualize(workdir, str(tmp_path / "fig"), image_index=1)
  assert sorted(written) == sorted(visualize.DEFAULT_SEGMENTATION)
  assert {os.path.basename(p) for p in written.values()} == {
      "overlay.png", "contours.png", "dice.png", "curves.png"}
  for path in written.values():
    _png_ok(path)
  more = visualize.visualize(workdir, str(tmp_path / "fig"), what=["feature_maps", "confusion",
                                                                   "filters"])
  assert sorted(more) == ["confusion", "feature_maps", "filters"]
  for kind in ("mistakes", "gradcam"):
    with pytest.raises(ConfigError, match=f"{kind} is drawn for a classification run only"):
      visualize.visualize(workdir, str(tmp_path / "fig"), what=[kind])
  with pytest.raises(ConfigError, match="--image_index=9: the validation split has 2 examples"):
    visualize.visualize(workdir, str(tmp_path / "fig"), what=["overlay"], image_index=9)
  with pytest.raises(ConfigError, match="nope is not a picture kind; valid: overlay"):
    visualize.visualize(workdir, str(tmp_path / "fig"), what=["nope"])


def test_visualize_segmentation_kinds_in_3d(run3d, tmp_path):
  from experiments import visualize
  workdir, _ = run3d
  written = visualize.visualize(workdir, str(tmp_path / "fig"),
                                what=["overlay", "contours", "dice"])
  shapes = {k: _png_ok(p) for k, p in written.items()}
  assert shapes["overlay"][1] == 1200 and shapes["contours"][1] == 1200   # three slices
