"""Seeds as a vmapped axis: ``train_seeds(spec, seeds, workdirs)`` trains several seeds of one
recipe in one process with ONE compiled train step over a leading seed axis.

    finals = cnnlab.training.train_seeds(spec, seeds=[0, 1, 2, 3],
                                         workdirs=[f"runs/g/seed{s}" for s in range(4)])

What carries the seed axis: parameters, optimizer state (a plateau schedule's too, so each
seed keeps its own learning-rate reductions), BatchNorm statistics, the EMA, the state's random
key (each seed's own ``run_key(seed)``), and the batch — at step t it stacks what each seed's
run alone gets at step t (its own data order and augmentation). Everything else is each seed's
own, through the single run's pieces (cnnlab/training/loop.py: ``start_run``, ``Loop``,
``RunBooks``): its workdir, lock, checkpointer (same files, hashes and integrity records),
metrics.jsonl, config.json (with its seed), code_version.jsonl, transfer.json,
final_metrics.json (with report_best's selected checkpoint). So a seed's workdir is what a run
alone writes, and ``report``, resume, evaluate, predict and visualize read it unchanged.

How the one step maps over the seeds (``seed_map``, cnnlab/training/steps.py ``over_seeds``):
- 'unroll' traces the lone step once per seed into the one program: each seed's ops are its
  lone run's, so its results are the lone run's to the bit (tests/test_seeds.py compares
  parameter fingerprints). The default on a CPU: on the 2-core machine of issue 29, fcn1d's
  step for 4 seeds cost 4.3x one seed's CPU time unrolled, 4.3-5.3x vmapped with the oneDNN
  convolutions (which loop over the seeds inside the program) and 5.7x vmapped with XLA's
  (a vmapped convolution becomes a grouped one, slow on XLA:CPU) — and vmap's rounding, though
  tiny per step, grew over 1,650 steps of ItalyPowerDemand to a test accuracy 9 examples of
  1,029 away from the lone run's.
- 'vmap' vectorises the step (one batched op per op): the default on accelerators, where
  batched kernels are what makes seeds cheap; equal to the lone run up to float rounding.
Compile time grows with the number of seeds when unrolled (about N times the lone step's).

Resuming: each seed restores its own latest checkpoint. Seeds at different steps (a hard kill
leaves each at its own last save, e.g. with checkpoint_best_only) are brought to a common step
first: the seeds furthest behind train together until they reach the next seed's step, which
then joins them, and so on — each seed takes exactly the steps it would take alone, and the
compiled step is traced once per group size. Seeds already finished are left as they are.

Refused (one line, ConfigError): several processes (multi-host runs train one seed at a time;
several devices in one process are fine: the batch axis is sharded after the seed axis);
step kinds other than 'standard' (the 'online' kind of cnnlab.proj updates per example, with
host-side control flow); a seed restored past the run's last step.
A non-finite step in any seed stops the whole group (NonFiniteError naming the seed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from cnnlab import workdir_lock
from cnnlab.config import ConfigError, RunSpec
from cnnlab.training import builders, loop as loop_lib, steps
from cnnlab.training.parts import Parts, build_parts
from cnnlab.training.trained import resolve_run


def with_seed(spec: RunSpec, seed: int) -> RunSpec:
  """``spec`` for another seed (its config.json says so too)."""
  return dataclasses.replace(spec, seed=int(seed), config={**spec.config, "seed": int(seed)})


def train_seeds(spec: RunSpec, seeds: Sequence[int], workdirs: Sequence[str], *,
                stop_requested: Callable[[], bool] = lambda: False,
                seed_map: str = "auto") -> list[dict[str, Any]]:
  """Trains ``seeds`` of ``spec`` (its own seed is ignored) together, seed k in
  ``workdirs[k]``, resuming each from its checkpoints; returns their final metrics in order.

  ``spec``: a RunSpec or a config (resolved like ``train_and_evaluate``'s). Each workdir is
  locked as a lone run locks it. On a stop request every seed is checkpointed and
  ``Preempted`` raised; rerunning the same call resumes them all. ``seed_map``: how the step
  maps over the seeds (``steps.over_seeds``): 'vmap', 'unroll', or 'auto' (see
  ``choose_seed_map``)."""
  if not isinstance(spec, RunSpec):
    spec = resolve_run(spec)
  seeds, workdirs = _checked(spec, seeds, workdirs)
  how, why = choose_seed_map(seed_map)
  with contextlib.ExitStack() as locks:
    for wd in workdirs:
      locks.enter_context(workdir_lock.hold_for_run(wd, process_index=0))
    return _train_seeds(spec, seeds, workdirs, stop_requested, (how, why))


def choose_seed_map(seed_map: str = "auto", platform: str | None = None) -> tuple[str, str]:
  """(how the step maps over seeds, why). 'auto': 'unroll' on a CPU, 'vmap' on accelerators
  (see the module docstring for the measurements behind it)."""
  if seed_map not in ("auto", *steps.SEED_MAPS):
    raise ConfigError(f"seed_map={seed_map!r} is not one of auto, {', '.join(steps.SEED_MAPS)}")
  if seed_map != "auto":
    return seed_map, "as asked"
  platform = platform or jax.devices()[0].platform
  if platform == "cpu":
    return "unroll", "auto on a CPU: each seed's step as its lone run's, bit for bit"
  return "vmap", f"auto on {platform}: batched ops"


def _checked(spec: RunSpec, seeds, workdirs) -> tuple[list[int], list[str]]:
  seeds, workdirs = [int(s) for s in seeds], [str(w) for w in workdirs]
  if not seeds or len(seeds) != len(workdirs):
    raise ConfigError(f"train_seeds: {len(seeds)} seed(s) and {len(workdirs)} workdir(s); "
                      "give one workdir per seed (at least one)")
  if min(seeds) < 0 or len(set(seeds)) < len(seeds):
    raise ConfigError(f"train_seeds: seeds={seeds} must be distinct non-negative integers")
  if len({os.path.abspath(w) for w in workdirs}) < len(workdirs):
    raise ConfigError(f"train_seeds: workdirs={workdirs} must be distinct (one per seed)")
  if jax.process_count() > 1:
    raise ConfigError(f"seeds as a vmapped axis run in one process, not {jax.process_count()}: "
                      "train the seeds one at a time (reproduce without --vmap)")
  if spec.train.step != "standard":
    raise ConfigError(f"config.train.step={spec.train.step!r} cannot be vmapped over seeds "
                      "(only 'standard' can): train the seeds one at a time (without --vmap)")
  return seeds, workdirs


@dataclasses.dataclass
class _Member:
  seed: int
  state: Any              # its own (unstacked) state until it joins the group
  books: loop_lib.RunBooks


def _train_seeds(spec: RunSpec, seeds, workdirs, stop_requested, seed_map) -> list[dict[str, Any]]:
  parts = build_parts(spec)
  finals: dict[int, dict] = {}
  members = _open(spec, parts, seeds, workdirs, finals)
  if members:
    loop_lib.describe(spec, parts, seeds=f"; seeds {', '.join(str(m.seed) for m in members)} "
                      f"in one step, {seed_map[0]} ({seed_map[1]})")
    _check_steps(spec, members)
    train_step = builders.train_step(spec, parts.model, parts.optimizer, parts.mesh,
                                     parts.shardings, seed_map=seed_map[0])
    for m, final in zip(members, _train_group(spec, parts, train_step, seed_map[0], members,
                                              stop_requested)):
      finals[m.seed] = final
  return [finals[s] for s in seeds]


def _open(spec: RunSpec, parts: Parts, seeds, workdirs, finals: dict) -> list[_Member]:
  """Each seed's run opened (restored or fresh); finished ones go to ``finals``."""
  members: list[_Member] = []
  try:
    for seed, wd in zip(seeds, workdirs):
      started = loop_lib.start_run(with_seed(spec, seed), parts, wd, label=f"seed {seed}: ",
                                   show_summary=not members and not finals)
      if isinstance(started, dict):
        finals[seed] = started
      else:
        members.append(_Member(seed, *started))
  except BaseException:
    _close(members)
    raise
  return members


def _close(members: list[_Member]) -> None:
  for m in members:
    m.books.ckpt.close(raise_errors=False)
    m.books.writer.close(raise_errors=False)


def _check_steps(spec: RunSpec, members: list[_Member]) -> None:
  total = spec.loop.total_steps
  past = [m for m in members if m.books.step > total]
  if past:
    _close(members)
    raise ConfigError(f"seed {past[0].seed} was restored at step {past[0].books.step}, past "
                      f"this run's last step {total}: train it alone (without --vmap)")


def _train_group(spec: RunSpec, parts: Parts, train_step, seed_map: str,
                 members: list[_Member], stop_requested) -> list[dict]:
  """Trains the members from their own steps to the end, the laggards first (see the module
  docstring); returns their final metrics in ``members`` order."""
  layout = _Stacked(parts) if seed_map == "vmap" else _Listed()
  loop = loop_lib.Loop([], train_step, parts.sync, layout.pick)
  waiting = sorted(members, key=lambda m: m.books.step)
  joined: list[_Member] = []
  state = None
  with loop_lib.closing_on_error([m.books for m in members]):
    while waiting:
      step = waiting[0].books.step
      joining = [m for m in waiting if m.books.step == step]
      waiting = waiting[len(joining):]
      state = layout.join(state, [m.state for m in joining])
      joined += joining
      loop.runs = [m.books for m in joined]
      stop_at = waiting[0].books.step if waiting else spec.loop.total_steps
      if stop_at > step:
        batches = builders.train_batches(spec, parts.feed, parts.mesh, step,
                                         seeds=tuple(m.seed for m in joined))
        state = loop.run(state, batches, stop_at, stop_requested)
        del batches                            # its prefetch threads stop
    loop.settle(state)
  by_seed = dict(zip((m.seed for m in joined), loop.close_and_finish(state)))
  return [by_seed[m.seed] for m in members]


class _Stacked:
  """'vmap': the seeds' states stacked along a leading axis."""

  def __init__(self, parts: Parts):
    self.sharding = parts.shardings.sharding
    self.pick = jax.jit(lambda state, i: jax.tree.map(lambda x: x[i], state),
                        out_shardings=self.sharding)

  def join(self, stacked, states: list):
    """``states`` stacked after the seeds already in ``stacked``."""
    for s in states:
      s = jax.tree.map(lambda x: x[None], s)
      stacked = s if stacked is None else jax.tree.map(
          lambda a, b: jnp.concatenate([a, b]), stacked, s)
    return jax.device_put(stacked, self.sharding)


class _Listed:
  """'unroll': a list of the seeds' states."""

  @staticmethod
  def pick(states: list, i: int):
    return states[i]

  @staticmethod
  def join(states: list | None, new: list) -> list:
    return [*(states or []), *new]
