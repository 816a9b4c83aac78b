"""The run's random streams, named in one place.

A run has one integer seed. Every random quantity is drawn from a stream derived from
``(seed, STREAM, ...)`` — the stream number below, then what the draw depends on (epoch,
step, block, host) — so that streams never overlap and a draw is a pure function of its
position in the run (what makes restarts bit-identical). Changing a number here changes
every run's randomness: don't.

Data (NumPy ``default_rng([seed, STREAM, ...])`` / ``SeedSequence``):
  DATA_ORDER        in-memory: the permutation of epoch e; streaming: epoch e's block grid
                    shift and visiting order.
  DATA_AUGMENT      in-memory: augmentation parameters of step s; streaming: the seed of each
                    shuffled block (epoch e, block j).
  STREAMING_AUGMENT streaming: the per-host key of the stateless TF augmentation ops.
Model (JAX keys): ``run_key(seed)``; ``state.create_state`` splits it into the key that
initialises the parameters and the state's base key; step s uses ``fold_in(base, s)``.
"""
from __future__ import annotations

DATA_ORDER = 1
DATA_AUGMENT = 2
STREAMING_AUGMENT = 3


def run_key(seed: int):
  """The JAX key every model-side stream derives from."""
  import jax
  return jax.random.PRNGKey(int(seed))
