"""Train-mode parity with torchvision in float64: loss, every parameter gradient and the
updated BatchNorm running statistics after one step's forward/backward on the same weights
and batch (fixtures from tests/make_torchvision_train_fixtures.py; see its docstring for what
is stored). float64 on both sides leaves only summation-order rounding, so the tolerances are
~1e-9 relative: a float32 intermediate anywhere (a BatchNorm statistic, a gradient) or the
biased variance in a running average fails them by orders of magnitude.

Gradients are compared in torchvision's layout: cnnlab's gradient tree goes through
``interop.torchvision.export`` like the weights would.
"""
from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import models
from cnnlab.interop import torchvision as tv
import make_torchvision_fixtures as fx
import make_torchvision_train_fixtures as tfx

FIXTURES = sorted(glob.glob(os.path.join(tfx.TRAIN_DIR, "*.npz")))
RTOL = 1e-9          # loss, gradient sums / norms, running statistics (relative)
ENTRY_RTOL = 1e-8    # sampled gradient entries, relative to the tensor's RMS
ATOL = 1e-13         # x the model's largest gradient norm: see _gradient_errors


def _dropout_off(name: str) -> dict:
  if name == "googlenet":
    return {"aux_logits": True, "dropout_rate": 0.0, "aux_dropout_rate": 0.0}
  if name == "alexnet" or name.startswith("vgg"):
    return {"dropout_rate": 0.0}
  return {}


def _cnnlab_step(f):
  """(loss, torchvision-keyed dict of gradients and updated running stats), cnnlab float64."""
  name = f["model"]
  weights = fx.synthetic_state_dict(int(f["weight_seed"]), f["keys"], f["shapes"])
  assert fx.checksum(weights) == pytest.approx(float(f["checksum"]), rel=1e-12)
  variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tv.convert(weights))
  model = models.create(name, dtype=jnp.float64, **_dropout_off(name))
  x = np.moveaxis(fx.synthetic_inputs(int(f["input_seed"]), tuple(f["input_shape"])), 1, -1)
  x = jnp.asarray(x, jnp.float64)
  num_classes = variables["params"]["fc" if "fc" in variables["params"] else "classifier_6"][
      "kernel"].shape[-1]
  y = jnp.asarray(tfx.labels(num_classes, x.shape[0]))
  stats = variables.get("batch_stats", {})

  def loss_fn(params):
    out, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                           mutable=["batch_stats"])
    ce = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    if name == "googlenet":
      loss = ce(out.logits) + tfx.AUX_WEIGHT * (ce(out.aux_logits1) + ce(out.aux_logits2))
    else:
      loss = ce(out)
    return loss, new.get("batch_stats", {})

  (loss, new_stats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"])
  tree = {"params": grads}
  if new_stats:
    tree["batch_stats"] = new_stats
  return float(loss), tv.export(tree, name)


def _gradient_errors(f, got) -> tuple[list[str], float]:
  """Mismatches beyond tolerance, and the worst error as a fraction of its tolerance.

  Tolerance per quantity: RTOL x its scale (sum |g| for the sum and |g|-sum, the norm, the RMS
  for entries; ENTRY_RTOL for entries) + ATOL x the largest gradient norm of the model. The
  absolute part is for gradients that are exactly zero in exact arithmetic and rounding noise
  (~1e-16) in both frameworks: a conv bias feeding a train-mode BatchNorm (VGG-BN).
  """
  bad, worst = [], 0.0
  atol = ATOL * float(np.max(f["grad_norm"]))
  for i, key in enumerate(f["grad_keys"]):
    s, a, n, samples = tfx.digest(key, got[key])
    rms = float(f["grad_norm"][i]) / np.sqrt(got[key].size)
    checks = {"sum": (s - f["grad_sum"][i], RTOL * f["grad_abs"][i]),
              "abs": (a - f["grad_abs"][i], RTOL * f["grad_abs"][i]),
              "norm": (n - f["grad_norm"][i], RTOL * f["grad_norm"][i]),
              "entries": (np.abs(samples - f["grad_samples"][i]).max(), ENTRY_RTOL * rms)}
    for what, (diff, tol) in checks.items():
      ratio = abs(float(diff)) / (float(tol) + atol)
      worst = max(worst, ratio)
      if ratio > 1:
        bad.append(f"{key} {what}: |diff| {abs(float(diff)):.1e} > tolerance {tol + atol:.1e}")
  return bad, worst


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: os.path.basename(p)[:-4])
def test_train_step_matches_torchvision_float64(path):
  f = tfx.load_train_fixture(path)
  with jax.enable_x64(True):
    loss, got = _cnnlab_step(f)
  problems = []
  loss_err = abs(loss - float(f["loss"])) / abs(float(f["loss"]))
  if loss_err > RTOL:
    problems.append(f"loss {loss!r} vs torch {float(f['loss'])!r}")
  params = [k for k in got if not k.endswith(("running_mean", "running_var",
                                               "num_batches_tracked"))]
  if sorted(params) != sorted(f["grad_keys"]):
    problems.append(f"parameters differ from torch's: {sorted(set(params) ^ set(f['grad_keys']))}")
  bad, worst = _gradient_errors(f, got)
  if bad:
    problems.append(f"{len(bad)} gradient mismatches, e.g. {bad[:3]}")
  stat_err = 0.0
  if f["stat_keys"]:   # torch's running_var takes the unbiased batch variance
    mine = np.concatenate([np.asarray(got[k], np.float64).reshape(-1) for k in f["stat_keys"]])
    stat_err = float((np.abs(mine - f["stats"]) / np.abs(f["stats"]).max()).max())
    if stat_err > RTOL:
      problems.append(f"updated running statistics: max relative error {stat_err:.1e}")
  print(f"{os.path.basename(path)}: loss rel err {loss_err:.1e}; worst gradient error "
        f"{worst:.1e} x its tolerance ({len(f['grad_keys'])} tensors); running stats rel err "
        f"{stat_err:.1e}")
  assert not problems, "; ".join(problems)
