"""DICOM series folders as volumes: slice order, Hounsfield units, spacing, voxel -> patient map.

    s = read_series("CT_0001/")       # a folder with one file per slice of ONE series
    s.read_voxels()                   # float32 [D, H, W, 1], in HU for CT
    s.spacing, s.affine()             # (z, y, x) mm; 4x4 voxel index -> RAS mm

A CT or MR scan arrives as a folder of single-slice files whose names and InstanceNumbers say
nothing reliable about where each slice lies. Only the geometry does, so this module orders
the slices and measures the grid from the geometry alone, and refuses a folder that is not one
clean, evenly spaced stack rather than guessing (one line, a ``VolumeError`` naming the folder
and the reason).

Conventions (what read_volume, voxel_spacing and affine in cnnlab.data.volumes return):
- Axes: the array is [D, H, W] = [slice, row, column]. Within a slice, H (the row index) runs
  along ImageOrientationPatient's column cosines c = IOP[3:6] and W (the column index) along
  its row cosines r = IOP[0:3], as DICOM stores Pixel Data (PS3.3 C.7.6.2.1.1).
- Slice order: ascending ImagePositionPatient projected on the slice normal n = r x c. For an
  axial series in the usual orientation (r = +x, c = +y) that is feet to head. Never the file
  name and never InstanceNumber.
- Values: stored value * RescaleSlope + RescaleIntercept, per slice (1 and 0 when absent) —
  Hounsfield units for CT; for other modalities the rescaled values, whatever their unit.
- Spacing (z, y, x) in mm: z = the median distance between consecutive slices along n (one
  slice: SpacingBetweenSlices, else SliceThickness, else 1.0); y = PixelSpacing[0] (between
  rows), x = PixelSpacing[1] (between columns).
- Affine: a 4x4 matrix taking (d, h, w, 1) to world mm. DICOM's patient frame is LPS (+x to
  the patient's left, +y posterior, +z head); NIfTI's world frame is RAS (+x right, +y
  anterior, +z head), i.e. RAS = diag(-1, -1, 1) LPS. ``affine()`` gives RAS by default, so
  a mask in read_volume's array order saved as ``nibabel.Nifti1Image(mask, affine)`` lands on
  the scan in any NIfTI viewer; ``affine("LPS")`` gives DICOM's own frame. The slice column
  is the mean step between consecutive positions (a gantry tilt shears it), so
  |det(affine[:3, :3])| is the voxel volume.

Refusals: no DICOM file in the folder; two or more SeriesInstanceUIDs; a DICOM without Pixel
Data (a structured report, an RT structure set, a presentation state ...); a slice without
position / orientation / pixel spacing; a multi-frame file; slices that disagree on
orientation (IOP differing by more than ``ORIENTATION_TOLERANCE`` in any cosine), on Rows /
Columns or on PixelSpacing; two slices at one position; uneven spacing — a gap along n that
differs from the median gap by more than ``SPACING_TOLERANCE`` of it (a missing slice makes
one gap twice the others), or positions that do not lie on one line. Files that are not DICOM
at all (no DICM preamble and no SOP Class UID) and files named DICOMDIR are skipped.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

ORIENTATION_TOLERANCE = 1e-4   # per direction cosine; DS rounding in real files is ~1e-6
SPACING_TOLERANCE = 0.1        # fraction of the median slice gap a gap may deviate by
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomError(ValueError):
  """A DICOM folder that is not one clean series; cnnlab.data.volumes re-raises it as
  VolumeError. One line naming the folder and the reason."""


@dataclasses.dataclass(frozen=True)
class Series:
  """One DICOM series, slices in geometric order (see the module doc for the conventions)."""
  folder: str
  files: tuple[str, ...]        # in slice order
  shape: tuple[int, int, int]   # (D, H, W)
  spacing: tuple[float, float, float]
  origin: np.ndarray            # ImagePositionPatient of the first slice (LPS mm)
  axes: np.ndarray              # 3x3, columns: step per slice, per row, per column (LPS mm)
  modality: str

  def affine(self, frame: str = "RAS") -> np.ndarray:
    """4x4 voxel (d, h, w) -> world mm, in ``frame`` 'RAS' (NIfTI) or 'LPS' (DICOM)."""
    if frame not in ("RAS", "LPS"):
      raise ValueError(f"affine frame {frame!r}: use 'RAS' or 'LPS'")
    a = np.eye(4)
    a[:3, :3], a[:3, 3] = self.axes, self.origin
    return _LPS_TO_RAS @ a if frame == "RAS" else a

  def read_voxels(self) -> np.ndarray:
    """float32 [D, H, W, C] (C = 1 for grey), rescaled (HU for CT), read from the files."""
    return np.stack([_pixels(self.folder, f) for f in self.files])


def _fail(folder: str, reason: str) -> DicomError:
  return DicomError(f"{folder}: {reason}")


def _read_header(path: str):
  """The dataset of ``path`` (Pixel Data deferred, not read), or None if it is not DICOM."""
  import pydicom
  from pydicom.errors import InvalidDicomError
  try:
    return pydicom.dcmread(path, defer_size=1024)
  except InvalidDicomError:
    pass
  try:   # no preamble: DICOM only if it has a SOP Class UID (text files parse as junk)
    ds = pydicom.dcmread(path, defer_size=1024, force=True)
    return ds if "SOPClassUID" in ds else None
  except Exception:  # pylint: disable=broad-except  # unreadable: not a DICOM file
    return None


def _headers(folder: str) -> list[tuple[str, object]]:
  names = sorted(f for f in os.listdir(folder) if not f.startswith(".")
                 and f.upper() != "DICOMDIR" and os.path.isfile(os.path.join(folder, f)))
  found = [(f, _read_header(os.path.join(folder, f))) for f in names]
  found = [(f, ds) for f, ds in found if ds is not None]
  if not found:
    raise _fail(folder, "no DICOM files in the folder")
  return found


def _check_one_series(folder: str, found) -> None:
  uids = {}
  for f, ds in found:
    uids.setdefault(str(ds.get("SeriesInstanceUID", "?")), []).append(f)
  if len(uids) > 1:
    parts = [f"{u} ({len(fs)} files)" for u, fs in list(uids.items())[:3]]
    raise _fail(folder, f"mixes {len(uids)} series (SeriesInstanceUID {', '.join(parts)}); "
                "put each series in its own folder")


def _check_image(folder: str, f: str, ds) -> None:
  if "PixelData" not in ds:
    kind = getattr(ds.get("SOPClassUID"), "name", None) or ds.get("Modality", "unknown")
    raise _fail(folder, f"{f} is not an image ({kind}, no Pixel Data)")
  if int(ds.get("NumberOfFrames", 1) or 1) > 1:
    raise _fail(folder, f"{f} is a multi-frame file ({ds.NumberOfFrames} frames); only "
                "series of single-slice files are read")
  for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
    if tag not in ds:
      raise _fail(folder, f"{f} has no {tag}: not a slice of a cross-sectional series")


def _consistent(folder: str, found, key, what: str, same) -> None:
  first_f, first = found[0][0], key(found[0][1])
  for f, ds in found[1:]:
    if not same(key(ds), first):
      raise _fail(folder, f"inconsistent {what}: {f} has {np.round(key(ds), 6).tolist()}, "
                  f"{first_f} has {np.round(first, 6).tolist()}")


def _check_geometry(folder: str, found) -> None:
  _consistent(folder, found, lambda ds: np.asarray(ds.ImageOrientationPatient, float),
              "orientation (ImageOrientationPatient)",
              lambda a, b: np.allclose(a, b, rtol=0, atol=ORIENTATION_TOLERANCE))
  _consistent(folder, found, lambda ds: np.array([int(ds.Rows), int(ds.Columns)]),
              "slice size (Rows, Columns)", np.array_equal)
  _consistent(folder, found, lambda ds: np.asarray(ds.PixelSpacing, float),
              "pixel spacing (PixelSpacing)", lambda a, b: np.allclose(a, b, rtol=1e-4))


def _slice_step(folder: str, positions: np.ndarray, normal: np.ndarray,
                ds0) -> tuple[np.ndarray, float]:
  """(the mean position step between consecutive sorted slices, the median gap along the
  normal), after the gap checks."""
  if len(positions) == 1:
    dz = float(ds0.get("SpacingBetweenSlices", 0) or ds0.get("SliceThickness", 0) or 1.0)
    return normal * dz, dz
  steps = np.diff(positions, axis=0)
  gaps = steps @ normal
  median = float(np.median(gaps))
  if gaps.min() <= SPACING_TOLERANCE * median:
    raise _fail(folder, "two slices at one position (duplicate files or a second "
                "acquisition of the same series)")
  worst = int(np.argmax(np.abs(gaps - median)))
  if abs(gaps[worst] - median) > SPACING_TOLERANCE * median:
    raise _fail(folder, f"uneven slice spacing: a gap of {gaps[worst]:.4g} mm after slice "
                f"{worst} of {len(gaps) + 1} where the median is {median:.4g} mm (a missing "
                f"slice?); tolerance {SPACING_TOLERANCE:.0%}")
  mean = steps.mean(axis=0)
  if np.abs(steps - mean).max() > SPACING_TOLERANCE * median:
    raise _fail(folder, "slice positions do not lie on one line")
  return mean, median


def read_series(folder: str) -> Series:
  """The series in ``folder`` checked and ordered; its pixel data is read only when
  ``Series.read_voxels`` is called. DicomError (one line) if refused."""
  folder = os.fspath(folder)
  found = _headers(folder)
  for f, ds in found:
    _check_image(folder, f, ds)
  _check_one_series(folder, found)
  _check_geometry(folder, found)
  iop = np.asarray(found[0][1].ImageOrientationPatient, float)
  row, col = iop[:3], iop[3:]
  normal = np.cross(row, col)
  positions = np.array([np.asarray(ds.ImagePositionPatient, float) for _, ds in found])
  order = np.argsort(positions @ normal, kind="stable")
  positions = positions[order]
  ds0 = found[order[0]][1]
  step, dz = _slice_step(folder, positions, normal, ds0)
  dy, dx = (float(v) for v in ds0.PixelSpacing)
  return Series(folder=folder, files=tuple(found[i][0] for i in order),
                shape=(len(found), int(ds0.Rows), int(ds0.Columns)), spacing=(dz, dy, dx),
                origin=positions[0], axes=np.stack([step, col * dy, row * dx], axis=1),
                modality=str(ds0.get("Modality", "")))


def _pixels(folder: str, name: str) -> np.ndarray:
  """One slice as float32 [H, W, C], rescaled with its own slope and intercept."""
  import pydicom
  path = os.path.join(folder, name)
  try:
    ds = pydicom.dcmread(path, force=True)
    stored = ds.pixel_array
  except Exception as e:  # pylint: disable=broad-except  # e.g. a codec plugin missing
    msg = str(e).splitlines()[0] if str(e) else ""
    raise _fail(folder, f"{name}: cannot decode the pixel data ({type(e).__name__}: "
                f"{msg})") from e
  slope = float(ds.get("RescaleSlope", 1) or 1)
  intercept = float(ds.get("RescaleIntercept", 0) or 0)
  v = stored.astype(np.float64) * slope + intercept
  return (v[..., None] if v.ndim == 2 else v).astype(np.float32)


def is_series_folder(path: str) -> bool:
  """Whether ``path`` is a folder holding at least one DICOM file (cheap: stops at the first)."""
  if not os.path.isdir(path):
    return False
  for f in sorted(os.listdir(path)):
    p = os.path.join(path, f)
    if not f.startswith(".") and f.upper() != "DICOMDIR" and os.path.isfile(p):
      if _read_header(p) is not None:
        return True
  return False
