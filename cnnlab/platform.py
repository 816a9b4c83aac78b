"""The devices a run will use, described once for ``cnnlab.config.resolve``.

    devices = cnnlab.platform.describe()     # after jax.distributed / XLA flags are set up

Platform, process count and device count come from JAX (which starts its backend: call after
an entry point's process set-up). On a CPU host with a single process, whether cnnlab's oneDNN
convolution extension can be used is probed too (building it on first use: one line, under a
minute); that decides ``model.kernels='auto'``. ``probe_onednn=False`` skips the probe.
"""
from __future__ import annotations

import jax

from cnnlab.config import Devices
from cnnlab.models import onednn


def describe(*, probe_onednn: bool = True) -> Devices:
  platform = jax.default_backend()
  processes = jax.process_count()
  reason = "not probed"
  if platform == "cpu" and processes == 1 and probe_onednn:
    usable, why = onednn.status()
    reason = "" if usable else why
  return Devices(platform=platform, process_count=processes, device_count=jax.device_count(),
                 onednn=reason)
