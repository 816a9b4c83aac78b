"""Compatibility for callers written before cnnlab.config (experiments/bench_jax.py,
experiments/visualize.py): each function resolves the config through ``cnnlab.config`` — the
only place keys are read — and returns the piece asked for. New code: ``resolve(config)``.
Delete once no caller is left."""
from __future__ import annotations

from cnnlab.config import ConfigError, complete, resolve  # noqa: F401
from cnnlab import config_checks

_NO_DATA = dict(process_count=1, device_count=1, train_examples=1 << 40)


def validate(config, device_count: int | None = None) -> None:
  """Raises ConfigError for the first problem found (reads the split size from the data)."""
  import jax
  resolve(config, device_count=device_count or jax.device_count(),
          process_count=jax.process_count())


def build_model(config):
  from cnnlab.training import builders
  return builders.model(resolve(config, check_model=False, **_NO_DATA).model)


def eval_split(config) -> str:
  return config_checks.check_data(complete(config))[1]["eval_split"]


def eval_batch_size(config, mesh=None) -> int:
  c = complete(config)
  return int(c.eval_batch_size or c.batch_size)


def image_shape(config) -> tuple:
  return tuple(config_checks.check_data(complete(config))[2])
