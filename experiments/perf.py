"""Process-level performance settings for entry points (XLA flags, CPU affinity): call
``configure`` before JAX starts its backend (before the first computation or device query;
importing jax is fine). These change the whole process, so they live here, with the entry
points, not in the library. Whether they took effect is checked after the backend started
(``check_applied``: public JAX API only), not guessed from JAX internals.

    from experiments import perf
    perf.configure()                       # the measured defaults: no XLA flag added
    perf.configure(threads=1, xla_flags=["--xla_cpu_enable_fast_math=true"])

Profiles (measurements: BUILD_NOTES.md, "Performance"): ``default`` adds no XLA flag — every
XLA:CPU flag we measured (fast math, 512-bit vectors, oneDNN, XNNPACK graph fusion, YNNPACK
elementwise / reduce fusion, scheduler types, FAST_RUNTIME preset, Eigen single-threading)
was neutral or slower on the four benchmark models. ``off`` is the same today: the model-side
formulations (fusion barriers, fused kernels) are no longer a process switch but chosen when a
model is built (``cnnlab.models.kernels``: ``models.create(..., kernels=kernels.PLAIN)`` for
the plain ones), so an A/B of them is a model argument, not a profile.

``threads`` restricts the process to the first N CPUs it may use (XLA:CPU sizes its thread
pools from the CPU affinity). ``host_devices`` splits a CPU host into N XLA devices
(``--xla_force_host_platform_device_count``), so the engine's data parallelism runs N copies
of the step side by side instead of relying on XLA:CPU's intra-op threading alone. On 2 cores
N=2 made LeNet-5, CIFAR ResNet-20 and ResNet-18 1.1-1.3x faster and ResNet-50 1.02x
(BUILD_NOTES.md has the figures). Opt-in: the global batch must divide by N, runs on N host
devices sync every step (the CPU collectives' rendezvous hazard, see ``cnnlab.parallel``), and
float sums then reduce in another order than on one device. ``xla_flags`` are appended to
``$XLA_FLAGS`` for experiments.
Settings that must precede the backend are verified by ``check_applied`` once it runs: a
host-device count that did not take effect raises ``RuntimeError``.
"""
from __future__ import annotations

import os
from typing import Sequence

PROFILES = ("default", "off")


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


def check_applied(applied: dict) -> None:
  """After the backend started: raises RuntimeError if ``host_devices`` did not take effect
  (JAX had already started its CPU backend when ``configure`` ran)."""
  wanted = applied.get("host_devices")
  if not wanted:
    return
  import jax
  got = len(jax.local_devices(backend="cpu"))
  if got != wanted:
    raise RuntimeError(f"host_devices={wanted} did not take effect ({got} CPU devices): "
                       "perf.configure must run before JAX's first computation")
