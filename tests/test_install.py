"""A plain (non-editable) ``pip install .`` carries everything the library needs: imported from
another folder, it builds the oneDNN extension from the sources shipped as package data and
runs a convolution and a BatchNorm equal to XLA's."""

import os
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_USE = """
import pathlib, sys
import jax, jax.numpy as jnp, numpy as np
import cnnlab
from cnnlab.models import kernels, onednn
assert pathlib.Path(cnnlab.__file__).is_relative_to(sys.prefix), cnnlab.__file__
ok, reason = onednn.status()
assert ok, reason
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((2, 9, 9, 4)), jnp.float32)
w = jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)
kw = dict(strides=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
f = jax.jit(lambda x, w: onednn.conv(x, w, **kw))
assert "cnnlab_onednn_conv_fwd" in f.lower(x, w).as_text()
np.testing.assert_allclose(f(x, w), onednn.xla_conv(x, w, **kw), rtol=1e-4, atol=1e-4)
s, b = jnp.ones(4), jnp.zeros(4)
y = onednn.batch_norm_train(x, s, b, None, 1e-5, True, jnp.float32)[0]
np.testing.assert_allclose(y, kernels.plain_batch_norm_train(x, s, b, None, 1e-5, True,
                                                             jnp.float32)[0], atol=1e-5)
print("installed cnnlab works:", cnnlab.__file__)
"""


def _copy_tree(dst) -> None:
  """The project's files as a clone has them (no caches, runs or build outputs)."""
  shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
      ".git", "__pycache__", "*.egg-info", "build", "runs", "workdirs", ".pytest_cache",
      ".benchmarks", ".venv", "tmp"))


@pytest.mark.slow
def test_non_editable_install_builds_and_runs_the_extension(tmp_path):
  src, env_dir, elsewhere = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
  _copy_tree(src)
  # The venv reuses this interpreter's jax etc.; cnnlab itself must come from the install.
  venv.create(env_dir, system_site_packages=True, with_pip=True)
  python = str(env_dir / "bin" / "python")
  subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                  str(src)], check=True, timeout=600, capture_output=True)
  shutil.rmtree(src)  # nothing may point back into the source tree
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CNNLAB_ONEDNN")}
  env["CNNLAB_CACHE_DIR"] = str(tmp_path / "cache")  # a fresh build from the shipped sources
  done = subprocess.run([python, "-c", _USE], cwd=elsewhere, env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "installed cnnlab works: " + str(env_dir) in done.stdout
  assert "building the oneDNN extension once" in done.stderr
