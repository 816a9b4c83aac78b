"""cnnlab's oneDNN extension in this process: built (``onednn_build``), loaded with its OpenMP
runtime set to wait passively, its XLA FFI targets registered, and a verdict on whether it can
serve (``status``).

Why the OpenMP runtime matters: oneDNN runs each primitive on a GNU OpenMP (libgomp) team whose
threads, by default, spin for about 3 ms after every parallel region before they sleep. On a
machine whose cores are shared — XLA's own threads, the input pipeline, another job — that
spinning takes the cores from the work that would wake them: a ResNet-20 train step with the
oneDNN convolutions ran 2.9x slower under load than with passive waiting (docs/perf/
onednn_wave8.md), and small layers up to 7x (BUILD_NOTES, issue 17). libgomp reads its policy
from the environment once, in its load-time constructor, so no call can change it later. The
extension therefore loads libgomp itself first, with ``OMP_WAIT_POLICY=PASSIVE`` present in the
C environment only for the duration of that load (restored right after, so child processes and
``os.environ`` never see it). A policy the user exported (``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT``) wins, and where something else already loaded libgomp its policy stands
(``status`` says so).
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
import sys

import jax

from cnnlab.models import onednn_build

# FFI target name -> exported handler symbol.
TARGETS = {"cnnlab_onednn_conv_fwd": "CnnlabOnednnConvFwd",
           "cnnlab_onednn_conv_bwd_data": "CnnlabOnednnConvBwdData",
           "cnnlab_onednn_conv_bwd_weights": "CnnlabOnednnConvBwdWeights",
           "cnnlab_bn_fwd": "CnnlabBnFwd", "cnnlab_bn_bwd": "CnnlabBnBwd"}
OPENMP_LIBRARY = "libgomp.so.1"
_USER_POLICY_VARS = (b"OMP_WAIT_POLICY", b"GOMP_SPINCOUNT")


def _openmp_loaded() -> bool:
  try:
    with open("/proc/self/maps") as maps:
      return any(OPENMP_LIBRARY in line for line in maps)
  except OSError:
    return False


def _load_openmp_passively(onednn_lib_dir: pathlib.Path) -> str:
  """Loads libgomp (the copy the extension will bind to) with a passive waiting policy unless
  the user chose one; returns a one-line note ("" when passive was set here)."""
  libc = ctypes.CDLL(None)
  libc.getenv.restype = ctypes.c_char_p
  if any(libc.getenv(name) for name in _USER_POLICY_VARS):
    return "OpenMP waiting policy as exported by the user"
  if _openmp_loaded():
    return "libgomp was loaded before cnnlab; its waiting policy stands"
  local = onednn_lib_dir / OPENMP_LIBRARY  # the extension's rpath is searched first
  path = str(local) if local.is_file() else OPENMP_LIBRARY
  libc.setenv(b"OMP_WAIT_POLICY", b"PASSIVE", 0)
  try:
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
  finally:
    libc.unsetenv(b"OMP_WAIT_POLICY")
  return ""


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
  """(library, OpenMP note) once the FFI targets are registered, else (None, one-line reason)."""
  if os.environ.get("CNNLAB_ONEDNN", "1") == "0":
    return None, "switched off by CNNLAB_ONEDNN=0"
  if sys.platform != "linux":
    return None, f"the oneDNN extension is built for Linux only (this is {sys.platform})"
  try:
    path = onednn_build.build()
    note = _load_openmp_passively(onednn_build.onednn_dirs()[1])
    lib = ctypes.CDLL(path)
    handlers = {target: getattr(lib, symbol) for target, symbol in TARGETS.items()}
    lib.cnnlab_onednn_primitives_created.restype = ctypes.c_int64
    lib.cnnlab_onednn_supports_bf16.restype = ctypes.c_int
  except onednn_build.BuildError as e:
    return None, str(e)
  except (OSError, AttributeError) as e:  # e.g. libdnnl / libgomp missing at load time
    return None, f"cannot load the oneDNN extension: {e}"
  for target, handler in handlers.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
  return lib, note


def library() -> ctypes.CDLL | None:
  """The loaded extension (building it on first call), or None where it cannot be used."""
  return _load()[0]


def status() -> tuple[bool, str]:
  """(available, one-line reason). Builds the extension on first call (one line on stderr while
  it compiles); prints nothing else. The reason says why it is unavailable, or on success which
  OpenMP waiting policy applies."""
  lib, text = _load()
  if lib is None:
    return False, text
  return True, "oneDNN extension loaded; " + (text or "OpenMP waits passively")


@functools.cache
def _report_unavailable() -> None:
  print(f"cnnlab: oneDNN kernels unavailable ({_load()[1]}); using XLA's", file=sys.stderr,
        flush=True)


def available() -> bool:
  """Whether the extension is built, loaded and registered; says why not once on stderr."""
  ok = library() is not None
  if not ok:
    _report_unavailable()
  return ok


def primitives_created() -> int:
  """How many oneDNN primitives this process has created (cached: one per shape and pass)."""
  lib = library()
  return int(lib.cnnlab_onednn_primitives_created()) if lib is not None else 0


def max_threads() -> int:
  """oneDNN's team size per call: the CPUs this process may use over the local CPU devices."""
  cpus = len(os.sched_getaffinity(0))
  return max(1, cpus // max(1, len(jax.local_devices(backend="cpu"))))
