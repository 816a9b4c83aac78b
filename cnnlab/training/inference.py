"""Inference on a trained run: ONE batched function that evaluate, predict and visualize use.

    probs = inference.probabilities(trained, x)          # float32 [N, (*spatial,) K]

Inputs are prepared as evaluation prepares them (``trained.feed.eval_inputs`` for a user's
files); they are run in eval mode in fixed-size batches under one jitted function (the last
batch padded, so a single program is compiled), on the host's first device.
"""
from __future__ import annotations

import jax
import numpy as np

from cnnlab.training.steps import split_outputs

DEFAULT_BATCH = 64


def _apply(model):
  @jax.jit
  def logits(variables, x):
    return split_outputs(model.apply(variables, x, train=False))[0].astype("float32")
  return logits


def logits(trained, x, *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
  """The model's eval-mode logits for every row of ``x``, in batches of ``batch_size``."""
  x = np.asarray(x, np.float32)
  fn = _apply(trained.model)
  out = []
  for i in range(0, len(x), batch_size):
    part = x[i:i + batch_size]
    pad = batch_size - len(part) if len(x) > batch_size else 0
    if pad:
      part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
    got = np.asarray(fn(trained.variables, part))
    out.append(got[:len(got) - pad] if pad else got)
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def probabilities(trained, x, *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
  """Softmax over the class axis of ``logits``."""
  z = logits(trained, x, batch_size=batch_size)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)
