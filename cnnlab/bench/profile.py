"""Where a train step's time goes: per-operation totals from a JAX profiler trace (XLA:CPU's
thunks, one per fusion / convolution / custom call) and from PyTorch's profiler, grouped into
the same few categories so the two frameworks can be read side by side.

    from cnnlab.bench import profile
    rows = profile.xla_thunk_times(trace_dir)      # {thunk name: (seconds, calls)}
    table = profile.by_category(rows, profile.xla_category)

Categories: ``conv`` (XLA convolutions and the oneDNN extension's convolution calls),
``batchnorm`` (includes the extension's native BatchNorm calls), ``matmul``,
``elementwise`` (XLA's loop / input fusions: BatchNorm arithmetic, ReLU, residual adds,
optimizer updates), ``pool``, ``copy`` and ``other``. On XLA:CPU the thunk executor may run two
independent thunks at once, so category totals are thread-seconds: their sum can exceed the
step's wall time.
"""
from __future__ import annotations

import collections
import glob
import os
import re

CATEGORIES = ("conv", "matmul", "batchnorm", "elementwise", "pool", "copy", "other")

_SUFFIX = re.compile(r"[._]\d+$")


def _stem(name: str) -> str:
  return _SUFFIX.sub("", name)


def xla_category(name: str, known: dict[str, str] | None = None) -> str:
  """The category of an XLA:CPU thunk: ``known[name]`` (see ``hlo_categories``) where given,
  else from its HLO instruction name."""
  if known and name in known:
    return known[name]
  n = _stem(name).lower()
  if n.startswith("ffi_call") or "convolution" in n:
    return "conv"
  if n.startswith(("dot", "wrapped_dot")) or n.endswith("dot_fusion") or "gemm" in n:
    return "matmul"
  if "reduce-window" in n or "reduce_window" in n or "select-and-scatter" in n:
    return "pool"
  if n.startswith(("copy", "transpose", "wrapped_transpose", "bitcast")):
    return "copy"
  if "fusion" in n or n.startswith("wrapped_"):
    return "elementwise"
  return "other"


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{\s*$")
_CALL = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*\bcalls=%?([\w.\-]+)")
_OP = re.compile(r"= [^=]*?\b(convolution|dot|reduce-window|select-and-scatter)\(")
_OP_CATEGORY = {"convolution": "conv", "dot": "matmul", "reduce-window": "pool",
                "select-and-scatter": "pool"}
# cnnlab's FFI calls by target: the oneDNN convolutions and the native BatchNorm passes.
_FFI = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*custom_call_target="(cnnlab_[a-z_]+)"')
_FFI_CATEGORY = (("cnnlab_bn_", "batchnorm"), ("cnnlab_onednn_conv_", "conv"))


def hlo_categories(hlo_text: str) -> dict[str, str]:
  """{instruction: category} from a compiled module's HLO text, for thunks whose name does not
  say what they compute: fusions (XLA:CPU's ``ynn_fusion``\ s may hold a convolution, a dot
  or a plain reduction: the called computation's convolution / dot / pooling op decides) and
  cnnlab's FFI calls (by custom-call target: oneDNN convolution or native BatchNorm)."""
  ops: dict[str, set] = {}
  calls: dict[str, str] = {}
  targets: dict[str, str] = {}
  current = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = ops.setdefault(header.group(1), set())
      continue
    if current is None:
      continue
    current.update(_OP.findall(line))
    call = _CALL.match(line)
    if call:
      calls[call.group(1)] = call.group(2)
    ffi = _FFI.match(line)
    if ffi:
      targets[ffi.group(1)] = next(c for p, c in _FFI_CATEGORY + (("", "other"),)
                                   if ffi.group(2).startswith(p))
  out = dict(targets)
  for inst, comp in calls.items():
    found = ops.get(comp, set())
    for op in ("convolution", "dot", "reduce-window", "select-and-scatter"):
      if op in found:
        out[inst] = _OP_CATEGORY[op]
        break
  return out


def torch_category(name: str) -> str:
  """The category of a PyTorch operator (``aten::...``), by what it computes."""
  n = name.lower()
  if "conv" in n:
    return "conv"
  if any(k in n for k in ("addmm", "::mm", "matmul", "linear", "::bmm")):
    return "matmul"
  if "batch_norm" in n:
    return "batchnorm"
  if "pool" in n:
    return "pool"
  if any(k in n for k in ("copy_", "contiguous", "clone", "to_dense", "reorder")):
    return "copy"
  if n.startswith("aten::"):
    return "elementwise"
  return "other"


def xla_thunk_times(trace_dir: str) -> dict[str, tuple[float, int]]:
  """{thunk name: (total seconds, number of executions)} from the ``.xplane.pb`` a
  ``jax.profiler.trace(trace_dir)`` block wrote: events on XLA:CPU's worker threads and on the
  client thread (which runs thunks inline when a program is small), minus the executor's own
  bracketing events."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2   # TensorFlow is a dependency (TFDS)
  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise FileNotFoundError(f"no .xplane.pb under {trace_dir}: was jax.profiler.trace used?")
  space = xplane_pb2.XSpace()
  with open(max(files, key=os.path.getmtime), "rb") as f:
    space.ParseFromString(f.read())
  seconds, calls = collections.Counter(), collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not any(t in line.name for t in ("XLAEigen", "XLAPjRtCpuClient")):
        continue
      for event in line.events:
        name = names.get(event.metadata_id, "?")
        if name.startswith(("ThunkExecutor", "end: ", "SlinkyThreadPool", "ThreadpoolListener")):
          continue
        seconds[name] += event.duration_ps * 1e-12
        calls[name] += 1
  return {k: (seconds[k], calls[k]) for k in seconds}


def by_category(rows: dict[str, tuple[float, int]], category) -> dict[str, float]:
  """Total seconds per category (every name of ``CATEGORIES`` present, zeros included)."""
  out = dict.fromkeys(CATEGORIES, 0.0)
  for name, (secs, _) in rows.items():
    out[category(name)] += secs
  return out


def top(rows: dict[str, tuple[float, int]], n: int, group=_stem) -> list[tuple[str, float, int]]:
  """The ``n`` largest (name, seconds, calls), names grouped by ``group`` (default: numeric
  instance suffixes dropped, so ``fusion.12`` and ``fusion.40`` add up)."""
  secs, calls = collections.Counter(), collections.Counter()
  for name, (s, c) in rows.items():
    secs[group(name)] += s
    calls[group(name)] += c
  return [(k, v, calls[k]) for k, v in secs.most_common(n)]
