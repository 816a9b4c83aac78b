"""The training engine: specs in, a trained workdir out.

    spec = cnnlab.training.resolve_run(config)      # describe data + devices, then resolve
    final = cnnlab.training.train_and_evaluate(spec, workdir)
    finals = cnnlab.training.train_seeds(spec, [0, 1, 2], [f"runs/g/seed{s}" for s in range(3)])
    t = cnnlab.training.load_trained(workdir, checkpoint="best")

Modules: registry (losses, optimizers, step kinds by name), tasks (what classification /
segmentation measure), builders (one piece each), parts (a run's parts built together), loop
(train_and_evaluate), seeds (train_seeds: several seeds in one vmapped step), trained
(load_trained: THE loader of a finished run), inference (ONE batched inference function),
sources + transfer (init_from, freezing), state, optim, steps.
Submodules load on first use, so ``from cnnlab.training import optim`` does not pull in the
checkpointing stack.
"""
import importlib

from cnnlab.config import ConfigError

_EXPORTS = {
    "train_and_evaluate": "loop", "NonFiniteError": "loop", "Preempted": "loop",
    "PREEMPTED_EXIT_CODE": "loop", "train_seeds": "seeds",
    "load_trained": "trained", "Trained": "trained", "resolve_run": "trained",
    "workdir_config": "trained",
    "build_parts": "parts", "Parts": "parts",
    "TrainState": "state",
}
__all__ = [*_EXPORTS, "ConfigError"]


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"cnnlab.training.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'cnnlab.training' has no attribute {name!r}")
