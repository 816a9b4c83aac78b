"""Where a fine-tuned run's starting weights come from (``config.init_from``), and what is done
with its classifier.

    source = sources.read(spec)                     # before anything is compiled
    state, report = sources.initialise(spec, parts, state, source)

``init_from`` is a torchvision ``.pth`` / ``.pt`` / ``.safetensors`` file (converted for the
torchvision model of the same layout, or the one its keys name) or a cnnlab workdir
(``DIR``, ``DIR:best``, ``DIR:latest``, ``DIR:STEP``; restored and verified like every
checkpoint, through the one loader of trained runs).

The head rule: a new dataset's class k is not the source's class k, so the classifier is
re-initialised whenever the source was trained on another dataset (or the same dataset with
other class names) — even when the class counts match — unless ``keep_head=True``. A
torchvision file's source dataset is ImageNet. Classifier arrays of the source that the target
does not have at all (a classifier's ``fc`` under a U-Net encoder) are dropped and reported;
when the source is another architecture (a classifier for a U-Net's encoder) the target's
modules the source has nothing of (the decoder) start fresh and are reported as new.
What was decided is printed and written to ``<workdir>/transfer.json``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from cnnlab import models
from cnnlab.interop import torchvision as tv
from cnnlab.training import trained, transfer
from cnnlab.training.transfer import TransferError

TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")
TORCHVISION_DATASET = ("imagenet2012", None)   # what torchvision's published weights saw


@dataclasses.dataclass(frozen=True)
class Source:
  name: str                          # init_from as given
  variables: dict                    # host arrays, cnnlab layout
  head: frozenset                    # the source's own classifier paths
  dataset: tuple                     # (dataset name, class names or None) it was trained on
  checked: tuple = ()                # (target head paths, target first-layer paths)
  model: str = ""                    # the source's model (a registry / torchvision name)


def parse(init_from: str) -> tuple[str, str]:
  """'FILE' | 'WORKDIR' | 'WORKDIR:best' | 'WORKDIR:latest' | 'WORKDIR:STEP' -> (path, which)."""
  path, which = init_from, "latest"
  head, sep, tail = init_from.rpartition(":")
  if sep and head and (tail in ("best", "latest") or tail.isdigit()):
    path, which = head, tail
  if path.endswith(TORCH_SUFFIXES):
    if not os.path.isfile(path):
      raise TransferError(f"init_from={init_from!r}: no such file")
    return path, "file"
  if not os.path.isdir(path):
    raise TransferError(f"init_from={init_from!r} is neither a {'/'.join(TORCH_SUFFIXES)} file "
                        "nor a cnnlab workdir (optionally :best, :latest or :STEP)")
  return path, which


def _from_file(init_from: str, path: str, model_name: str) -> Source:
  layout = models.info(model_name).torchvision
  try:
    state_dict = tv.read_state_dict(path)
    name = layout or tv.infer_model_name(state_dict)
    module, variables = tv.build(state_dict, name)
  except ValueError as e:
    raise TransferError(f"init_from={init_from!r} ({model_name}): "
                        + str(e).splitlines()[0]) from None
  head = transfer.head_paths(module, models.info(name).input_shape)
  return Source(init_from, dict(variables), head, TORCHVISION_DATASET, model=name)


def _from_workdir(init_from: str, path: str, which: str) -> Source:
  run = trained.load_trained(path, int(which) if which.isdigit() else which)
  variables = jax.tree.map(_host, dict(run.variables))
  head = transfer.head_paths(run.model, run.spec.model.input_shape)
  return Source(init_from, variables, head, (run.spec.data.name, run.facts.class_names),
                model=run.spec.model.name)


def _host(x) -> np.ndarray:
  """This process's copy of a replicated array (works on multi-process meshes too)."""
  return np.asarray(x.addressable_data(0)) if hasattr(x, "addressable_data") else np.asarray(x)


def _variables(params, stats) -> dict:
  out = {"params": params}
  if stats:
    out["batch_stats"] = stats
  return out


def fresh_head(spec, source: Source) -> tuple[bool, str]:
  """(re-initialise the classifier?, the sentence saying what and why) — the head rule."""
  mine = (spec.data.name, spec.data.facts.class_names)
  theirs = source.dataset
  same = theirs[0] == mine[0] and (theirs[1] is None or mine[1] is None
                                   or tuple(theirs[1]) == tuple(mine[1]))
  where = f"source trained on {theirs[0]}, this run on {mine[0]}"
  if same:
    return False, f"kept ({where}: same classes)"
  if spec.transfer.keep_head:
    return False, f"kept as asked (keep_head=True; {where})"
  return True, f"re-initialised ({where}; keep_head=True keeps it)"


def read(spec, parts) -> Source:
  """Reads ``spec.transfer.init_from`` and checks that it fits the run's model, against the
  state's shapes only: a misfit is one TransferError line before anything is compiled."""
  init_from = spec.transfer.init_from
  path, which = parse(init_from)
  source = (_from_file(init_from, path, spec.model.name) if which == "file"
            else _from_workdir(init_from, path, which))
  module, shape = parts.model, spec.model.input_shape
  head, first = transfer.head_paths(module, shape), transfer.input_paths(module, shape)
  abstract = parts.shardings.abstract
  transfer.merge(_variables(abstract.params, abstract.batch_stats), source.variables,
                 head=head, first=first, source_name=init_from, source_head=source.head,
                 fresh_head=fresh_head(spec, source)[0],
                 new_modules=source.model != spec.model.name)
  return dataclasses.replace(source, checked=(head, first))


def initialise(spec, parts, state, source: Source) -> tuple[Any, transfer.TransferReport]:
  """``state`` (freshly initialised) with the checked source merged in, on the state's
  shardings; returns it and the report of what was loaded, re-initialised, adapted, frozen."""
  head, first = source.checked
  fresh, why = fresh_head(spec, source)
  merged, report = transfer.merge(
      jax.tree.map(_host, _variables(state.params, state.batch_stats)), source.variables,
      head=head, first=first, source_name=source.name, source_head=source.head,
      fresh_head=fresh, new_modules=source.model != spec.model.name)
  shard = parts.shardings.sharding

  def place(values, shardings):
    return jax.tree.map(lambda v, sh: jax.make_array_from_callback(
        np.shape(v), sh, lambda idx: np.asarray(v)[idx]), values, shardings)
  params = place(merged["params"], shard.params)
  stats = place(merged["batch_stats"], shard.batch_stats) if state.batch_stats else \
      state.batch_stats
  ema = None if state.ema_params is None else place(merged["params"], shard.ema_params)
  state = state.replace(params=params, batch_stats=stats, ema_params=ema)
  return state, dataclasses.replace(report, frozen=tuple(parts.optimizer.frozen), head=why)
