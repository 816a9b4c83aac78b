"""Evaluating torchvision's own weights with cnnlab's pipeline and metrics:

    t = evaluation.torchvision_run(config, "resnet50.pth")
    metrics = t.parts.evaluate(t.state)

The model is built as torchvision builds it for published weights (e.g. GoogLeNet's
``transform_input``) unless the config's ``model.kwargs`` says otherwise; the converted weights
go into a fresh state on the current devices. The result is a ``cnnlab.training.Trained``
(step 0), so everything that takes a trained run takes it.
"""
from __future__ import annotations

import jax

from cnnlab import config as config_lib
from cnnlab.interop import torchvision as tv
from cnnlab.training.parts import build_parts
from cnnlab.training.state import eval_variables
from cnnlab.training.trained import Trained, resolve_run


def torchvision_run(config, path: str, *, confusion: bool = True) -> Trained:
  config = config_lib.complete(config)
  config.model.kwargs = {**tv.model_kwargs(config.model.name), **dict(config.model.kwargs)}
  spec = resolve_run(config)
  parts = build_parts(spec, confusion=confusion)
  variables = tv.load(path, spec.model.name)
  state = parts.init().replace(params=variables["params"],
                               batch_stats=variables.get("batch_stats", {}))
  state = jax.device_put(state, parts.shardings.sharding)
  return Trained(workdir=str(path), spec=spec, parts=parts, state=state,
                 variables=eval_variables(state), step=0)
