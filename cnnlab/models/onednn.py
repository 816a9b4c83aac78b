"""oneDNN kernels inside jitted JAX code, through XLA's FFI (CPU only): convolution here,
train-mode BatchNorm in ``onednn_bn`` (re-exported), the extension's loading in
``onednn_library``.

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

``conv`` is ``Conv()``: its one option, ``weights_any`` (default True), is a field fixed when the
object is made (``make_conv(weights_any=False)``), never a switch read while tracing. True lets
oneDNN pick its blocked weights layout and reorders the (small) weights each call; False hands
it JAX's HWIO buffer, where oneDNN 3.2 has only its gemm-based backward passes, 1.5-40x slower
per layer (``experiments/bench_onednn.py``).

Limits: first-order reverse mode only (``jax.jvp`` / second derivatives of this conv are not
supported: custom_vjp). Under ``vmap`` the FFI calls loop over the mapped axis
(``vmap_method="sequential"``) - correct, not fast. ``CNNLAB_ONEDNN=0`` switches it off.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnlab.models.onednn_bn import BatchNormTrain, batch_norm_train, xla_batch_norm_train
from cnnlab.models.onednn_library import available, library, max_threads, primitives_created
from cnnlab.models.onednn_library import status

__all__ = ["BatchNormTrain", "Conv", "available", "batch_norm_train", "conv", "dtype_supported",
           "make_conv", "primitives_created", "status", "supports", "unavailable_reason",
           "xla_batch_norm_train", "xla_conv"]

_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def unavailable_reason() -> str:
  """One line saying why ``available()`` is False ("" when it is True)."""
  ok, reason = status()
  return "" if ok else reason


@functools.cache
def dtype_supported(dtype) -> bool:
  """Whether this CPU's oneDNN convolves ``dtype`` (float32 always; bfloat16 needs AVX-512 in
  oneDNN 3.2). Where it cannot, bfloat16 convolutions use XLA's, said once on stderr."""
  dtype = jnp.dtype(dtype)
  lib = library()
  if lib is None or dtype not in _DTYPES:
    return False
  if dtype == jnp.dtype(jnp.bfloat16) and not lib.cnnlab_onednn_supports_bf16():
    print("cnnlab: this CPU's oneDNN has no bfloat16 convolutions (oneDNN 3.2 needs AVX-512); "
          "bfloat16 convolutions use XLA's", file=sys.stderr, flush=True)
    return False
  return True


def xla_conv(x, w, *, strides, padding, dilation, groups):
  """The reference formulation: XLA's convolution with the same channels-last contract."""
  spec = {3: ("NWC", "WIO", "NWC"), 4: ("NHWC", "HWIO", "NHWC"),
          5: ("NDHWC", "DHWIO", "NDHWC")}[x.ndim]
  return lax.conv_general_dilated(x, w, tuple(strides), tuple(padding),
                                  rhs_dilation=tuple(dilation), feature_group_count=groups,
                                  dimension_numbers=spec)


def _attrs(strides, padding, dilation, groups, weights_any) -> dict:
  return dict(strides=np.asarray(strides, np.int64),
              pad_lo=np.asarray([p[0] for p in padding], np.int64),
              pad_hi=np.asarray([p[1] for p in padding], np.int64),
              dilation=np.asarray(dilation, np.int64), groups=np.int64(groups),
              max_threads=np.int64(max_threads()), weights_any=bool(weights_any))


def _ffi(name: str, a, b, out_shape, params):
  call = jax.ffi.ffi_call(f"cnnlab_onednn_conv_{name}", jax.ShapeDtypeStruct(out_shape, a.dtype),
                          vmap_method="sequential")
  return call(a, b, **_attrs(*params))


def _forward(x, w, params):
  strides, padding, dilation, groups, _ = params
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
  strides, padding, dilation, groups, _ = params

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


@dataclasses.dataclass(frozen=True)
class Conv:
  """Channels-last convolution: oneDNN on CPU where supported, XLA's otherwise (module
  docstring). Equal options compare equal, so kernel sets built twice are the same."""
  weights_any: bool = True

  def __call__(self, x, w, *, strides: Sequence[int], padding: Sequence[tuple[int, int]],
               dilation: Sequence[int], groups: int = 1):
    params = (tuple(int(s) for s in strides),
              tuple((int(lo), int(hi)) for lo, hi in padding),
              tuple(int(d) for d in dilation), int(groups), bool(self.weights_any))
    xla = functools.partial(xla_conv, strides=params[0], padding=params[1],
                            dilation=params[2], groups=params[3])
    if not supports(x, w, padding=params[1], groups=params[3]) or 0 in jax.eval_shape(
        xla, x, w).shape:
      return xla(x, w)
    if x.ndim == 3:  # 1-D as 2-D with a unit height: oneDNN 3.2's 2-D kernels are faster
      strides, padding, dilation, groups, any_ = params
      y = _conv(x[:, None], w[None], ((1,) + strides, ((0, 0),) + padding, (1,) + dilation,
                                      groups, any_))
      return y[:, 0]
    return _conv(x, w, params)


def make_conv(*, weights_any: bool = True) -> Conv:
  """A oneDNN convolution with its options fixed (see the module docstring)."""
  return Conv(weights_any=weights_any)


conv = Conv()
