"""Moved to experiments/perf.py (process-wide settings belong to entry points). This alias
keeps ``from cnnlab import perf`` working for experiments/benchmark.py until it imports
``experiments.perf``; delete it then."""
from experiments.perf import *  # noqa: F401,F403
from experiments.perf import PROFILES, check_applied, configure  # noqa: F401
