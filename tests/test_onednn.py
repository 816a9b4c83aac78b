"""oneDNN FFI convolution == XLA's convolution in value and gradient, for every shape class
the model zoo uses; fallbacks, primitive caching, vmap, a train step and bit-identical resume."""

import dataclasses
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from conftest import cifar_resnet_trainer, xla_flags

from cnnlab.models import kernels, onednn, onednn_build, onednn_library

if not onednn.available():
  pytest.skip(f"oneDNN extension unavailable: {onednn.unavailable_reason()}",
              allow_module_level=True)

# (x shape, kernel, Cout, strides, padding, dilation, groups) - the zoo's conv classes.
CASES = {
    "3x3 same (resnet)": ((2, 9, 9, 8), (3, 3), 8, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "7x7/2 stem": ((2, 15, 15, 3), (7, 7), 8, (2, 2), ((3, 3), (3, 3)), (1, 1), 1),
    "1x1/2 downsample": ((2, 9, 9, 8), (1, 1), 16, (2, 2), ((0, 0), (0, 0)), (1, 1), 1),
    "5x5 valid odd (lenet)": ((3, 13, 11, 1), (5, 5), 6, (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "11x11/4 (alexnet)": ((2, 35, 35, 3), (11, 11), 8, (4, 4), ((2, 2), (2, 2)), (1, 1), 1),
    "5x5 groups=2 (alexnet-2012)": ((2, 9, 9, 8), (5, 5), 12, (1, 1), ((2, 2), (2, 2)),
                                    (1, 1), 2),
    "3x3 dilation 2, asymmetric pad": ((2, 12, 10, 4), (3, 3), 6, (1, 2), ((2, 1), (0, 3)),
                                       (2, 2), 1),
    "1-D k3 (resnet1d)": ((2, 17, 4), (3,), 8, (1,), ((1, 1),), (1,), 1),
    "1-D k8/2 (fcn)": ((2, 33, 3), (8,), 5, (2,), ((3, 4),), (1,), 1),
    "3-D 3x3x3 (r3d)": ((2, 5, 7, 6, 3), (3, 3, 3), 4, (1, 2, 2), ((1, 1),) * 3, (1, 1, 1), 1),
    "3-D 1x3x3 + 3x1x1 (r2plus1d)": ((1, 4, 6, 6, 4), (3, 1, 1), 4, (2, 1, 1),
                                     ((1, 1), (0, 0), (0, 0)), (1, 1, 1), 1),
}


def _operands(case, dtype=jnp.float32):
  """x, w and a cotangent dy for the output (numpy RNG: nothing extra to compile)."""
  shape, kernel, cout, *_, groups = case
  rng = np.random.default_rng(len(shape) + cout)
  x = jnp.asarray(rng.standard_normal(shape), dtype)
  w = jnp.asarray(rng.standard_normal((*kernel, shape[-1] // groups, cout)) * 0.3, dtype)
  y = jax.eval_shape(functools.partial(onednn.xla_conv, **_kwargs(case)), x, w)
  return x, w, jnp.asarray(rng.standard_normal(y.shape), dtype)


def _kwargs(case):
  _, _, _, strides, padding, dilation, groups = case
  return dict(strides=strides, padding=padding, dilation=dilation, groups=groups)


def _value_and_grads(conv, kw):
  """(x, w, dy) -> (y, (dx, dw)): the output and the vjp of dy."""
  def f(x, w, dy):
    def loss(x, w):
      y = conv(x, w, **kw)
      return jnp.sum((y * dy).astype(jnp.float32)), y
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, w)
    return y, grads
  return f


def _both(case, dtype):
  """oneDNN's and XLA's (y, dx, dw), computed in one compiled function."""
  x, w, ky = _operands(case, dtype)
  kw = _kwargs(case)
  assert onednn.supports(x, w, padding=kw["padding"], groups=kw["groups"])
  both = jax.jit(lambda *a: (_value_and_grads(onednn.conv, kw)(*a),
                             _value_and_grads(onednn.xla_conv, kw)(*a)))
  (y, (dx, dw)), (y_ref, (dx_ref, dw_ref)) = both(x, w, ky)
  return ((y, y_ref), (dx, dx_ref), (dw, dw_ref))


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_match_xla(name):
  for got, want in _both(CASES[name], jnp.float32):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def _cpu_flags() -> set:
  try:
    with open("/proc/cpuinfo") as f:
      return next((set(l.split(":", 1)[1].split()) for l in f if l.startswith("flags")), set())
  except OSError:
    return set()


@pytest.mark.skipif(not _cpu_flags(), reason="no x86 /proc/cpuinfo flags to compare with")
def test_bfloat16_support_follows_the_cpu_and_falls_back_to_xla(capfd):
  """oneDNN 3.2 convolves bfloat16 from AVX-512 (avx512_core) up; below that the bf16 conv
  must be XLA's (no FFI call in the program) with the same values, never a runtime error."""
  has_avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _cpu_flags()
  onednn.dtype_supported.cache_clear()
  capfd.readouterr()
  assert onednn.dtype_supported(jnp.float32)
  assert onednn.dtype_supported(jnp.bfloat16) == has_avx512_core
  assert ("no bfloat16 convolutions" in capfd.readouterr().err) == (not has_avx512_core)
  case = CASES["3x3 same (resnet)"]
  x, w, _ = _operands(case, jnp.bfloat16)
  f = jax.jit(functools.partial(onednn.conv, **_kwargs(case)))
  assert ("cnnlab_onednn_conv_fwd" in f.lower(x, w).as_text()) == has_avx512_core
  want = onednn.xla_conv(x, w, **_kwargs(case)).astype(jnp.float32)
  np.testing.assert_allclose(f(x, w).astype(jnp.float32), want,
                             atol=3e-2 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("name", ["3x3 same (resnet)", "5x5 groups=2 (alexnet-2012)"])
@pytest.mark.skipif(not onednn.dtype_supported(jnp.bfloat16),
                    reason="this CPU's oneDNN has no bfloat16 convolutions (needs AVX-512)")
def test_bfloat16_matches_xla(name):
  for got, want in _both(CASES[name], jnp.bfloat16):
    assert got.dtype == jnp.bfloat16
    scale = float(jnp.abs(want.astype(jnp.float32)).max())
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                               atol=3e-2 * scale)


@pytest.mark.parametrize("name", ["7x7/2 stem", "5x5 groups=2 (alexnet-2012)",
                                  "3-D 3x3x3 (r3d)"])
def test_check_grads_numerically(name):
  case = CASES[name]
  x, w, _ = _operands(case)
  conv = functools.partial(onednn.conv, **_kwargs(case))
  # The conv is bilinear, so central differences are exact up to rounding: a large step.
  check_grads(conv, (x, w), order=1, modes=("rev",), eps=1.0, atol=1e-2, rtol=1e-2)


def test_primitives_are_cached_by_shape():
  case = CASES["3x3 same (resnet)"]
  x, w, ky = _operands(case)
  f = jax.jit(_value_and_grads(onednn.conv, _kwargs(case)))
  jax.block_until_ready(f(x, w, ky))
  before = onednn.primitives_created()
  for _ in range(3):
    jax.block_until_ready(f(x + 1.0, w, ky))
  assert onednn.primitives_created() == before
  jax.block_until_ready(f(x[:1], w, ky[:1]))  # a new shape: 3 new passes
  assert onednn.primitives_created() == before + 3


@pytest.mark.parametrize("dtype,padding", [(jnp.float16, ((1, 1), (1, 1))),
                                           (jnp.float32, ((-1, 1), (1, 1)))])
def test_unsupported_operands_fall_back_to_xla(dtype, padding):
  x = jnp.ones((1, 6, 6, 2), dtype)
  w = jnp.full((3, 3, 2, 4), 0.5, dtype)
  kw = dict(strides=(1, 1), padding=padding, dilation=(1, 1), groups=1)
  assert not onednn.supports(x, w, padding=padding, groups=1)
  before = onednn.primitives_created()
  got = jax.jit(jax.grad(lambda w: onednn.conv(x, w, **kw).astype(jnp.float32).sum()))(w)
  want = jax.jit(jax.grad(lambda w: onednn.xla_conv(x, w, **kw).astype(jnp.float32).sum()))(w)
  np.testing.assert_array_equal(got, want)
  assert onednn.primitives_created() == before


def test_vmap_matches_xla():
  case = CASES["3x3 same (resnet)"]
  x, w, _ = _operands(case)
  xs = jnp.stack([x, 2.0 * x])  # a mapped leading axis over the whole conv
  for conv in (onednn.conv, onednn.xla_conv):
    f = jax.vmap(lambda x: jax.grad(lambda w: jnp.sum(conv(x, w, **_kwargs(case)) ** 2))(w))
    if conv is onednn.conv:
      got = jax.jit(f)(xs)
    else:
      want = jax.jit(f)(xs)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_build_errors_are_one_line(monkeypatch, tmp_path):
  monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  with pytest.raises(onednn_build.BuildError, match="no C.. compiler") as err:
    onednn_build.build()
  assert "\n" not in str(err.value)
  monkeypatch.setenv("CNNLAB_ONEDNN", "0")
  assert onednn_library._load.__wrapped__() == (None, "switched off by CNNLAB_ONEDNN=0")


def _trainer(conv):
  """The CIFAR ResNet trainer (conftest) with the CPU kernels and the given conv."""
  return cifar_resnet_trainer(dataclasses.replace(kernels.CPU, conv=conv))


def test_train_step_matches_xla():
  results = []
  for conv in (onednn.conv, onednn.xla_conv):
    step, state, batches = _trainer(conv)
    for batch in batches[:3]:
      state = step(state, batch)
    results.append(state)
  for got, want in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resume_is_bit_identical():
  step, state, batches = _trainer(onednn.conv)
  straight = state
  for batch in batches:
    straight = step(straight, batch)
  resumed = state
  for batch in batches[:2]:
    resumed = step(resumed, batch)
  resumed = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), resumed)  # "checkpoint"
  step_again, _, _ = _trainer(onednn.conv)  # a freshly traced and compiled step
  for batch in batches[2:]:
    resumed = step_again(resumed, batch)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


_DATA_PARALLEL = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from cnnlab.models import onednn
kw = dict(strides=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
mesh = Mesh(np.array(jax.devices()), ("data",))
rng = np.random.default_rng(0)
x = jax.device_put(rng.standard_normal((4, 9, 9, 4), np.float32), NamedSharding(mesh, P("data")))
w = jax.device_put(rng.standard_normal((3, 3, 4, 8), np.float32), NamedSharding(mesh, P()))
grads = lambda c: jax.jit(jax.grad(lambda x, w: (c(x, w, **kw) ** 2).sum(), (0, 1)))(x, w)
for got, want in zip(grads(onednn.conv), grads(onednn.xla_conv)):
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(abs(want).max()))
assert onednn.primitives_created() == 6, onednn.primitives_created()  # 3 passes x 2 devices
print("ok")
"""


def test_data_parallel_devices_match_xla():
  env = dict(os.environ, XLA_FLAGS=xla_flags(2))
  done = subprocess.run([sys.executable, "-c", _DATA_PARALLEL], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_config_selects_the_extension_by_name():
  """``--config.model.kernels=cpu+onednn`` passes the config checks and builds the model with
  the oneDNN conv (the names accepted are kernels.NAMES), equal to the plain model; a wrong
  name is refused with the allowed ones listed."""
  from cnnlab import config as config_lib
  from cnnlab.config import checks as config_checks
  from cnnlab.training import builders
  from experiments.configs import fcn1d_ucr
  c = fcn1d_ucr.get_config()
  c.model.kernels = "cpu+onednn"
  config_checks.check_keys(c, device_count=1, process_count=1)
  spec = config_lib.ModelSpec(name="fcn1d", kwargs={}, dtype="float32", num_classes=2,
                              input_shape=(150, 1), kernels="cpu+onednn")
  model = builders.model(spec)
  assert model.kernels.name == "cpu+onednn"
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 150, 1)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x)
  plain = builders.model(dataclasses.replace(spec, kernels="plain"))
  np.testing.assert_allclose(model.apply(variables, x), plain.apply(variables, x),
                             rtol=1e-4, atol=1e-4)
  c.model.kernels = "onednn"
  with pytest.raises(config_checks.ConfigError, match="'onednn'.*cpu\\+onednn"):
    config_checks.check_keys(c, device_count=1, process_count=1)


def test_entry_points_leave_the_environment_alone():
  """The wait policy moved from the entry points (which set OMP_WAIT_POLICY for the whole
  process and its children) into the library (test_library_makes_openmp_wait_passively_...):
  importing an entry point now sets no OpenMP variable at all."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("import os, experiments.cli as c; c.set_process_env(); "
          "print([k for k in os.environ if k.startswith(('OMP_', 'GOMP_'))])")
  out = subprocess.run([sys.executable, "-c", code],
                       cwd=root, env=env, capture_output=True, text=True, check=True).stdout
  assert out.strip() == "[]"


def test_conv_options_are_fields_not_switches():
  """``weights_any`` is fixed when the conv object is made and reaches the FFI call; equal
  options compare equal; both layouts give XLA's values."""
  assert onednn.conv == onednn.make_conv() == onednn.Conv(weights_any=True)
  assert onednn.make_conv(weights_any=False) != onednn.conv
  assert not hasattr(onednn, "WEIGHTS_ANY")
  case = CASES["3x3 same (resnet)"]
  x, w, _ = _operands(case)
  want = onednn.xla_conv(x, w, **_kwargs(case))
  for any_ in (True, False):
    f = jax.jit(functools.partial(onednn.make_conv(weights_any=any_), **_kwargs(case)))
    assert f"weights_any = {str(any_).lower()}" in f.lower(x, w).as_text()
    np.testing.assert_allclose(f(x, w), want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


_SHOW_OPENMP = """
import ctypes, os, subprocess
from cnnlab.models import onednn
ok, reason = onednn.status()
print("status", ok, reason, flush=True)
ctypes.CDLL("libgomp.so.1").omp_display_env(1)  # libgomp's own account of its settings
child = subprocess.run(["sh", "-c", "echo child=$OMP_WAIT_POLICY"], capture_output=True,
                       text=True).stdout
print(child.strip(), "python=" + str(os.environ.get("OMP_WAIT_POLICY")), flush=True)
"""


def _openmp_settings(tmp_path, **exported) -> tuple[str, str]:
  """(stdout, libgomp's display) of a fresh process, started from an unrelated folder, that
  imports cnnlab with only ``exported`` among the OpenMP variables."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
  env.update(exported)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  done = subprocess.run([sys.executable, "-c", _SHOW_OPENMP], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300, check=True)
  return done.stdout, done.stderr


def test_library_makes_openmp_wait_passively_without_any_export(tmp_path):
  """No entry point, no exported variable: loading the extension gives libgomp a passive
  waiting policy (spin count 0, as libgomp itself reports), and neither os.environ nor a child
  process sees the variable that was set for the load."""
  out, display = _openmp_settings(tmp_path)
  assert "status True oneDNN extension loaded; OpenMP waits passively" in out
  assert "OMP_WAIT_POLICY = 'PASSIVE'" in display and "GOMP_SPINCOUNT = '0'" in display
  assert "child= python=None" in out


def test_an_exported_openmp_policy_wins(tmp_path):
  out, display = _openmp_settings(tmp_path, GOMP_SPINCOUNT="12345")
  assert "as exported by the user" in out
  assert "GOMP_SPINCOUNT = '12345'" in display


def test_status_is_one_line_and_prints_nothing(capfd, monkeypatch):
  ok, reason = onednn.status()
  assert ok and "\n" not in reason and reason
  monkeypatch.setenv("CNNLAB_ONEDNN", "0")
  assert onednn_library._load.__wrapped__() == (None, "switched off by CNNLAB_ONEDNN=0")
  captured = capfd.readouterr()
  assert captured.out == "" and captured.err == ""
