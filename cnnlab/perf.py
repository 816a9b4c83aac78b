"""Process-level performance settings: call ``configure`` in an entry point before JAX starts
its backend (before the first computation; importing jax is fine).

    from cnnlab import perf
    perf.configure()                       # the measured defaults
    perf.configure("off")                  # plain XLA:CPU behaviour, for A/B comparisons
    perf.configure(threads=1, xla_flags=["--xla_cpu_enable_fast_math=true"])

What the profiles do (measurements: BUILD_NOTES.md, "Performance"):

- ``default``: cnnlab's CPU formulations stay on: ``models.layers.materialize`` (fusion
  barriers in the ResNets, automatic on a single-device CPU process). No XLA flag is added: every
  XLA:CPU flag we measured (fast math, 512-bit vectors, oneDNN, XNNPACK graph fusion, YNNPACK
  elementwise / reduce fusion, scheduler types, FAST_RUNTIME preset, Eigen single-threading,
  2 host devices) was neutral or slower on the four benchmark models, so none is imposed.
- ``off``: also turns ``materialize`` off, for measuring what it buys.

``threads`` restricts the process to the first N CPUs it may use (XLA:CPU sizes its thread
pools from the CPU affinity). ``host_devices`` splits a CPU host into N XLA devices
(``--xla_force_host_platform_device_count``), so the engine's data parallelism runs N copies
of the step side by side instead of relying on XLA:CPU's intra-op threading alone. On 2 cores
N=2 made LeNet-5, CIFAR ResNet-20 and ResNet-18 1.1-1.3x faster and ResNet-50 1.02x
(BUILD_NOTES.md has the figures). Opt-in: the global batch must divide by N, runs on N host
devices sync every step (the CPU collectives' rendezvous hazard, see ``cnnlab.parallel``), and
float sums then reduce in another order than on one device. ``xla_flags`` are appended to
``$XLA_FLAGS`` for experiments.
Settings that must precede the backend raise ``RuntimeError`` if it has already started.
"""
from __future__ import annotations

import os
from typing import Sequence

PROFILES = ("default", "off")


def backend_started() -> bool:
  """True once JAX has created a backend (after which XLA flags and affinity are fixed)."""
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # internals moved: assume not started
    return False


def configure(profile: str = "default", *, threads: int | None = None,
              host_devices: int | None = None, xla_flags: Sequence[str] = ()) -> dict:
  """Applies ``profile`` (see the module docstring); returns what was set."""
  if profile not in PROFILES:
    raise ValueError(f"perf profile {profile!r} is not one of {', '.join(PROFILES)}")
  if threads is not None and int(threads) < 1:
    raise ValueError(f"threads={threads} must be a positive integer")
  if host_devices is not None and int(host_devices) < 1:
    raise ValueError(f"host_devices={host_devices} must be a positive integer")
  applied: dict = {"profile": profile}
  if (threads or host_devices or xla_flags) and backend_started():
    raise RuntimeError("cnnlab.perf.configure(threads=..., host_devices=..., xla_flags=...) "
                       "must run before the first JAX computation")
  if threads:
    cpus = sorted(os.sched_getaffinity(0))[:int(threads)]
    os.sched_setaffinity(0, cpus)
    applied["cpus"] = cpus
  if host_devices:
    xla_flags = [*xla_flags, f"--xla_force_host_platform_device_count={int(host_devices)}"]
    applied["host_devices"] = int(host_devices)
  if xla_flags:
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *xla_flags]).strip()
    applied["xla_flags"] = list(xla_flags)
  return applied
