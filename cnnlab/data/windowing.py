"""CT windowing: Hounsfield units -> [0, 1] through a (level, width) window.

    x = window(volume_hu, "soft_tissue")     # or window(volume_hu, (40, 400))

A CT volume spans about -1000 HU (air) to +3000 HU (dense bone), while the structures one
segments differ by tens of HU. A window keeps the band [level - width/2, level + width/2],
maps it linearly onto [0, 1] and clips everything outside to 0 or 1 — what a radiologist's
viewer does, and a common intensity preprocessing for CT networks (fixed per tissue, unlike a
per-volume z-score, so HU keep their meaning across scans).

Presets (level, width) in HU and where each comes from:
- ``soft_tissue`` (50, 350), ``lung`` (-600, 1600), ``bone`` (500, 2000): T. J. Aldeen,
  "CT-scan windowing" (radiology teaching slides, slidepub.com/slideshow/
  understanding-ct-scan-windowing): soft tissue W:350 L:50; lung W:1600 L:-600 (or W:1500
  L:-500); bone W:2000 L:500 (or W:3000 L:1000).
- ``brain`` (40, 80): the standard head-CT window, W:80 L:40 (grepmed.com image 12330,
  "Using stroke windows for detecting ischemia on head CT", T. Krewson / R. Jones).
- ``stroke`` (32, 8): Lev et al., "Acute stroke: improved nonenhanced CT detection — benefits
  of soft-copy interpretation by using variable window width and center level settings",
  Radiology 213(1):150-155, 1999 (level 32 HU, width 8 HU; sensitivity 57 % -> 71 %).
"""
from __future__ import annotations

PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (50.0, 350.0),
    "lung": (-600.0, 1600.0),
    "bone": (500.0, 2000.0),
    "brain": (40.0, 80.0),
    "stroke": (32.0, 8.0),
}


def window_bounds(preset) -> tuple[float, float]:
  """(lowest, highest) HU of a preset name or a (level, width) pair."""
  if isinstance(preset, str):
    if preset not in PRESETS:
      raise ValueError(f"unknown CT window {preset!r}: presets are {', '.join(PRESETS)}, "
                       "or give (level, width) in HU")
    level, width = PRESETS[preset]
  else:
    try:
      level, width = (float(v) for v in preset)
    except (TypeError, ValueError):
      raise ValueError(f"CT window {preset!r}: give a preset name or (level, width) in "
                       "HU") from None
  if not width > 0:
    raise ValueError(f"CT window width {width} HU: must be > 0")
  return level - width / 2, level + width / 2


def window(volume_hu, preset):
  """``volume_hu`` (a NumPy or JAX array in HU) windowed: values in [0, 1], same dtype for
  float inputs. ``preset``: a name in PRESETS or (level, width) in HU."""
  lo, hi = window_bounds(preset)
  return ((volume_hu - lo) / (hi - lo)).clip(0.0, 1.0)
