"""``synthetic_phantoms``: 3-D "organ" phantoms with masks, written on first use (no files).

    prepare.prepare("synthetic_phantoms", None)      # -> <data_dir>/segvolumes/synthetic_phantoms

A CT-like task for 3-D segmentation that a small 3-D U-Net learns on a CPU: 48^3 volumes
(5 mm voxels, values in Hounsfield-like units, integers as in real CT) of air around a body
(an ellipsoid of soft tissue with a smooth fat / muscle texture) holding three organs of
different shapes and textures and a small lesion:

| class | name       | shape                                         | texture (HU)           |
|-------|------------|-----------------------------------------------|------------------------|
| 0     | background | air outside, body tissue inside               | -1000; body -20 +- 12  |
| 1     | liver      | a large ellipsoid cut flat on its medial side | 60 +- 6, smooth waves  |
| 2     | kidney     | a bean: an ellipsoid with a notch (hilum)     | cortex 150, medulla 90 |
| 3     | spine      | a cylinder along the body axis                | shell 700, core 250 *  |
| 4     | lesion     | a sphere (radius 2-3.5 voxels) in the liver   | 15 (hypodense)         |

(* with "discs": the core is 80 HU darker in a band every 6 voxels along the axis.)

Organs are classes 1-3 (``organ_classes``; the recipe's "mean organ Dice" averages them), the
lesion class 4 (``lesion_classes``). Each volume has a random pose — rotation about the body
axis within +-20 degrees and tilts within +-6 degrees, translation within +-2 voxels, scale
0.9-1.1 — organ positions and sizes jittered (+-1.5 voxels, x0.85-1.15), the lesion placed at
random in the liver, and N(0, 12 HU) noise. Labels are the shapes evaluated at voxel centres;
intensities follow them (no partial-volume blur), so an organ's boundary is decidable from the
image up to the noise.

Every volume is a pure function of (split, seed, index): ``np.random.default_rng([seed,
split number, index])``. Features are those of every ``segvolumes/<name>`` dataset
(seg_volumes.py): image float32 [48, 48, 48, 1], mask uint8 [48, 48, 48], spacing (5, 5, 5),
affine (RAS, centred on the volume), file. A windowed input (cnnlab.data.windowing, e.g.
``soft_tissue``) or a per-volume z-score both work as preprocessing.
"""
from __future__ import annotations

import numpy as np

from cnnlab.datasets import local, seg_pairs, seg_volumes

FAMILY = "segvolumes"
NAME = "synthetic_phantoms"
SHAPE = (48, 48, 48)
SPACING_MM = 5.0
SIZES = {"train": 256, "validation": 32, "test": 32}
SEED = 0
CLASS_NAMES = ("background", "liver", "kidney", "spine", "lesion")
ORGAN_CLASSES = (1, 2, 3)
LESION_CLASSES = (4,)
NOISE_HU = 12.0
_AIR, _BODY, _LIVER, _LESION = -1000.0, -20.0, 60.0, 15.0
_CORTEX, _MEDULLA, _BONE_SHELL, _BONE_CORE = 150.0, 90.0, 700.0, 250.0
# Anatomy (z, y, x) in voxels about the volume centre, before pose and jitter.
_BODY_RADII = (22.0, 15.0, 20.0)
_LIVER_CENTRE, _LIVER_RADII = (2.0, -2.0, -8.0), (9.0, 8.0, 9.0)
_KIDNEY_CENTRE, _KIDNEY_RADII = (-4.0, 6.0, 9.0), (8.0, 4.5, 4.5)
_SPINE_CENTRE, _SPINE_RADIUS = (0.0, 10.0, 0.0), 3.5


def _rotation(rng: np.random.Generator) -> np.ndarray:
  """About the body (z) axis within +-20 degrees, then tilts about y and x within +-6."""
  a, b, c = np.radians([rng.uniform(-20, 20), rng.uniform(-6, 6), rng.uniform(-6, 6)])
  rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
  ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
  rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
  return rz @ ry @ rx   # axes ordered (z, y, x): rz turns the (y, x) plane


def _anatomy_coords(rng: np.random.Generator) -> np.ndarray:
  """[D, H, W, 3] anatomy coordinates of each voxel centre under a random pose."""
  centre = (np.array(SHAPE) - 1) / 2
  grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE],
                              indexing="ij"), axis=-1) - centre.astype(np.float32)
  shift = rng.uniform(-2, 2, 3)
  scale = rng.uniform(0.9, 1.1)
  return (grid - shift.astype(np.float32)) @ (_rotation(rng) / scale).astype(np.float32)


def _jitter(rng, centre, radii):
  return (np.asarray(centre) + rng.uniform(-1.5, 1.5, 3),
          np.asarray(radii) * rng.uniform(0.85, 1.15, 3))


def _ellipsoid_radius(u, centre, radii) -> np.ndarray:
  """sqrt(sum(((u - c) / r)^2)): < 1 inside the ellipsoid."""
  v = (u - np.asarray(centre, np.float32)) / np.asarray(radii, np.float32)
  return np.sqrt(np.einsum("...i,...i->...", v, v))


def _distance(u, centre) -> np.ndarray:
  return _ellipsoid_radius(u, centre, np.ones(u.shape[-1]))


def _waves(rng, points, amplitude, n=3, wavelengths=(6.0, 15.0)) -> np.ndarray:
  """A smooth texture fixed to the anatomy at ``points`` [N, 3]: ``n`` random plane waves."""
  out = np.zeros(points.shape[0], np.float32)
  for _ in range(n):
    direction = rng.normal(size=3)
    k = 2 * np.pi / rng.uniform(*wavelengths) * direction / np.linalg.norm(direction)
    out += amplitude * np.cos(points @ k.astype(np.float32) + rng.uniform(0, 2 * np.pi))
  return out


def phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(image float32 [D, H, W, 1] in HU, mask uint8 [D, H, W]) of one random phantom."""
  u = _anatomy_coords(rng)
  image = np.full(SHAPE, _AIR, np.float32)
  mask = np.zeros(SHAPE, np.uint8)
  body = _ellipsoid_radius(u, 0.0, _BODY_RADII) < 1
  image[body] = _BODY + _waves(rng, u[body], 4.0)

  c, r = _jitter(rng, _LIVER_CENTRE, _LIVER_RADII)
  liver = body & (_ellipsoid_radius(u, c, r) < 1) & (u[..., 2] < c[2] + 0.6 * r[2])
  image[liver], mask[liver] = _LIVER + _waves(rng, u[liver], 2.0), 1

  lesion_c = c + 0.45 * r * _unit_ball(rng)
  lesion = liver & (_distance(u, lesion_c) < rng.uniform(2.0, 3.5))
  image[lesion], mask[lesion] = _LESION, 4

  c, r = _jitter(rng, _KIDNEY_CENTRE, _KIDNEY_RADII)
  q = _ellipsoid_radius(u, c, r)
  notch = _distance(u, c - [0, 0, r[2]]) < 0.55 * r[1]
  kidney = body & (q < 1) & ~notch
  image[kidney], mask[kidney] = np.where(q > 0.7, _CORTEX, _MEDULLA)[kidney], 2

  c, _ = _jitter(rng, _SPINE_CENTRE, (1, 1, 1))
  d = _distance(u[..., 1:], c[1:])
  radius = _SPINE_RADIUS * rng.uniform(0.9, 1.1)
  spine = body & (d < radius)
  core = _BONE_CORE - 80 * (np.cos(2 * np.pi * u[..., 0] / 6.0) > 0.8)
  image[spine], mask[spine] = np.where(d > radius - 1.2, _BONE_SHELL, core)[spine], 3

  image = np.rint(image + rng.normal(0, NOISE_HU, SHAPE).astype(np.float32))
  return image[..., None], mask


def _unit_ball(rng) -> np.ndarray:
  v = rng.normal(size=3)
  return v / np.linalg.norm(v) * rng.uniform() ** (1 / 3)


def affine() -> np.ndarray:
  """Voxel (d, h, w) -> RAS mm: 5 mm isotropic, the volume centred on the origin; d runs
  feet to head (+S), h anterior to posterior (-A), w right to left (-R), as a DICOM axial
  series read by cnnlab.data.volumes would."""
  a = np.zeros((4, 4))
  a[:3, :3] = np.array([[0, 0, -1], [0, -1, 0], [1, 0, 0]]) * SPACING_MM
  a[:3, 3] = -a[:3, :3] @ ((np.array(SHAPE) - 1) / 2)
  a[3, 3] = 1
  return a


def examples(split: str, seed: int = SEED, count: int | None = None):
  """The first ``count`` (default: all) examples of ``split``, a pure function of (split,
  seed, index): a shorter build holds the first volumes of the full one."""
  number = list(SIZES).index(split)
  for i in range(SIZES[split] if count is None else count):
    image, mask = phantom(np.random.default_rng([seed, number, i]))
    yield {"image": image, "mask": mask,
           "spacing": np.full(3, SPACING_MM, np.float32), "affine": affine(),
           "file": f"{split}/{i:04d}"}


def local_spec(seed: int = SEED, sizes: dict | None = None):
  """The LocalSpec that writes ``segvolumes/synthetic_phantoms`` (``sizes``: fewer volumes
  per split, for tests)."""
  sizes = dict(SIZES if sizes is None else sizes)
  return local.LocalSpec(
      family=FAMILY, config=NAME, features=seg_volumes.features(1),
      splits={s: (lambda s=s: examples(s, seed, sizes[s])) for s in sizes},
      metadata={"task": "segmentation", "ndim": 3, "channels": 1, "shape": [*SHAPE, 1],
                "class_names": list(CLASS_NAMES), "num_classes": len(CLASS_NAMES),
                "label_values": list(range(len(CLASS_NAMES))), "ignore_values": [],
                "ignore_index": seg_pairs.IGNORE_INDEX,
                "label_mapping_source": "generated class indices",
                "organ_classes": list(ORGAN_CLASSES), "lesion_classes": list(LESION_CLASSES),
                "unlabelled_splits": [], "min_size": list(SHAPE), "max_size": list(SHAPE),
                "spacing_unit": "mm", "affine_frame": "RAS", "intensity_unit": "HU",
                "generator": f"cnnlab.datasets.phantoms.examples, seed {seed}"},
      description="Synthetic 3-D organ phantoms (body, liver, kidney, spine, lesion), cnnlab")
