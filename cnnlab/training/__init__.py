"""The training engine: state, optimizers, steps and the loop.

Submodules load lazily, so ``from cnnlab.training import optim`` does not pull in the data
pipeline (TensorFlow) or the checkpointing stack.
"""
import importlib

_EXPORTS = {
    "train_and_evaluate": "loop", "Run": "loop", "NonFiniteError": "loop",
    "Preempted": "loop", "PREEMPTED_EXIT_CODE": "loop",
    "TrainState": "state", "ConfigError": "validation", "validate": "validation",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"cnnlab.training.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'cnnlab.training' has no attribute {name!r}")
