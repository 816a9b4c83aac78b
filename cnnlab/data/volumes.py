"""Reading volumes (CT / MRI / microscopy): ``.npy``, NIfTI (``.nii``, ``.nii.gz``) and DICOM
series folders.

    v = read_volume("scan.nii.gz")          # float32 [D, H, W, C]
    v = read_volume("CT_0001/")             # a DICOM series folder: HU, slices in order
    shape = volume_shape("scan.nii.gz")     # from the header, no voxels read
    z, y, x = voxel_spacing("CT_0001/")     # mm; None for .npy (unknown)
    a = affine("CT_0001/")                  # 4x4, voxel (d, h, w) -> RAS mm; None for .npy
    vol = load("scan.nii.gz")               # voxels, spacing and affine at once
    g = geometry("CT_0001/")                # shape, spacing and affine from the headers only

What a training pipeline, ``predict`` and the dataset builders (cnnlab.datasets) all read
volumes with. A file or folder that cannot be used is a ``VolumeError``: one line naming it.

Axis order: the array's axes are called (D, H, W) whatever the scanner called them. For a
``.npy`` file and a NIfTI file they are the stored index axes (NIfTI's i, j, k), for a DICOM
series [slice, row, column] with slices in geometric order (cnnlab.data.dicom states the
conventions). ``voxel_spacing`` and ``affine`` are in that same axis order, so a mask with the
array's shape saved as ``nibabel.Nifti1Image(mask, affine(path))`` lies on the scan: the
affine is always NIfTI's frame (RAS mm) — the file's own for NIfTI (nibabel's choice of sform
/ qform), converted from DICOM's LPS for a series (``affine(path, frame='LPS')`` keeps DICOM's
frame; for a NIfTI file that is diag(-1, -1, 1) times its RAS affine).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from cnnlab.data import dicom

EXTENSIONS = (".npy", ".nii", ".nii.gz")
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])   # its own inverse


class VolumeError(ValueError):
  """A volume folder or file that cannot be used; one line naming the file."""


@dataclasses.dataclass(frozen=True)
class Volume:
  """A volume with its geometry: ``spacing`` (z, y, x) mm and ``affine`` (4x4, voxel -> RAS
  mm) are None where the file does not say (``.npy``)."""
  voxels: np.ndarray                 # float32 [D, H, W, C]
  spacing: tuple[float, float, float] | None
  affine: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Geometry:
  """What the header(s) say: ``shape`` [D, H, W, C], ``spacing`` and ``affine`` as in Volume."""
  shape: tuple[int, int, int, int]
  spacing: tuple[float, float, float] | None
  affine: np.ndarray | None


def is_volume_path(path: str) -> bool:
  """A ``.npy`` / NIfTI file, or a folder holding DICOM files."""
  if os.path.isdir(path):
    return dicom.is_series_folder(path)
  return str(path).lower().endswith(EXTENSIONS)


def volume_stem(path: str) -> str:
  """The name without its volume extension (``scan.nii.gz`` -> ``scan``; a folder: its name)."""
  name = os.path.basename(os.path.normpath(str(path)))
  for ext in sorted(EXTENSIONS, key=len, reverse=True):
    if name.lower().endswith(ext):
      return name[:-len(ext)]
  return name


def _series(path: str) -> dicom.Series:
  try:
    return dicom.read_series(path)
  except dicom.DicomError as e:
    raise VolumeError(str(e)) from e
  except ImportError as e:
    raise VolumeError(f"{path}: reading a DICOM series needs pydicom "
                      "(pip install pydicom)") from e


def _dicom_voxels(series: dicom.Series) -> np.ndarray:
  try:
    return series.read_voxels()
  except dicom.DicomError as e:
    raise VolumeError(str(e)) from e


def _checked(path: str, v: np.ndarray) -> np.ndarray:
  if v.ndim not in (3, 4) or not np.issubdtype(v.dtype, np.number):
    raise VolumeError(f"{path}: shape {v.shape} dtype {v.dtype}; expected a numeric "
                      "[D, H, W] or [D, H, W, C] array")
  return np.asarray(v if v.ndim == 4 else v[..., None], np.float32)


def _reader_error(path: str, what: str, e: Exception) -> VolumeError:
  msg = str(e).splitlines()[0] if str(e) else ""
  return VolumeError(f"{path}: cannot read the volume{what} ({type(e).__name__}: {msg})")


def load(path: str) -> Volume:
  """The voxels (float32 [D, H, W, C]) with spacing and affine where the file has them."""
  if os.path.isdir(path):
    series = _series(path)
    return Volume(_dicom_voxels(series), series.spacing, series.affine("RAS"))
  try:
    if path.lower().endswith(".npy"):
      return Volume(_checked(path, np.load(path, allow_pickle=False)), None, None)
    import nibabel
    image = nibabel.load(path)
    v = np.asarray(image.get_fdata(dtype=np.float32))
  except VolumeError:
    raise
  except Exception as e:  # any reader failure is this file's fault: name it
    raise _reader_error(path, "", e) from e
  return Volume(_checked(path, v), _nifti_spacing(image), np.asarray(image.affine, float))


def read_volume(path: str) -> np.ndarray:
  """float32 [D, H, W, C] from a .npy or NIfTI file (a 3-D array gets C = 1) or a DICOM
  series folder (rescaled: Hounsfield units for CT)."""
  if os.path.isdir(path):
    return _dicom_voxels(_series(path))
  return load(path).voxels


def volume_shape(path: str) -> tuple[int, ...]:
  """The [D, H, W, C] shape from the file header(s) (no voxel data read)."""
  if os.path.isdir(path):
    return _series(path).shape + (1,)
  try:
    if path.lower().endswith(".npy"):
      shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    else:
      import nibabel
      shape = nibabel.load(path).shape
  except Exception as e:
    raise VolumeError(f"{path}: cannot read the volume header ({type(e).__name__})") from e
  return tuple(int(s) for s in shape) + ((1,) if len(shape) == 3 else ())


def geometry(path: str) -> Geometry:
  """Shape, spacing and affine from the header(s) alone (no voxel data read)."""
  if os.path.isdir(path):
    series = _series(path)
    return Geometry(series.shape + (1,), series.spacing, series.affine("RAS"))
  if path.lower().endswith(".npy"):
    return Geometry(volume_shape(path), None, None)
  image = _nifti_header(path)
  shape = tuple(int(s) for s in image.shape)
  if len(shape) not in (3, 4):
    raise VolumeError(f"{path}: shape {shape}; expected [D, H, W] or [D, H, W, C]")
  return Geometry(shape + ((1,) if len(shape) == 3 else ()), _nifti_spacing(image),
                  np.asarray(image.affine, float))


def _nifti_spacing(image) -> tuple[float, float, float]:
  return tuple(float(z) for z in image.header.get_zooms()[:3])


def _nifti_header(path: str):
  try:
    import nibabel
    return nibabel.load(path)
  except Exception as e:
    raise _reader_error(path, " header", e) from e


def voxel_spacing(path: str) -> tuple[float, float, float] | None:
  """(z, y, x) voxel size in mm, in read_volume's axis order: the header's zooms for NIfTI,
  the slice positions and PixelSpacing for a DICOM series; None for ``.npy`` (unknown)."""
  if os.path.isdir(path):
    return _series(path).spacing
  if path.lower().endswith(".npy"):
    return None
  return _nifti_spacing(_nifti_header(path))


def affine(path: str, frame: str = "RAS") -> np.ndarray | None:
  """4x4 map from voxel index (d, h, w, 1) to world mm in ``frame`` ('RAS', NIfTI's, default;
  or 'LPS', DICOM's); None for ``.npy``."""
  if frame not in ("RAS", "LPS"):
    raise ValueError(f"affine frame {frame!r}: use 'RAS' or 'LPS'")
  if os.path.isdir(path):
    return _series(path).affine(frame)
  if path.lower().endswith(".npy"):
    return None
  a = np.asarray(_nifti_header(path).affine, float)
  return a if frame == "RAS" else _LPS_RAS @ a
