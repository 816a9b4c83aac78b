"""Process-start performance settings for XLA:CPU (placeholder; filled in by the perf work)."""
from __future__ import annotations

import os

PROFILES = ("default", "off")


def backend_started() -> bool:
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # jax not importable or internals moved: assume not started
    return False


def configure(profile: str = "default", *, threads: int | None = None) -> dict:
  """Applies ``profile`` before the JAX backend starts; returns what was set."""
  if profile not in PROFILES:
    raise ValueError(f"perf profile {profile!r} is not one of {', '.join(PROFILES)}")
  applied = {}
  if threads:
    cpus = sorted(os.sched_getaffinity(0))[:int(threads)]
    os.sched_setaffinity(0, cpus)
    applied["cpus"] = cpus
  return applied
