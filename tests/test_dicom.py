"""DICOM series folders (cnnlab.data.dicom through cnnlab.data.volumes): slice order from the
geometry, Hounsfield units, spacing, the voxel -> world affine, the refusals; NIfTI spacing and
affine; CT windowing. Series come from pydicom's own test files and from files written here."""
import os
import shutil

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from cnnlab.data import volumes, windowing  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _shipped(*parts):
  return os.path.join(os.path.dirname(pydicom.data.get_testdata_file("DICOMDIR")), *parts)


def _ct_small():
  return pydicom.data.get_testdata_file("CT_small.dcm")


def _ds(v):
  """A float as a DICOM decimal string (at most 16 characters)."""
  return f"{float(v):.6f}"[:16]


def _write_slice(path, *, position, orientation, stored, slope=None, intercept=None,
                 series_uid, instance, spacing=(0.7, 0.9)):
  """One CT slice, CT_small.dcm (shipped with pydicom) as the template."""
  ds = pydicom.dcmread(_ct_small())
  ds.SOPInstanceUID = pydicom.uid.generate_uid()
  ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  ds.SeriesInstanceUID = series_uid
  ds.InstanceNumber = instance
  ds.ImagePositionPatient = [_ds(v) for v in position]
  ds.ImageOrientationPatient = [_ds(v) for v in orientation]
  ds.PixelSpacing = [_ds(v) for v in spacing]
  ds.Rows, ds.Columns = stored.shape
  ds.PixelData = np.ascontiguousarray(stored, np.int16).tobytes()
  for tag, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
    if value is None:
      if tag in ds:
        delattr(ds, tag)
    else:
      setattr(ds, tag, _ds(value))
  ds.save_as(path, enforce_file_format=True)


def _rotation(seed):
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


def _series(folder, n=5, *, rows=4, cols=6, dz=2.5, seed=0, tilt=0.0, slopes=True,
            uid=None, names=None):
  """An oblique series: geometric slice k holds stored values 100 k + 10 h + w; file names
  and InstanceNumbers are shuffled independently of the geometry. Returns what was written."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  rot = _rotation(seed)
  row, col = rot[:, 0], rot[:, 1]
  normal = np.cross(row, col)
  origin = np.array([-40.5, 12.25, 80.0])
  step = dz * normal + tilt * col
  uid = uid or pydicom.uid.generate_uid()
  names = names or [f"IMG{i:03d}" for i in rng.permutation(n)]
  numbers = rng.permutation(n) + 1
  hh, ww = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  written = []
  for k in range(n):
    slope, intercept = (1.0 + 0.5 * k, -1024.0 + 3 * k) if slopes else (None, None)
    stored = 100 * k + 10 * hh + ww
    path = os.path.join(folder, names[k])
    _write_slice(path, position=origin + k * step, orientation=[*row, *col], stored=stored,
                 slope=slope, intercept=intercept, series_uid=uid, instance=int(numbers[k]))
    ds = pydicom.dcmread(path)
    written.append({"path": path, "stored": stored, "slope": slope, "intercept": intercept,
                    "ipp": np.asarray(ds.ImagePositionPatient, float),
                    "iop": np.asarray(ds.ImageOrientationPatient, float)})
  return written


def _one_line_error(folder, match):
  with pytest.raises(volumes.VolumeError, match=match) as e:
    volumes.read_volume(str(folder))
  assert str(e.value).startswith(str(folder)) and "\n" not in str(e.value)
  return str(e.value)


# --------------------------------------------------------------- files pydicom ships

def test_shipped_ct_series_sorted_by_position_not_instance_number():
  folder = _shipped("98892001", "CT5N")
  headers = [pydicom.dcmread(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
  z = [float(ds.ImagePositionPatient[2]) for ds in headers]
  numbers = [int(ds.InstanceNumber) for ds in headers]
  assert np.argsort(z).tolist() != np.argsort(numbers).tolist()   # the two orders disagree
  v = volumes.read_volume(folder)
  assert v.shape == (5, 16, 16, 1) and v.dtype == np.float32
  for k, i in enumerate(np.argsort(z)):
    ds = headers[i]
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(v[k, ..., 0], hu)
  assert volumes.voxel_spacing(folder) == pytest.approx((2.5, 0.488281, 0.488281))
  assert volumes.volume_shape(folder) == (5, 16, 16, 1)
  lps = volumes.affine(folder, "LPS")
  for k, i in enumerate(np.argsort(z)):
    np.testing.assert_allclose(lps @ [k, 0, 0, 1], [*headers[i].ImagePositionPatient, 1],
                               atol=1e-4)
  np.testing.assert_allclose(volumes.affine(folder), LPS_TO_RAS @ lps)


def test_ct_small_single_slice_in_hounsfield_units(tmp_path):
  shutil.copy(_ct_small(), tmp_path / "slice")
  ds = pydicom.dcmread(_ct_small())
  vol = volumes.load(str(tmp_path))
  assert vol.voxels.shape == (1, 128, 128, 1)
  np.testing.assert_array_equal(vol.voxels[0, ..., 0], ds.pixel_array.astype(np.float32)
                                * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
  assert float(ds.RescaleIntercept) == -1024 and vol.voxels.min() < 0
  # One slice: its z spacing is SpacingBetweenSlices; in-plane from PixelSpacing.
  assert vol.spacing == pytest.approx((float(ds.SpacingBetweenSlices), *map(float,
                                                                            ds.PixelSpacing)))


@pytest.mark.parametrize("folder,reason", [
    (("77654033", "CT2"), "uneven slice spacing: a gap of 202.5 mm"),
    (("98892001", "CT2N"), r"inconsistent orientation \(ImageOrientationPatient\)"),
    (("98892003", "MR700"), r"inconsistent orientation"),
    (("98892003", "MR1"), r"mixes 3 series \(SeriesInstanceUID"),
])
def test_shipped_folders_refused(folder, reason):
  _one_line_error(_shipped(*folder), reason)


@pytest.mark.parametrize("name", ["rtstruct.dcm", "test-SR.dcm"])
def test_non_image_dicom_refused(tmp_path, name):
  _series(tmp_path, n=3)
  shutil.copy(pydicom.data.get_testdata_file(name), tmp_path / "zz_extra")
  msg = _one_line_error(tmp_path, "zz_extra is not an image")
  assert ("RT Structure Set" in msg) if name == "rtstruct.dcm" else ("SR" in msg)


# --------------------------------------------------------------- series written here

def test_written_oblique_series_order_hu_spacing_affine(tmp_path):
  written = _series(tmp_path, n=6)
  vol = volumes.load(str(tmp_path))
  assert vol.voxels.shape == (6, 4, 6, 1)
  for k, w in enumerate(written):   # geometric slice k, whatever its file name / number
    np.testing.assert_allclose(vol.voxels[k, ..., 0],
                               w["stored"] * w["slope"] + w["intercept"], rtol=1e-6)
  ipp = np.array([w["ipp"] for w in written])
  iop = written[0]["iop"]
  gaps = np.diff(ipp, axis=0) @ np.cross(iop[:3], iop[3:])
  assert vol.spacing == pytest.approx((np.median(gaps), 0.7, 0.9), abs=1e-5)
  assert vol.spacing[0] == pytest.approx(2.5, abs=1e-4)
  lps = LPS_TO_RAS @ vol.affine
  # DICOM PS3.3 C.7.6.2.1.1: pixel (row h, column w) of slice k lies at
  # IPP_k + w * PixelSpacing[1] * row cosines + h * PixelSpacing[0] * column cosines.
  for k, h, w in [(0, 0, 0), (5, 3, 5), (2, 1, 4), (4, 3, 0)]:
    want = ipp[k] + w * 0.9 * iop[:3] + h * 0.7 * iop[3:]
    np.testing.assert_allclose(lps @ [k, h, w, 1], [*want, 1], atol=1e-3)
  assert abs(np.linalg.det(vol.affine[:3, :3])) == pytest.approx(np.prod(vol.spacing), 1e-4)
  np.testing.assert_allclose(volumes.affine(str(tmp_path), "LPS"), lps)


def test_default_rescale_is_identity(tmp_path):
  written = _series(tmp_path, n=3, slopes=False)
  v = volumes.read_volume(str(tmp_path))
  for k, w in enumerate(written):
    np.testing.assert_array_equal(v[k, ..., 0], w["stored"])


def test_tilted_series_keeps_slice_spacing_along_the_normal(tmp_path):
  _series(tmp_path, n=4, tilt=0.8)
  vol = volumes.load(str(tmp_path))
  assert vol.spacing == pytest.approx((2.5, 0.7, 0.9), abs=1e-4)
  assert abs(np.linalg.det(vol.affine[:3, :3])) == pytest.approx(2.5 * 0.7 * 0.9, 1e-4)


def test_mask_saved_with_the_affine_lands_on_the_scan(tmp_path):
  """A mask in read_volume's order written as NIfTI with affine(): nibabel puts each voxel
  where DICOM put it (LPS -> RAS), and reads back the series' spacing."""
  nibabel = pytest.importorskip("nibabel")
  written = _series(tmp_path / "ct", n=4, seed=3)
  folder = str(tmp_path / "ct")
  mask = (volumes.read_volume(folder)[..., 0] > -900).astype(np.uint8)
  path = str(tmp_path / "mask.nii.gz")
  nibabel.save(nibabel.Nifti1Image(mask, volumes.affine(folder)), path)
  assert volumes.voxel_spacing(path) == pytest.approx(volumes.voxel_spacing(folder), 1e-5)
  np.testing.assert_allclose(volumes.affine(path), volumes.affine(folder), atol=1e-5)
  iop = written[2]["iop"]
  ras = nibabel.affines.apply_affine(nibabel.load(path).affine, [2, 3, 1])
  lps = written[2]["ipp"] + 1 * 0.9 * iop[:3] + 3 * 0.7 * iop[3:]
  np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-3)
  np.testing.assert_array_equal(volumes.read_volume(path)[..., 0], mask)


def test_missing_middle_slice_refused(tmp_path):
  written = _series(tmp_path, n=5)
  os.remove(written[2]["path"])
  _one_line_error(tmp_path, r"uneven slice spacing: a gap of 5 mm after slice 1 of 4 where "
                  r"the median is 2.5 mm \(a missing slice\?\); tolerance 10%")


def test_two_series_in_one_folder_refused(tmp_path):
  _series(tmp_path, n=3, names=["a1", "a2", "a3"])
  _series(tmp_path, n=3, seed=1, names=["b1", "b2", "b3"])
  _one_line_error(tmp_path, r"mixes 2 series \(SeriesInstanceUID .* \(3 files\), .* \(3 "
                  r"files\)\); put each series in its own folder")


def _modified(path, **tags):
  ds = pydicom.dcmread(path)
  for tag, value in tags.items():
    if value is None:
      delattr(ds, tag)
    else:
      setattr(ds, tag, value)
  ds.save_as(path)


@pytest.mark.parametrize("tags,reason", [
    ({"ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"]}, "inconsistent orientation"),
    ({"Rows": 2, "PixelData": np.zeros((2, 6), np.int16).tobytes()},
     r"inconsistent slice size \(Rows, Columns\)"),
    ({"PixelSpacing": ["0.5", "0.9"]}, r"inconsistent pixel spacing"),
    ({"ImagePositionPatient": None}, "has no ImagePositionPatient"),
    ({"NumberOfFrames": 2}, "is a multi-frame file"),
])
def test_inconsistent_slices_refused(tmp_path, tags, reason):
  written = _series(tmp_path, n=4)
  _modified(written[1]["path"], **tags)
  msg = _one_line_error(tmp_path, reason)
  if "inconsistent" in reason:
    assert os.path.basename(written[1]["path"]) in msg


def test_duplicate_position_and_empty_folder_refused(tmp_path):
  written = _series(tmp_path / "dup", n=4)
  _modified(written[3]["path"], ImagePositionPatient=[_ds(v) for v in written[2]["ipp"]])
  _one_line_error(tmp_path / "dup", "two slices at one position")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("not dicom")
  _one_line_error(tmp_path / "empty", "no DICOM files in the folder")


def test_non_dicom_files_beside_a_series_are_skipped(tmp_path):
  _series(tmp_path, n=3)
  (tmp_path / "notes.txt").write_text("scanner notes")
  (tmp_path / ".DS_Store").write_bytes(b"\0\1\2")
  assert volumes.read_volume(str(tmp_path)).shape == (3, 4, 6, 1)
  assert volumes.is_volume_path(str(tmp_path)) and not volumes.is_volume_path(
      str(tmp_path / "notes.txt"))


# --------------------------------------------------------------- NIfTI and .npy geometry

def test_nifti_spacing_and_affine_from_the_header(tmp_path):
  nibabel = pytest.importorskip("nibabel")
  a = np.array([[0, 0, 1.5, -10], [0, -0.8, 0, 20], [2.0, 0, 0, 5], [0, 0, 0, 1]], float)
  path = str(tmp_path / "v.nii.gz")
  nibabel.save(nibabel.Nifti1Image(np.zeros((3, 4, 5), np.float32), a), path)
  assert volumes.voxel_spacing(path) == pytest.approx((2.0, 0.8, 1.5))
  np.testing.assert_allclose(volumes.affine(path), a)
  np.testing.assert_allclose(volumes.affine(path, "LPS"), LPS_TO_RAS @ a)
  np.save(tmp_path / "v.npy", np.zeros((3, 4, 5), np.float32))
  assert volumes.voxel_spacing(str(tmp_path / "v.npy")) is None
  assert volumes.load(str(tmp_path / "v.npy")).affine is None
  assert volumes.volume_stem(path) == "v"
  assert volumes.volume_stem(str(tmp_path) + os.sep) == os.path.basename(str(tmp_path))


# --------------------------------------------------------------- windowing

def test_window_presets_and_pairs():
  hu = np.array([-1000.0, -125.0, 50.0, 225.0, 1000.0], np.float32)
  out = windowing.window(hu, "soft_tissue")   # level 50, width 350: [-125, 225]
  np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1], atol=1e-6)
  assert out.dtype == np.float32
  np.testing.assert_allclose(windowing.window(hu, (0, 2000)), [0, 0.4375, 0.525, 0.6125, 1])
  for name, (level, width) in windowing.PRESETS.items():
    lo, hi = windowing.window_bounds(name)
    assert (lo + hi) / 2 == level and hi - lo == width
    assert windowing.window(np.float32(level), name) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="unknown CT window 'liver': presets are soft_tissue"):
    windowing.window(hu, "liver")
  with pytest.raises(ValueError, match="width -5.0 HU: must be > 0"):
    windowing.window(hu, (40, -5))


def test_volume_class_folders_accept_dicom_series(tmp_path):
  """volumes/<name> (classification): a class folder may hold DICOM series folders."""
  from cnnlab.datasets import volume_folders
  (tmp_path / "normal").mkdir()
  for i in range(2):
    _series(tmp_path / "tumour" / f"patient{i}", n=3, seed=i, slopes=False)
    np.save(tmp_path / "normal" / f"p{i}.npy", np.zeros((3, 4, 6), np.float32))
  names, splits = volume_folders.scan(str(tmp_path))
  assert names == ("normal", "tumour")
  spec = volume_folders.local_spec("volumes/mixed", str(tmp_path))
  got = {ex["file"]: ex for s in spec.splits for ex in spec.splits[s]()}
  series = got[os.path.join("tumour", "patient1")]
  assert series["label"] == 1 and series["volume"].shape == (3, 4, 6, 1)
  assert series["volume"][2, 1, 3, 0] == 213      # geometric slice 2: stored 100 k + 10 h + w
