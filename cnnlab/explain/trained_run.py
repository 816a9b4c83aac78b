"""A trained workdir as the explainers use it: the model, its evaluation variables, the
class names, the input shape and the dataset's catalogue entry with its resolved options
(for preparing users' files), plus the evaluation examples.

    run = load("runs/lenet5_mnist", checkpoint="auto")   # best if one is recorded, else latest
    x, labels = eval_examples(run, limit=1000)

A workdir that was never trained (no config.json, no checkpoint) raises the training
package's ConfigError with one line saying so.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  workdir: str
  config: Any                 # the run's completed config (ml_collections.ConfigDict)
  model: Any
  variables: dict             # host arrays: params (+ batch_stats), EMA when the run used it
  step: int
  input_shape: tuple          # one example: (H, W, C), (L, C), (D, H, W, C)
  class_names: tuple | None
  dataset: Any                # cnnlab.data.datasets.DatasetInfo
  options: dict               # the dataset options, resolved
  eval_split: str
  data: Any = None            # the run's DataSpec (what the input pipeline takes)
  eval_batch: int = 100

  @property
  def name(self) -> str:
    return str(self.config.model.name)

  def class_name(self, c: int) -> str:
    names = self.class_names
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def workdir_config(workdir: str):
  import ml_collections
  from cnnlab.training import ConfigError
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"--workdir={workdir!r} holds no config.json: it was never trained "
                      "(train it with python -m experiments.train)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def eval_split_of(config) -> str:
  """The split a run evaluates on: its config's, else the dataset's."""
  from cnnlab.data import datasets
  return config.dataset.get("eval_split") or datasets.get(config.dataset.name).eval_split


def _load_trained(workdir: str, checkpoint: str):
  from cnnlab.training import ConfigError, load_trained
  if checkpoint != "auto":
    return load_trained(workdir, checkpoint)
  try:
    return load_trained(workdir, "best")
  except ConfigError:
    return load_trained(workdir, "latest")


def load(workdir: str, checkpoint: str = "auto") -> TrainedRun:
  """The run in ``workdir`` at ``checkpoint``: 'auto' (best, else latest), 'best', 'latest'
  or a saved step number (through ``cnnlab.training.load_trained``)."""
  import jax
  from cnnlab.data import datasets
  from cnnlab.explain import figures
  workdir_config(workdir)     # the never-trained message first
  t = _load_trained(workdir, checkpoint)
  spec = t.spec
  info = datasets.describe(spec.data.name, spec.data.options.get("data_dir"))
  names = t.class_names or info.class_names or figures.CLASS_NAMES.get(info.name)
  return TrainedRun(workdir=workdir, config=spec.to_config(), model=t.model,
                    variables=jax.device_get(t.variables), step=int(t.step),
                    input_shape=tuple(spec.model.input_shape),
                    class_names=tuple(names) if names else None, dataset=info,
                    options=dict(spec.data.options), eval_split=spec.data.eval_split,
                    data=spec.data, eval_batch=int(spec.loop.eval_batch))


def eval_examples(run: TrainedRun, split: str | None = None, *, start: int = 0,
                  limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, labels) of examples ``start`` .. ``start + limit`` of ``split`` (default the
  run's eval split) as the model sees them; ValueError if ``start`` is past the end."""
  from cnnlab.data import pipeline
  split = split or run.eval_split
  xs, ys, seen = [], [], 0
  end = None if limit is None else start + limit
  for batch in pipeline.eval_batches(run.data, split=split, global_batch_size=run.eval_batch):
    n = int(batch["mask"].sum())
    lo, hi = max(start - seen, 0), n if end is None else min(n, end - seen)
    if hi > lo:
      xs.append(np.asarray(batch["image"][lo:hi]))
      ys.append(np.asarray(batch["label"][lo:hi]))
    seen += n
    if end is not None and seen >= end:
      break
  if not xs:
    raise ValueError(f"example {start} is out of range: split {split!r} has {seen} examples")
  return np.concatenate(xs), np.concatenate(ys)
