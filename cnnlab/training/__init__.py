"""The training engine: specs in, a trained workdir out.

    spec = cnnlab.config.resolve(config)            # once, in the entry point
    final = cnnlab.training.train_and_evaluate(spec, workdir)
    t = cnnlab.training.load_trained(workdir, checkpoint="best")

Modules: builders (one piece each: mesh, model, optimizer, state, steps, checkpointer, data,
evaluation), parts (a run's parts built together), loop (train_and_evaluate), trained
(load_trained), state, optim, steps. Submodules load lazily, so ``from cnnlab.training import
optim`` does not pull in the data pipeline (TensorFlow) or the checkpointing stack.
"""
import importlib

_EXPORTS = {
    "train_and_evaluate": "loop", "NonFiniteError": "loop", "Preempted": "loop",
    "PREEMPTED_EXIT_CODE": "loop",
    "load_trained": "trained", "Trained": "trained",
    "build_parts": "parts", "Parts": "parts",
    "TrainState": "state",
}
__all__ = [*_EXPORTS, "ConfigError"]


def __getattr__(name):
  if name == "ConfigError":
    from cnnlab.config import ConfigError
    return ConfigError
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"cnnlab.training.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'cnnlab.training' has no attribute {name!r}")
