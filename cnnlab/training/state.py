"""The train state: a plain pytree of arrays, so it can be jitted, donated, sharded and
checkpointed as one object. The model and the optimizer stay outside (static)."""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array              # optimizer steps taken (int32 scalar)
  params: Any
  batch_stats: Any             # {} for models without BatchNorm
  opt_state: Any
  rng: jax.Array               # base key; per-step keys are fold_in(rng, step)
  ema_params: Any = None       # exponential moving average of params, or None


def input_spec(image_shape, batch: int = 1, dtype=jnp.float32):
  return jnp.zeros((batch, *image_shape), dtype)


def init_variables(model: nn.Module, rng: jax.Array, image_shape) -> dict:
  """Model variables from a seed; GoogLeNet-style models create all heads at init."""
  params_rng, dropout_rng = jax.random.split(rng)
  return model.init({"params": params_rng, "dropout": dropout_rng},
                    input_spec(image_shape), train=False)


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                 image_shape, *, ema: bool = False) -> TrainState:
  """A fresh state. Pure, so it can run under jit with replicated out_shardings."""
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(model, init_rng, image_shape)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params), rng=state_rng,
                    ema_params=jax.tree.map(jnp.copy, params) if ema else None)


def eval_variables(state: TrainState, use_ema: bool = False) -> dict:
  params = state.ema_params if (use_ema and state.ema_params is not None) else state.params
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return variables
