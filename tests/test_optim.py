"""Schedules, optimizers and weight-decay modes built from configs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import spec_of

from cnnlab import config as config_lib
from cnnlab.training import optim
from experiments.configs.base import base


def _config(**kw):
  c = base()
  c.model.name, c.dataset.name = "lenet5", "mnist"
  c.batch_size = 256
  for key, value in kw.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _spec(c, steps_per_epoch=10, total_steps=None):
  """The resolved spec of ``c`` for a train split of ``steps_per_epoch`` batches."""
  if total_steps is not None:
    c.num_train_steps = total_steps
  return spec_of(c, n=steps_per_epoch * c.batch_size)


def _schedule(c, steps_per_epoch, total_steps):
  return optim.create_schedule(_spec(c, steps_per_epoch, total_steps).schedule)


def _tx(c, schedule):
  return optim.create_optimizer(_spec(c).optim, schedule)


def test_linear_scaling_rule():
  c = _config(**{"optimizer.learning_rate": 0.1, "optimizer.base_batch_size": 256})
  c.batch_size = 1024
  assert _spec(c).optim.learning_rate == pytest.approx(0.4)
  c.optimizer.base_batch_size = 0
  assert _spec(c).optim.learning_rate == pytest.approx(0.1)


def test_step_schedule_with_warmup():
  c = _config(**{"optimizer.learning_rate": 1.0, "schedule.name": "step",
                 "schedule.boundaries": (2.0, 4.0), "schedule.decay_factor": 0.1,
                 "schedule.warmup_epochs": 1.0})
  s = _schedule(c, steps_per_epoch=10, total_steps=60)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(15)) == pytest.approx(1.0)
  assert float(s(25)) == pytest.approx(0.1)
  assert float(s(45)) == pytest.approx(0.01)


def test_piecewise_and_cosine():
  c = _config(**{"optimizer.learning_rate": 0.1, "schedule.name": "piecewise",
                 "schedule.boundaries": (1.0, 2.0), "schedule.rates": (0.1, 0.01, 0.001)})
  s = _schedule(c, steps_per_epoch=100, total_steps=300)
  np.testing.assert_allclose([float(s(i)) for i in (0, 99, 100, 199, 200, 299)],
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
  c = _config(**{"optimizer.learning_rate": 2.0, "schedule.name": "cosine"})
  s = _schedule(c, steps_per_epoch=10, total_steps=100)
  assert float(s(0)) == pytest.approx(2.0)
  assert float(s(50)) == pytest.approx(1.0, abs=1e-5)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-6)


def test_unknown_names_raise():
  with pytest.raises(ValueError, match="schedule.name='linearr'"):
    _schedule(_config(**{"schedule.name": "linearr"}), 10, 100)
  with pytest.raises(ValueError, match="optimizer.name='adam'"):
    _tx(_config(**{"optimizer.name": "adam"}), optim.optax.constant_schedule(1.))


PARAMS = {"conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones((2,))},
          "bn": {"scale": jnp.ones((2,))}}


def test_l2_in_loss_skips_norm_and_bias():
  c = _config(**{"optimizer.weight_decay": 0.5, "optimizer.weight_decay_mode": "l2"})
  assert float(optim.l2_penalty(_spec(c).optim, PARAMS)) == pytest.approx(0.5 * 0.5 * 18)
  c.optimizer.exclude_norm_and_bias = False
  assert float(optim.l2_penalty(_spec(c).optim, PARAMS)) == pytest.approx(0.5 * 0.5 * 22)
  c.optimizer.weight_decay_mode = "decoupled"
  assert float(optim.l2_penalty(_spec(c).optim, PARAMS)) == 0.0


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_decoupled_decay_shrinks_kernels_only(name):
  c = _config(**{"optimizer.name": name, "optimizer.learning_rate": 0.1,
                 "optimizer.weight_decay": 0.1, "optimizer.weight_decay_mode": "decoupled"})
  tx = _tx(c, optim.optax.constant_schedule(0.1))
  zero_grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(zero_grads, tx.init(PARAMS), PARAMS)
  assert float(jnp.abs(updates["conv"]["kernel"]).max()) > 0
  if name in ("sgd", "adamw"):   # zero gradients: the update is exactly -lr * wd * w
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * 0.1 * PARAMS["conv"]["kernel"],
                               rtol=1e-6)
  assert float(jnp.abs(updates["conv"]["bias"]).max()) == 0
  assert float(jnp.abs(updates["bn"]["scale"]).max()) == 0


def test_nesterov_differs_from_heavy_ball():
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  outs = []
  for nesterov in (False, True):
    c = _config(**{"optimizer.nesterov": nesterov})
    tx = _tx(c, optim.optax.constant_schedule(1.0))
    st = tx.init(PARAMS)
    _, st = tx.update(grads, st, PARAMS)
    u, _ = tx.update(grads, st, PARAMS)
    outs.append(float(u["conv"]["kernel"][0, 0, 0, 0]))
  assert outs[0] == pytest.approx(-1.9) and outs[1] == pytest.approx(-1.0 - 0.9 * 1.9)


def test_plateau_halves_the_rate_after_patience_and_stops_at_the_minimum():
  """UCR protocol shape: the train loss averaged per epoch; no improvement for `patience`
  epochs -> lr x factor, never below min_lr; the state that counts this is optimizer state."""
  c = _config(**{"optimizer.name": "sgd", "optimizer.momentum": 0.0,
                 "optimizer.learning_rate": 0.1, "schedule.name": "plateau",
                 "schedule.plateau_factor": 0.5, "schedule.plateau_patience": 2,
                 "schedule.plateau_min_lr": 0.03})
  spec = _spec(c, steps_per_epoch=3)
  assert spec.schedule.plateau_every_steps == 3          # -1 = one epoch
  schedule = optim.create_schedule(spec.schedule)
  tx = optim.create_optimizer(spec.optim, schedule, spec.schedule)
  params = {"w": jnp.ones((2, 2))}
  state = tx.init(params)
  rates = []
  for step in range(30):
    _, state = tx.update({"w": jnp.ones((2, 2))}, state, params, value=jnp.float32(1.0))
    rates.append(float(optim.learning_rate(schedule, state, step + 1)))
  # epoch 1 sets the best loss; epochs 2 and 3 do not improve -> halved after epoch 3.
  assert rates[:8] == pytest.approx([0.1] * 8)
  assert rates[8] == pytest.approx(0.05)
  assert min(rates) == pytest.approx(0.03) and rates[-1] == pytest.approx(0.03)
