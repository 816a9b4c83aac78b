"""Segmentation outputs without a trained run: the pictures of cnnlab/explain/masks.py (overlay,
contours, Dice bars; which classes get a colour, where 3-D slices go), the mask files and CSV
cells of cnnlab/explain/mask_files.py, and a DICOM series folder as ONE user input
(cnnlab/explain/user_files.collect)."""
import os

import matplotlib.image
import numpy as np
import pytest

from cnnlab.explain import mask_files, masks, user_files

NAMES = ("background", "liver", "lesion")


def _blocks(shape):
  """truth: a liver block and a lesion block; prediction: both shifted by one pixel."""
  truth = np.zeros(shape, np.uint8)
  truth[tuple(slice(2, 9) for _ in shape)] = 1
  truth[tuple(slice(9, 12) for _ in shape)] = 2
  return truth, np.roll(truth, 1, axis=-1)


def _png(path):
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.std() > 0
  return image.shape[:2]


def test_drawn_classes_leave_the_background_out():
  truth, _ = _blocks((12, 12))
  assert masks.drawn_classes(NAMES, truth) == [1, 2]
  # No class named background: the class covering most pixels is left clear (EM: the cells).
  em = np.ones((10, 10), np.uint8)
  em[:, 4] = 0
  assert masks.drawn_classes(("membrane", "cell_interior"), em) == [0]
  assert masks.drawn_classes(("only",), em * 0) == [0]


def test_section_goes_through_the_largest_structure():
  truth, _ = _blocks((12, 12, 12))
  assert masks.section([truth], [1, 2]) == (5, 5, 5)       # the 7^3 liver's centre of mass
  assert masks.section([np.zeros((4, 6, 8))], [1]) == (2, 3, 4)   # nothing drawn: centre
  # The first mask without a drawn class is skipped for the next one.
  assert masks.section([np.zeros((12, 12, 12)), truth], [2]) == (10, 10, 10)


def test_example_scores_against_a_hand_count():
  truth = np.array([[0, 1, 1, 255], [0, 0, 1, 2]])
  pred = np.array([[0, 1, 0, 2], [0, 1, 1, 1]])
  s = masks.example_scores(truth, pred, 3)
  # class 0: I=2, P=3, T=3; class 1: I=2, P=4, T=3; class 2: I=0, P=0, T=1 (255 left out).
  np.testing.assert_allclose(s["dice"], [4 / 6, 4 / 7, 0.0])
  assert float(s["pixel_error"]) == pytest.approx(3 / 7)


@pytest.mark.parametrize("shape", [(12, 14), (12, 13, 14)])
def test_overlay_contours_and_dice_pictures(tmp_path, shape):
  truth, pred = _blocks(shape)
  x = np.random.default_rng(0).normal(size=shape + (1,))
  over = masks.plot_overlay(x, pred, str(tmp_path / "o.png"), class_names=NAMES, title="t")
  cont = masks.plot_contours(x, truth, pred, str(tmp_path / "c.png"), class_names=NAMES)
  s = masks.example_scores(truth, pred, 3)
  dice = masks.plot_dice(s["dice"], str(tmp_path / "d.png"), class_names=NAMES,
                         split_dice=[0.9, np.nan, 0.5])
  panels = 2 if len(shape) == 2 else 3                     # input + overlay, or 3 slices
  assert _png(over)[1] == panels * 400
  assert _png(cont)[1] == (600 if len(shape) == 2 else 1200) and _png(dice)[1] == 600
  with pytest.raises(ValueError, match="every pixel of this one is unlabelled"):
    masks.plot_contours(x, np.full(shape, 255), pred, str(tmp_path / "u.png"),
                        class_names=NAMES)
  with pytest.raises(ValueError, match="masks of its spatial shape"):
    masks.plot_overlay(x, pred[:-1], str(tmp_path / "bad.png"), class_names=NAMES)


def test_overlay_colours_the_predicted_classes_only(tmp_path):
  pred = np.zeros((20, 20), np.uint8)
  pred[5:15, 5:15] = 1
  x = np.full((20, 20, 1), 0.5)
  path = masks.plot_overlay(x, pred, str(tmp_path / "o.png"), class_names=NAMES, dpi=50)
  image = matplotlib.image.imread(path)[..., :3]
  liver = np.asarray(masks.colour(1)[:3])
  tinted = np.abs(image - (0.45 * liver + 0.55 * image.mean(axis=-1, keepdims=True))).sum(-1)
  grey = np.ptp(image, axis=-1) < 0.02
  assert (tinted < 0.1).sum() > 100          # the liver square, tinted in its colour
  assert grey.mean() > 0.5                   # background and margins stay grey / white


def test_mask_files_png_nifti_counts_and_never_overwrite(tmp_path):
  import nibabel
  from PIL import Image
  mask = np.zeros((5, 7), np.int64)
  mask[1:3, 2:6] = 2
  m = mask_files.write_mask(mask, str(tmp_path), "in/photo.tif", mask_files.Geometry(), 3)
  again = mask_files.write_mask(mask, str(tmp_path), "other/photo.png", mask_files.Geometry(), 3)
  assert os.path.basename(m.path) == "photo.png" and os.path.basename(again.path) == "photo-2.png"
  stored = np.asarray(Image.open(m.path))
  assert stored.dtype == np.uint8 and stored.shape == (5, 7)
  np.testing.assert_array_equal(stored, mask)
  np.testing.assert_array_equal(m.counts, [27, 0, 8])
  row = mask_files.csv_row(m, NAMES)
  assert row["pixels_lesion"] == 8 and row["shape"] == "5x7" and row["spacing_mm"] == ""
  assert set(row) == set(mask_files.csv_columns(NAMES, 2))
  volume = np.zeros((3, 4, 5), np.uint8)
  volume[0, :2] = 1
  affine = np.diag([0.5, 2.0, 3.0, 1.0])
  geo = mask_files.Geometry((0.5, 2.0, 3.0), affine)
  v = mask_files.write_mask(volume, str(tmp_path), "scans/ct.nii.gz", geo, 3)
  saved = nibabel.load(v.path)
  assert os.path.basename(v.path) == "ct.nii.gz" and saved.get_data_dtype() == np.uint8
  np.testing.assert_allclose(saved.affine, affine)
  np.testing.assert_array_equal(np.asarray(saved.dataobj), volume)
  assert v.volumes_ml[1] == pytest.approx(10 * 0.5 * 2.0 * 3.0 / 1000)
  row = mask_files.csv_row(v, NAMES)
  assert row["voxels_liver"] == 10 and row["ml_liver"] == "0.030"
  assert row["spacing_mm"] == "0.5x2x3"
  with pytest.raises(ValueError, match="at most 256 classes"):
    mask_files.write_mask(volume, str(tmp_path), "x.npy", geo, 300)


def test_geometry_of_user_volumes(tmp_path):
  import nibabel
  np.save(tmp_path / "v.npy", np.zeros((3, 4, 5), np.float32))
  nibabel.save(nibabel.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.diag([2., 3., 4., 1.])),
               str(tmp_path / "v.nii.gz"))
  npy = mask_files.geometry_of(str(tmp_path / "v.npy"), 3)
  assert npy.spacing is None and np.array_equal(npy.affine, np.eye(4))
  assert npy.notes == (mask_files.NPY_AFFINE_NOTE,)
  nii = mask_files.geometry_of(str(tmp_path / "v.nii.gz"), 3)
  assert nii.spacing == (2.0, 3.0, 4.0) and nii.affine[2, 2] == 4.0 and not nii.notes
  assert mask_files.geometry_of("a.png", 2) == mask_files.Geometry()
  assert mask_files.stem(str(tmp_path / "v.nii.gz")) == "v"


def test_a_dicom_series_folder_is_one_input(tmp_path):
  pytest.importorskip("pydicom")
  from test_dicom import _series
  from PIL import Image
  _series(str(tmp_path / "patient" / "CT_1"), n=3)
  np.save(tmp_path / "patient" / "extra.npy", np.zeros((2, 2, 2)))
  (tmp_path / "patient" / "notes").mkdir()           # a sub-folder without DICOM: skipped
  assert user_files.collect([str(tmp_path / "patient" / "CT_1")]) == [
      (str(tmp_path / "patient" / "CT_1"), None)]
  assert user_files.collect([str(tmp_path / "patient")]) == [
      (str(tmp_path / "patient" / "CT_1"), None), (str(tmp_path / "patient" / "extra.npy"), None)]
  (tmp_path / "pngs").mkdir()
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "pngs" / "a.tif")
  assert not user_files.is_dicom_series(str(tmp_path / "pngs"))
  assert user_files.collect([str(tmp_path / "pngs")]) == [(str(tmp_path / "pngs" / "a.tif"), None)]
  name, raw = user_files.read(str(tmp_path / "patient" / "CT_1"))[0]
  assert raw.shape == (3, 4, 6, 1)
