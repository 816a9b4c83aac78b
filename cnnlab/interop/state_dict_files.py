"""Reading and writing state dicts (key -> array) as files, with or without torch.

``.safetensors`` goes through the safetensors package's numpy API: no torch needed either way.
``.pth`` / ``.pt`` need torch, imported here and only when such a file is asked for: reading uses
``torch.load(weights_only=True)`` (rebuilds tensors and plain containers, never runs arbitrary
pickled code); writing uses ``torch.save`` of a plain dict of tensors, what
``torch.nn.Module.load_state_dict`` takes.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

_TORCH_EXTS = (".pth", ".pt")


def _extension(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext != ".safetensors" and ext not in _TORCH_EXTS:
    raise ValueError(f"unsupported weight file {path!r}: use .safetensors, .pth or .pt")
  return ext


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The state dict stored at ``path`` (.safetensors, .pth or .pt) as numpy arrays."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no weight file at {path!r}")
  if _extension(path) == ".safetensors":
    from safetensors.numpy import load_file
    return dict(load_file(path))
  return {k: to_numpy(v) for k, v in _torch_load(path).items()}


def write_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> str:
  """Writes ``state_dict`` to ``path`` (.safetensors, or .pth / .pt with torch); returns it.

  The file is written under a temporary name and renamed into place, so an existing file at
  ``path`` is either replaced whole or left untouched.
  """
  path = os.fspath(path)
  ext = _extension(path)
  arrays = {k: np.asarray(v, order="C") for k, v in state_dict.items()}
  tmp = f"{path}.tmp-{os.getpid()}{ext}"
  try:
    if ext == ".safetensors":
      from safetensors.numpy import save_file
      save_file(arrays, tmp)
    else:
      torch = _import_torch(path, "writing")
      torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _import_torch(path: str, doing: str):
  try:
    import torch  # only here: cnnlab never needs torch otherwise
  except ImportError as e:
    raise ImportError(f"{doing} {path!r} needs torch (pip install torch), or use "
                      ".safetensors, which cnnlab reads and writes without torch") from e
  return torch


def _torch_load(path: str) -> Mapping[str, Any]:
  torch = _import_torch(path, "reading")
  obj = torch.load(path, map_location="cpu", weights_only=True)
  # A training checkpoint often nests the weights one level down.
  for field in ("state_dict", "model"):
    if isinstance(obj, Mapping) and isinstance(obj.get(field), Mapping):
      obj = obj[field]
  if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ValueError(f"{path!r} does not hold a state dict of tensors (got {type(obj).__name__})")
  return obj


def to_numpy(value: Any) -> np.ndarray:
  """numpy view of a numpy / jax array or a torch tensor (without importing torch)."""
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":   # numpy has no bfloat16
      value = value.float()
    value = value.numpy()
  return np.asarray(value)
