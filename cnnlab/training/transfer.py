"""Transfer learning: start a run from pretrained weights, re-head it, adapt its input layer,
freeze parts of it and give parameter groups their own learning rates.

    source = transfer.read_source("resnet50.safetensors", "resnet50")       # or a cnnlab workdir
    variables, report = transfer.merge(fresh_variables, source,
                                       head=transfer.head_paths(model, input_shape),
                                       first=transfer.input_paths(model, input_shape))
    tx = transfer.partition_optimizer(tx, params, freeze=("^conv1", "^layer1"),
                                      lr_groups=(("^layer4", 0.1),))

Which parameters are "the head" and "the first layer" is not hard-coded per family: they are
found by asking the model itself (``jax.eval_shape``, nothing computed) which parameter shapes
change when the class count changes, and which change with the number of input channels.
That covers GoogLeNet's auxiliary heads, VGG's three-layer classifier (only its last layer
depends on the class count) and 1-D / 3-D models alike.

Input adaptation (``adapt_input_kernel``), the convention timm uses for ``in_chans``: to ONE
channel, the RGB kernels are summed (a grey image x seen as (x, x, x) gives the same response);
to N channels, the source channels are repeated cyclically up to N and the kernel is scaled by
C_src / N, so the activations' scale is kept; when N is a multiple of C_src an input whose
channels are all equal produces exactly the activations of the source model (otherwise
approximately: some source channels are repeated once more than others).

Paths are ``collection/module/.../name`` strings (e.g. ``params/layer1_0/conv1/kernel``,
``batch_stats/bn1/mean``); ``--config.freeze`` and ``--config.lr_groups`` patterns are
regular expressions searched in the path without its collection (``layer1_0/conv1/kernel``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from cnnlab.config import ConfigError
from cnnlab.config.checks import compile_patterns as _compile
from cnnlab.config.checks import parse_lr_groups as _parse_lr_groups


class TransferError(ConfigError):
  """A source that cannot initialise the target; the message is one line."""


@dataclasses.dataclass(frozen=True)
class TransferReport:
  source: str
  loaded: tuple[str, ...] = ()
  reinitialised: tuple[str, ...] = ()
  adapted: tuple[str, ...] = ()
  frozen: tuple[str, ...] = ()
  dropped: tuple[str, ...] = ()     # the source's classifier, absent from the target
  new: tuple[str, ...] = ()         # target modules the source has nothing of (a decoder)
  head: str = ""                    # what was done with the classifier, and why

  def summary(self) -> str:
    return (f"init_from {self.source}: loaded {len(self.loaded)} arrays, re-initialised "
            f"{len(self.reinitialised)} ({_short(self.reinitialised)}), adapted "
            f"{len(self.adapted)} ({_short(self.adapted)}), frozen {len(self.frozen)} "
            f"parameters" + (f", {len(self.new)} new ({_short(self.new)})" if self.new else "")
            + (f", dropped the source's {_short(self.dropped)}" if self.dropped else "")
            + (f"; head {self.head}" if self.head else ""))

  def write(self, workdir: str) -> str:
    path = os.path.join(workdir, "transfer.json")
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(dataclasses.asdict(self), f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def _short(paths: Sequence[str], n: int = 3) -> str:
  shown = ", ".join(paths[:n])
  return shown + (f", ... {len(paths) - n} more" if len(paths) > n else "") if paths else "none"


def flatten(variables) -> dict[str, Any]:
  return dict(traverse_util.flatten_dict(dict(variables), sep="/"))


def unflatten(flat: dict[str, Any]) -> dict:
  return traverse_util.unflatten_dict(flat, sep="/")


def _param_shapes(model, input_shape) -> dict[str, tuple]:
  def init():
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape), jnp.float32),
                      train=False)
  return {k: tuple(v.shape) for k, v in flatten(jax.eval_shape(init)).items()}


def head_paths(model, input_shape) -> frozenset[str]:
  """Variables whose shape depends on the class count (the classifier(s))."""
  a = _param_shapes(model.clone(num_classes=7), input_shape)
  b = _param_shapes(model.clone(num_classes=11), input_shape)
  return frozenset(k for k in a if a[k] != b.get(k))


def input_paths(model, input_shape) -> frozenset[str]:
  """Variables whose shape depends on the number of input channels (the first layer)."""
  shape = tuple(input_shape)
  a = _param_shapes(model, shape[:-1] + (1,))
  b = _param_shapes(model, shape[:-1] + (2,))
  return frozenset(k for k in a if a[k] != b.get(k))


def adapt_input_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
  """A first-layer kernel (..., C_src, O) for ``channels`` input channels (see module doc)."""
  kernel = np.asarray(kernel)
  src = kernel.shape[-2]
  if channels == src:
    return kernel
  if channels == 1:
    return kernel.sum(axis=-2, keepdims=True)
  idx = np.arange(channels) % src
  return np.take(kernel, idx, axis=-2) * (src / channels)


def _module(path: str) -> str:
  """'params/dec0/conv1/kernel' -> 'dec0': the top-level module a variable belongs to."""
  return path.split("/")[1] if path.count("/") >= 1 else path


def _take(path, value, have, head, first, fresh_head, new_modules):
  """(what happens to one target array, its value): loaded / reinitialised / adapted / new /
  bad (see ``merge``)."""
  if fresh_head and path in head:
    return "reinitialised", value
  if have is not None and tuple(np.shape(have)) == tuple(value.shape):
    return "loaded", jnp.asarray(have, value.dtype)
  if path in head:
    return "reinitialised", value
  if have is not None and path in first and np.ndim(have) == value.ndim and \
      np.shape(have)[:-2] == value.shape[:-2] and np.shape(have)[-1] == value.shape[-1]:
    return "adapted", jnp.asarray(adapt_input_kernel(have, value.shape[-2]), value.dtype)
  if have is None and _module(path) in new_modules:
    return "new", value
  return "bad", value


def merge(target, source, *, head: Iterable[str] = (), first: Iterable[str] = (),
          source_name: str = "source", source_head: Iterable[str] = (),
          fresh_head: bool = False, new_modules: bool = False) -> tuple[dict, TransferReport]:
  """``target`` (freshly initialised variables) with every array taken from ``source`` whose
  path and shape match; head arrays keep their fresh values when their shape differs or
  ``fresh_head`` (a new dataset: its class k is not the source's); first-layer kernels of
  another channel count are adapted; the source's own head arrays that the target lacks (a
  classifier's fc under a segmentation network) are dropped; with ``new_modules`` (the
  source is another architecture, e.g. a classifier for a U-Net's encoder) the target's
  top-level modules that the source has no array of at all start fresh (the decoder);
  anything else is a TransferError — as is a merge that loads nothing."""
  tgt, src = flatten(target), flatten(source)
  head, first, source_head = set(head), set(first), set(source_head)
  fresh_modules = {_module(p) for p in tgt} - {_module(p) for p in src} if new_modules else set()
  out, kinds = {}, {k: [] for k in ("loaded", "reinitialised", "adapted", "new", "bad")}
  for path, value in tgt.items():
    kind, out[path] = _take(path, value, src.get(path), head, first, fresh_head, fresh_modules)
    have = src.get(path)
    kinds[kind].append(path if kind != "bad" else f"{path} {tuple(value.shape)} <- "
                       + ("missing" if have is None else str(tuple(np.shape(have)))))
  dropped = sorted(k for k in src if k not in tgt and k in source_head)
  extra = sorted(k for k in src if k not in tgt and k not in head and k not in source_head)
  _refuse_misfit(source_name, kinds["bad"], extra, bool(kinds["loaded"] or kinds["adapted"]))
  report = TransferReport(source_name, tuple(kinds["loaded"]), tuple(kinds["reinitialised"]),
                          tuple(kinds["adapted"]), dropped=tuple(dropped),
                          new=tuple(kinds["new"]))
  return unflatten(out), report


def _refuse_misfit(source_name: str, bad: list, extra: list, any_loaded: bool) -> None:
  parts = []
  if bad:
    parts.append(f"{len(bad)} not loadable: {_short(bad, 4)}")
  if extra:
    parts.append(f"{len(extra)} unexpected in the source: {_short(extra, 4)}")
  if not parts and not any_loaded:
    parts.append("no array of the source fits the model")
  if parts:
    raise TransferError(f"init_from={source_name!r} does not fit the model: "
                        + "; ".join(parts))


def compile_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern]:
  try:
    return _compile(patterns, what)
  except ConfigError as e:
    raise TransferError(str(e)) from None


def parse_lr_groups(spec) -> tuple[tuple[str, float], ...]:
  """'regex=mult,regex=mult' (or pairs) -> ((regex, mult), ...); a bad item is a TransferError."""
  try:
    return _parse_lr_groups(spec)
  except ConfigError as e:
    raise TransferError(str(e)) from None


def match_paths(params, patterns: Sequence[str], what: str) -> list[list[str]]:
  """For each regex, the parameter paths (``module/.../name``) it matches; a pattern that is
  invalid or matches nothing is a TransferError naming it."""
  paths = ["/".join(k) for k in traverse_util.flatten_dict(params)]
  found = []
  for pattern, rx in zip(patterns, compile_patterns(patterns, what)):
    hits = [p for p in paths if rx.search(p)]
    if not hits:
      raise TransferError(f"{what} pattern {pattern!r} matches no parameter; parameters "
                          f"look like: {_short(paths, 4)}")
    found.append(hits)
  return found




def labels(params, freeze: Sequence[str] = (), lr_groups: Sequence[tuple[str, float]] = (),
           trainable_only: Iterable[str] | None = None):
  """Per-parameter labels: 'frozen', 'group{i}' (first lr_groups pattern that matches) or
  'default'; freezing wins over a learning-rate group. ``trainable_only`` (parameter paths):
  every other parameter is frozen (a linear probe trains the classifier alone)."""
  frozen = set(p for hits in match_paths(params, freeze, "freeze") for p in hits)
  group_hits = match_paths(params, [p for p, _ in lr_groups], "lr_groups")
  keep = None if trainable_only is None else set(trainable_only)
  out = {}
  for key in traverse_util.flatten_dict(params):
    path = "/".join(key)
    label = "default"
    if path in frozen or (keep is not None and path not in keep):
      label = "frozen"
    else:
      for i, hits in enumerate(group_hits):
        if path in hits:
          label = f"group{i}"
          break
    out[key] = label
  return traverse_util.unflatten_dict(out)


def frozen_paths(label_tree) -> tuple[str, ...]:
  return tuple("/".join(k) for k, v in traverse_util.flatten_dict(label_tree).items()
               if v == "frozen")


def partition_optimizer(tx: optax.GradientTransformation, label_tree,
                        lr_groups: Sequence[tuple[str, float]] = ()):
  """``tx`` for the 'default' parameters, zero updates for frozen ones (bit-identical after
  training), and ``tx`` followed by a constant scale for each learning-rate group (a
  multiplier on the learning rate: every update cnnlab's optimizers make is linear in it)."""
  transforms = {"default": tx, "frozen": optax.set_to_zero()}
  for i, (_, mult) in enumerate(lr_groups):
    transforms[f"group{i}"] = optax.chain(tx, optax.scale(mult))
  used = set(jax.tree.leaves(label_tree))
  return optax.multi_transform({k: v for k, v in transforms.items() if k in used}, label_tree)


def plan_optimizer(tx, spec, module):
  """``tx`` partitioned as ``spec.transfer`` asks (freeze / lr_groups / linear_probe), and the
  frozen parameter paths; ``tx`` itself when none is set. Patterns are checked against the
  model's parameter tree (shapes only, nothing compiled)."""
  t = spec.transfer
  if not (t.freeze or t.lr_groups or t.linear_probe):
    return tx, ()
  shape = spec.model.input_shape
  params = jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(0), jnp.zeros((1, *shape), jnp.float32), train=False))["params"]
  keep = None
  if t.linear_probe:
    keep = {p.partition("/")[2] for p in head_paths(module, shape) if p.startswith("params/")}
  tree = labels(params, t.freeze, t.lr_groups, keep)
  return partition_optimizer(tx, tree, t.lr_groups), frozen_paths(tree)


def frozen_stats_mask(batch_stats, frozen_params: Sequence[str]):
  """True for BatchNorm statistics of modules whose parameters are all frozen."""
  modules = {p.rpartition("/")[0] for p in frozen_params}
  flat = traverse_util.flatten_dict(batch_stats)
  return traverse_util.unflatten_dict(
      {k: "/".join(k[:-1]) in modules for k in flat})


def keep_frozen_stats(train_step, mask):
  """Wraps ``train_step(state, batch)`` so masked batch statistics stay as they were."""
  def step(state, batch):
    new, metrics = train_step(state, batch)
    stats = jax.tree.map(lambda m, n, o: o if m else n, mask, new.batch_stats,
                         state.batch_stats)
    return new.replace(batch_stats=stats), metrics
  return step
