"""oneDNN convolutions inside jitted JAX code, through XLA's FFI (CPU only).

``conv(x, w, *, strides, padding, dilation, groups)`` has exactly the semantics of
``lax.conv_general_dilated`` on channels-last operands (x: ``(N, *spatial, Cin)``, w:
``(*kernel, Cin // groups, Cout)``, 1-3 spatial dims) in value and gradient. It is a
``jax.custom_vjp`` whose forward, backward-data and backward-weights passes are
``jax.ffi.ffi_call``\\ s of the extension in ``native/`` (oneDNN's primitives, created once per
shape and cached; operands stay in JAX's layout). It falls back to XLA's convolution
whenever the extension cannot serve the call: extension not built (no compiler / oneDNN
wheel), dtype other than float32 / bfloat16 (or mixed), bfloat16 on a CPU where oneDNN has
no bfloat16 convolutions (below AVX-512 for oneDNN 3.2), negative padding, empty operands, and
on every non-CPU platform (chosen at lowering with ``lax.platform_dependent``), so choosing it
never breaks a model. 1-D convolutions run as 2-D ones with a unit height (measured faster:
oneDNN's NWC backward-weights is slow).

Limits: first-order reverse mode only (``jax.jvp`` / second derivatives of this conv are not
supported: custom_vjp). Under ``vmap`` the FFI calls loop over the mapped axis
(``vmap_method="sequential"``) - correct, not fast. ``CNNLAB_ONEDNN=0`` switches it off.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnlab.models import onednn_build

_TARGETS = {"fwd": "CnnlabOnednnConvFwd", "bwd_data": "CnnlabOnednnConvBwdData",
            "bwd_weights": "CnnlabOnednnConvBwdWeights"}
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
# Let oneDNN pick its blocked weights layout and reorder the (small) weights each call (True),
# or hand it JAX's HWIO buffer directly (False). With plain weights oneDNN 3.2 has only its
# gemm-based backward passes, 1.5-40x slower per layer here (experiments/bench_onednn.py).
WEIGHTS_ANY = True


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
  """(library, "") once the FFI targets are registered, else (None, one-line reason)."""
  if os.environ.get("CNNLAB_ONEDNN", "1") == "0":
    return None, "switched off by CNNLAB_ONEDNN=0"
  if sys.platform != "linux":
    return None, f"the oneDNN extension is built for Linux only (this is {sys.platform})"
  try:
    path = onednn_build.build()
    lib = ctypes.CDLL(path)
    handlers = {suffix: getattr(lib, symbol) for suffix, symbol in _TARGETS.items()}
    lib.cnnlab_onednn_primitives_created.restype = ctypes.c_int64
    lib.cnnlab_onednn_supports_bf16.restype = ctypes.c_int
  except onednn_build.BuildError as e:
    return None, str(e)
  except (OSError, AttributeError) as e:  # e.g. libdnnl / libgomp missing at load time
    return None, f"cannot load the oneDNN extension: {e}"
  for suffix, handler in handlers.items():
    jax.ffi.register_ffi_target(f"cnnlab_onednn_conv_{suffix}", jax.ffi.pycapsule(handler),
                                platform="cpu")
  return lib, ""


@functools.cache
def _report_unavailable() -> None:
  print(f"cnnlab: oneDNN convolutions unavailable ({_load()[1]}); using XLA's",
        file=sys.stderr, flush=True)


def available() -> bool:
  """Whether the extension is built, loaded and registered (builds it on first call)."""
  ok = _load()[0] is not None
  if not ok:
    _report_unavailable()
  return ok


def unavailable_reason() -> str:
  """One line saying why ``available()`` is False ("" when it is True)."""
  return _load()[1]


@functools.cache
def dtype_supported(dtype) -> bool:
  """Whether this CPU's oneDNN convolves ``dtype`` (float32 always; bfloat16 needs AVX-512 in
  oneDNN 3.2). Where it cannot, bfloat16 convolutions use XLA's, said once on stderr."""
  dtype = jnp.dtype(dtype)
  lib = _load()[0]
  if lib is None or dtype not in _DTYPES:
    return False
  if dtype == jnp.dtype(jnp.bfloat16) and not lib.cnnlab_onednn_supports_bf16():
    print("cnnlab: this CPU's oneDNN has no bfloat16 convolutions (oneDNN 3.2 needs AVX-512); "
          "bfloat16 convolutions use XLA's", file=sys.stderr, flush=True)
    return False
  return True


def primitives_created() -> int:
  """How many oneDNN primitives this process has created (cached: one per shape and pass)."""
  lib = _load()[0]
  return int(lib.cnnlab_onednn_primitives_created()) if lib is not None else 0


def xla_conv(x, w, *, strides, padding, dilation, groups):
  """The reference formulation: XLA's convolution with the same channels-last contract."""
  spec = {3: ("NWC", "WIO", "NWC"), 4: ("NHWC", "HWIO", "NHWC"),
          5: ("NDHWC", "DHWIO", "NDHWC")}[x.ndim]
  return lax.conv_general_dilated(x, w, tuple(strides), tuple(padding),
                                  rhs_dilation=tuple(dilation), feature_group_count=groups,
                                  dimension_numbers=spec)


def _attrs(strides, padding, dilation, groups) -> dict:
  cpus = len(os.sched_getaffinity(0))
  devices = len(jax.local_devices(backend="cpu"))
  return dict(strides=np.asarray(strides, np.int64),
              pad_lo=np.asarray([p[0] for p in padding], np.int64),
              pad_hi=np.asarray([p[1] for p in padding], np.int64),
              dilation=np.asarray(dilation, np.int64), groups=np.int64(groups),
              max_threads=np.int64(max(1, cpus // max(1, devices))),
              weights_any=bool(WEIGHTS_ANY))


def _ffi(name: str, a, b, out_shape, params):
  call = jax.ffi.ffi_call(f"cnnlab_onednn_conv_{name}", jax.ShapeDtypeStruct(out_shape, a.dtype),
                          vmap_method="sequential")
  return call(a, b, **_attrs(*params))


def _forward(x, w, params):
  strides, padding, dilation, groups = params
  xla = functools.partial(xla_conv, strides=strides, padding=padding, dilation=dilation,
                          groups=groups)
  out_shape = jax.eval_shape(xla, x, w).shape
  return lax.platform_dependent(x, w, cpu=lambda x, w: _ffi("fwd", x, w, out_shape, params),
                                default=xla)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, params):
  return _forward(x, w, params)


def _conv_fwd(x, w, params):
  return _forward(x, w, params), (x, w)


def _conv_bwd(params, residuals, dy):
  x, w = residuals
  strides, padding, dilation, groups = params

  def on_cpu(x, w, dy):
    return (_ffi("bwd_data", dy, w, x.shape, params),
            _ffi("bwd_weights", x, dy, w.shape, params))

  def elsewhere(x, w, dy):
    f = functools.partial(xla_conv, strides=strides, padding=padding, dilation=dilation,
                          groups=groups)
    return jax.vjp(f, x, w)[1](dy)

  return lax.platform_dependent(x, w, dy, cpu=on_cpu, default=elsewhere)


_conv.defvjp(_conv_fwd, _conv_bwd)


def supports(x, w, *, padding, groups) -> bool:
  """Whether ``conv`` runs these operands through oneDNN (on CPU) rather than XLA."""
  return (x.dtype == w.dtype and jnp.dtype(x.dtype) in _DTYPES and 3 <= x.ndim <= 5
          and w.ndim == x.ndim and all(lo >= 0 and hi >= 0 for lo, hi in padding)
          and x.size > 0 and w.size > 0 and groups >= 1
          and x.shape[-1] == w.shape[-2] * groups and w.shape[-1] % groups == 0
          and available() and dtype_supported(x.dtype))


def conv(x, w, *, strides: Sequence[int], padding: Sequence[tuple[int, int]],
         dilation: Sequence[int], groups: int = 1):
  """Channels-last convolution: oneDNN on CPU where supported, XLA's otherwise."""
  params = (tuple(int(s) for s in strides),
            tuple((int(lo), int(hi)) for lo, hi in padding),
            tuple(int(d) for d in dilation), int(groups))
  xla = functools.partial(xla_conv, strides=params[0], padding=params[1],
                          dilation=params[2], groups=params[3])
  if not supports(x, w, padding=params[1], groups=params[3]) or 0 in jax.eval_shape(
      xla, x, w).shape:
    return xla(x, w)
  if x.ndim == 3:  # 1-D as 2-D with a unit height: oneDNN 3.2's 2-D kernels are faster here
    strides, padding, dilation, groups = params
    y = _conv(x[:, None], w[None], ((1,) + strides, ((0, 0),) + padding, (1,) + dilation,
                                    groups))
    return y[:, 0]
  return _conv(x, w, params)
