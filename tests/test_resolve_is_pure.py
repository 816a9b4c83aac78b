"""``cnnlab.config.resolve(config, facts, devices)`` is pure (issue 27): it decodes no example,
traces no model, reads no file and asks JAX nothing — tested by making every one of those fail
while it runs, for every recipe. The facts it needs come from ``cnnlab.data.describe`` (one
metadata read), and the model's input check happens where the model is built."""
import builtins
import importlib

import flax.linen as nn
import jax
import pytest

from cnnlab import config as config_lib
from cnnlab.data import datasets, memory
from test_recipes import VARIANTS


def _boom(*args, **kwargs):
  raise AssertionError("resolve must not do this")


@pytest.fixture
def nothing_allowed(monkeypatch):
  """Decoding, model tracing, file reads and device queries all raise while the test runs."""
  for module, name in ((memory, "load_split"), (jax, "eval_shape"), (nn.Module, "init"),
                       (nn.Module, "apply"), (jax, "devices"), (jax, "device_count"),
                       (jax, "process_count"), (jax, "default_backend"),
                       (builtins, "open")):
    monkeypatch.setattr(module, name, _boom)
  yield


@pytest.mark.parametrize("recipe,arg", [(r, a) for r, a, _ in VARIANTS])
def test_resolve_reads_nothing_and_traces_nothing(recipe, arg, nothing_allowed):
  module = importlib.import_module(f"experiments.configs.{recipe}")
  config = module.get_config(arg) if arg else module.get_config()
  facts = FACTS[recipe, arg]
  spec = config_lib.resolve(config, facts, config_lib.Devices(device_count=2))
  assert spec.loop.device_batch * 2 == spec.loop.global_batch
  assert spec.data.facts is facts and spec.model.input_shape == spec.data.input_shape


def _facts():
  out = {}
  for recipe, arg in [(r, a) for r, a, _ in VARIANTS]:
    module = importlib.import_module(f"experiments.configs.{recipe}")
    config = module.get_config(arg) if arg else module.get_config()
    out[recipe, arg] = datasets.describe(config_lib.complete(config).dataset,
                                         require_prepared=False)
  return out


FACTS = _facts()     # described before the test makes every read fail (describe may read)


def test_model_input_checks_happen_where_the_model_is_built():
  """A 28x28 input for AlexNet passes resolve (pure) and fails, in one ConfigError line, when
  the model is built — before anything is compiled."""
  from cnnlab.training import builders
  module = importlib.import_module("experiments.configs.lenet5_mnist")
  config = module.get_config()
  config.model.name = "alexnet"
  spec = config_lib.resolve(config, datasets.describe(config.dataset, require_prepared=False))
  with pytest.raises(config_lib.ConfigError, match="too small for model 'alexnet'"):
    builders.model(spec.model)
