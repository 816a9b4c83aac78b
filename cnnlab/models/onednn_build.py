"""Builds cnnlab's oneDNN extension (``cnnlab/models/native/``) on first use, into a cache.

The extension (oneDNN convolutions and cnnlab's own BatchNorm kernels) is compiled from the C++
sources shipped inside this package, against the headers of the jaxlib that is running (so its
FFI ABI always matches) and of the ``onednn-devel-cpu-gomp`` wheel, and linked with an rpath to
the ``onednn-cpu-gomp`` wheel's ``libdnnl.so`` (no LD_LIBRARY_PATH needed). One compiler
process per source runs at once (~20 CPU-seconds in all). The result is cached
under ``$CNNLAB_CACHE_DIR`` (default ``$XDG_CACHE_HOME/cnnlab`` or ``~/.cache/cnnlab``) in a
directory named by a hash of everything that went into it, so a changed source, jaxlib or
oneDNN builds afresh and an unchanged one is reused. Concurrent first uses (test workers,
data-parallel subprocesses) serialise on a file lock; the library is written atomically.

``build()`` returns the path of the shared library or raises ``BuildError`` with a one-line
reason (no compiler, no oneDNN wheel, compiler error).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import jaxlib

ONEDNN_DIST = "onednn-cpu-gomp"
ONEDNN_DEVEL_DIST = "onednn-devel-cpu-gomp"
# oneDNN 3.2, the last GNU-OpenMP build on PyPI. The newer `onednn` 2026.1.0 (oneDNN 3.13) is a
# SYCL build: 601 MB of wheels (SYCL, OpenCL, TBB, Intel compiler runtimes), 2.0 GB installed, and
# its CPU engine needs an OpenCL ICD set up by hand; per layer no faster here
# (docs/perf/onednn_wave8.md).
ONEDNN_VERSION = "2023.2.0"
SOURCES = ("runtime.cc", "conv_primitives.cc", "bn_kernels.cc", "ffi_conv.cc", "ffi_bn.cc")
HEADERS = ("runtime.h", "conv_primitives.h", "bn_kernels.h")
LIBRARY_NAME = "libcnnlab_onednn.so"
# The compile takes ~10 s on one core; well past that something is wrong.
COMPILE_TIMEOUT_S = 600


class BuildError(RuntimeError):
  """The extension cannot be built here; the message is one line saying why."""


def source_dir() -> pathlib.Path:
  """``native/`` inside this package: shipped as package data, so a plain ``pip install``
  carries the sources and no path leads into a checkout."""
  return pathlib.Path(__file__).resolve().parent / "native"


def _dist_file(dist: str, relative: str) -> pathlib.Path:
  """Absolute path of a file a wheel installed (data files land under the prefix)."""
  try:
    files = importlib.metadata.files(dist) or []
    version = importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    raise BuildError(f"the {dist}=={ONEDNN_VERSION} wheel is not installed") from None
  if version != ONEDNN_VERSION:
    raise BuildError(f"{dist} {version} is installed; cnnlab needs {ONEDNN_VERSION}")
  for f in files:
    path = pathlib.Path(f.locate()).resolve()
    if path.as_posix().endswith("/" + relative):
      return path
  raise BuildError(f"{dist} does not contain {relative}")


def onednn_dirs() -> tuple[pathlib.Path, pathlib.Path]:
  """(include dir, lib dir) of the oneDNN wheels."""
  header = _dist_file(ONEDNN_DEVEL_DIST, "include/oneapi/dnnl/dnnl.hpp")
  library = _dist_file(ONEDNN_DIST, "lib/libdnnl.so.3")
  return header.parents[2], library.parent


def compiler() -> str:
  cxx = os.environ.get("CXX") or "g++"
  path = shutil.which(cxx)
  if path is None:
    raise BuildError(f"no C++ compiler ({cxx!r} not on PATH)")
  return path


def _cache_root() -> pathlib.Path:
  root = os.environ.get("CNNLAB_CACHE_DIR")
  if root:
    return pathlib.Path(root)
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(xdg) / "cnnlab"


def _compile_flags(include: pathlib.Path) -> list[str]:
  # -fno-trapping-math lets GCC vectorise the BatchNorm kernels' masked sums (IEEE results
  # unchanged; only floating-point exception flags, which nothing reads, may differ).
  return ["-std=c++17", "-O3", "-fno-trapping-math", "-fPIC", "-fvisibility=hidden", "-fopenmp",
          "-Wno-return-type", f"-I{include}", f"-I{jax.ffi.include_dir()}"]


def _link_flags(lib: pathlib.Path) -> list[str]:
  return ["-shared", "-fopenmp", f"-L{lib}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib}"]


def _command(cxx: str, include: pathlib.Path, lib: pathlib.Path, out: str) -> list[str]:
  """Everything that decides the build (hashed into the cache key)."""
  return [cxx, *_compile_flags(include), *_link_flags(lib), *SOURCES, "-o", out]


def _fingerprint(command: list[str]) -> str:
  h = hashlib.sha256()
  h.update(" ".join(command[:-1]).encode())
  h.update(jaxlib.__version__.encode())
  for name in SOURCES + HEADERS:
    h.update((source_dir() / name).read_bytes())
  return h.hexdigest()[:16]


def build() -> str:
  """Path of the built extension, compiling it first if the cache has none."""
  src = source_dir()
  if not all((src / s).is_file() for s in SOURCES + HEADERS):
    raise BuildError(f"the extension's sources are missing from {src}")
  include, lib = onednn_dirs()
  cxx = compiler()
  key = _fingerprint(_command(cxx, include, lib, LIBRARY_NAME))
  target_dir = _cache_root() / f"onednn-{key}"
  target = target_dir / LIBRARY_NAME
  if target.is_file():
    return str(target)
  try:
    target_dir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise BuildError(f"cannot create the build cache {target_dir}: {e.strerror}") from None
  with open(target_dir / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same thing
    if not target.is_file():
      _compile(cxx, include, lib, target)
  return str(target)


def _run_all(commands: list[list[str]], log: pathlib.Path) -> None:
  """Runs the commands at once (one compiler per source: the cores share the ~20 CPU-seconds)
  and raises BuildError with the first error line if any fails."""
  procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for c in commands]
  try:
    results = [p.communicate(timeout=COMPILE_TIMEOUT_S) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    raise BuildError(f"compiling the extension took over {COMPILE_TIMEOUT_S} s") from None
  failed = [err for p, (_, err) in zip(procs, results) if p.returncode != 0]
  if failed:
    log.write_text("\n".join(failed))
    errors = [l for l in failed[0].splitlines() if "error" in l] or [failed[0].strip()]
    raise BuildError(f"compiling the extension failed: {errors[0][:300]} (full log: {log})")


def _compile(cxx: str, include: pathlib.Path, lib: pathlib.Path,
             target: pathlib.Path) -> None:
  print(f"cnnlab: building the oneDNN extension once into {target.parent} (~20 CPU-seconds)",
        file=sys.stderr, flush=True)
  src = source_dir()
  with tempfile.TemporaryDirectory(dir=target.parent) as work:
    objects = [os.path.join(work, s + ".o") for s in SOURCES]
    _run_all([[cxx, *_compile_flags(include), "-c", str(src / s), "-o", o]
              for s, o in zip(SOURCES, objects)], target.parent / "build.log")
    tmp = os.path.join(work, LIBRARY_NAME)
    _run_all([[cxx, *objects, *_link_flags(lib), "-o", tmp]], target.parent / "build.log")
    os.replace(tmp, target)
