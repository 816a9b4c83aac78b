"""cnnlab.config: the run a config describes, resolved once, purely.

    facts = cnnlab.data.describe(config.dataset)         # one metadata read
    devices = cnnlab.platform.describe()                 # JAX's devices, oneDNN usable?
    spec = cnnlab.config.resolve(config, facts, devices)  # -> RunSpec; no I/O

Modules: schema (the specs and the ONE default of every key), facts (what resolve is told),
checks (the key-by-key rules), registry (names the layers above register), resolve, errors.
This package imports nothing else of cnnlab: everything above depends on it, never the reverse.
"""
from cnnlab.config import registry
from cnnlab.config.checks import compile_patterns, parse_lr_groups
from cnnlab.config.errors import ConfigError, fail
from cnnlab.config.facts import DatasetFacts, Devices
from cnnlab.config.resolve import choose_kernels, resolve, resolve_data, resolve_optimization
from cnnlab.config.schema import (DATASET_OPTIONS, OPTION_TYPES, RESOLVED_KEY, DataSpec,
                                  LoopSpec, ModelSpec, OptimSpec, RunSpec, ScheduleSpec,
                                  TrainSpec, TransferSpec, complete, defaults)

__all__ = ["ConfigError", "DATASET_OPTIONS", "DataSpec", "DatasetFacts", "Devices", "LoopSpec",
           "ModelSpec", "OPTION_TYPES", "OptimSpec", "RESOLVED_KEY", "RunSpec", "ScheduleSpec",
           "TrainSpec", "TransferSpec", "choose_kernels", "compile_patterns", "complete",
           "defaults", "fail", "parse_lr_groups", "registry", "resolve", "resolve_data",
           "resolve_optimization"]
