"""Reading volumes (CT / MRI / microscopy) from files: ``.npy``, NIfTI (``.nii``, ``.nii.gz``).

    v = read_volume("scan.nii.gz")          # float32 [D, H, W, C]
    shape = volume_shape("scan.nii.gz")     # from the header, no voxels read

What a training pipeline, ``predict`` and the dataset builders (cnnlab.datasets) all read volumes
with. A file that cannot be used is a ``VolumeError``: one line naming the file.
"""
from __future__ import annotations

import numpy as np

EXTENSIONS = (".npy", ".nii", ".nii.gz")


class VolumeError(ValueError):
  """A volume folder or file that cannot be used; one line naming the file."""


def read_volume(path: str) -> np.ndarray:
  """float32 [D, H, W, C] from a .npy or NIfTI file (a 3-D array gets C = 1)."""
  try:
    if path.lower().endswith(".npy"):
      v = np.load(path, allow_pickle=False)
    else:
      import nibabel
      v = np.asarray(nibabel.load(path).get_fdata(dtype=np.float32))
  except Exception as e:  # any reader failure is this file's fault: name it
    raise VolumeError(f"{path}: cannot read the volume ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})") from e
  if v.ndim not in (3, 4) or not np.issubdtype(v.dtype, np.number):
    raise VolumeError(f"{path}: shape {v.shape} dtype {v.dtype}; expected a numeric "
                      "[D, H, W] or [D, H, W, C] array")
  return np.asarray(v if v.ndim == 4 else v[..., None], np.float32)


def volume_shape(path: str) -> tuple[int, ...]:
  """The [D, H, W, C] shape from the file header (no voxel data read)."""
  try:
    if path.lower().endswith(".npy"):
      shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    else:
      import nibabel
      shape = nibabel.load(path).shape
  except Exception as e:
    raise VolumeError(f"{path}: cannot read the volume header ({type(e).__name__})") from e
  return tuple(int(s) for s in shape) + ((1,) if len(shape) == 3 else ())
