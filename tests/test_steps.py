"""The pure train / eval steps on a tiny model: learning, the finiteness guard, gradient
accumulation, masks in eval, auxiliary heads."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import spec_of

from cnnlab import config as config_lib
from cnnlab.training import optim, steps, tasks
from cnnlab.training.state import create_state
from experiments.configs.base import base


def _spec(c):
  c.model.name, c.dataset.name = "lenet5", "mnist"
  c.batch_size = 16
  return spec_of(c, n=160)


def _train_step(model, tx, c, sched):
  spec = _spec(c)
  return steps.make_train_step(model, tx, spec.train, spec.optim, sched)


class Tiny(nn.Module):
  num_classes: int = 4
  aux: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    logits = nn.Dense(self.num_classes)(x)
    if train and self.aux:
      return logits, nn.Dense(self.num_classes, name="aux")(x)
    if self.is_initializing() and self.aux:
      nn.Dense(self.num_classes, name="aux")(x)
    return logits


def _setup(lr=0.1, model=None, **cfg):
  c = base()
  c.optimizer.learning_rate = lr
  for k, v in cfg.items():
    c[k] = v
  model = model or Tiny()
  sched = optax.constant_schedule(lr)
  tx = optim.create_optimizer(_spec(c).optim, sched)
  state = create_state(model, tx, jax.random.PRNGKey(0), (8, 8, 1))
  return c, model, tx, sched, state


def _batch(n=16, seed=0):
  r = np.random.default_rng(seed)
  labels = r.integers(0, 4, n).astype(np.int32)
  images = r.normal(size=(n, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
  return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def test_train_step_learns_and_updates_batch_stats():
  c, model, tx, sched, state = _setup()
  step = jax.jit(_train_step(model, tx, c, sched))
  batch = _batch()
  first = None
  for _ in range(30):
    state, m = step(state, batch)
    first = first if first is not None else float(m["train_loss"])
  assert float(m["train_loss"]) < 0.5 * first
  assert int(state.step) == 30 and int(m["finite"]) == 1
  assert float(jnp.abs(state.batch_stats["BatchNorm_0"]["mean"]).sum()) > 0


def test_nonfinite_step_leaves_state_untouched():
  c, model, tx, sched, state = _setup()
  step = jax.jit(_train_step(model, tx, c, sched))
  bad = _batch()
  bad["image"] = bad["image"].at[0, 0, 0, 0].set(jnp.nan)
  new, m = step(state, bad)
  assert int(m["finite"]) == 0
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_grad_accumulation_matches_full_batch_without_bn():
  class NoBN(nn.Module):
    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))

  outs = []
  for k in (1, 4):
    c, model, tx, sched, state = _setup(model=NoBN(), grad_accum_steps=k)
    step = jax.jit(_train_step(model, tx, c, sched))
    state, m = step(state, _batch())
    outs.append((state.params, float(m["train_loss"])))
  assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)
  for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(outs[1][0])):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_aux_heads_add_weighted_loss():
  losses = {}
  for w in (0.0, 0.3):
    c, model, tx, sched, state = _setup(model=Tiny(aux=True), aux_loss_weight=w)
    _, m = jax.jit(_train_step(model, tx, c, sched))(state, _batch())
    losses[w] = float(m["total_loss"])
  assert losses[0.3] > losses[0.0]


def test_label_smoothing_loss_is_the_smoothed_cross_entropy():
  logits = jnp.array([[5.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([0])
  logp = np.asarray(jax.nn.log_softmax(logits[0]))
  plain = float(tasks.cross_entropy(logits, labels, 4)[0])
  smooth = float(tasks.cross_entropy(logits, labels, 4, 0.1)[0])
  assert plain == pytest.approx(-logp[0], rel=1e-6)
  target = np.array([0.9 + 0.1 / 4, 0.1 / 4, 0.1 / 4, 0.1 / 4])
  assert smooth == pytest.approx(-(target * logp).sum(), rel=1e-6)


def test_topk_correct_with_ten_classes_is_exact():
  """Labels at rank 1, 3, 5 and 6 of their rows: top-1 hits only the first, top-5 the first
  three (the sixth-ranked label is a miss)."""
  base = jnp.arange(10, 0, -1, dtype=jnp.float32)          # class 0 ranks first, 9 last
  logits = jnp.stack([base] * 4)
  labels = jnp.array([0, 2, 4, 5])
  np.testing.assert_array_equal(tasks.topk_correct(logits, labels, 1), [True, False, False, False])
  np.testing.assert_array_equal(tasks.topk_correct(logits, labels, 5), [True, True, True, False])


def test_eval_step_respects_mask():
  c, model, tx, sched, state = _setup()
  ev = jax.jit(steps.make_eval_step(model, confusion=True))
  batch = _batch(8)
  batch["mask"] = jnp.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
  out = ev(state, batch)
  assert float(out["count"]) == 3
  assert float(out["confusion"].sum()) == 3
  assert 0 <= float(out["correct"]) <= 3
  assert "correct5" not in out        # 4 classes: top-5 is right by construction, not reported
  wide = Tiny(num_classes=10)
  variables = wide.init(jax.random.PRNGKey(0), batch["image"][:1])
  wide_state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
  out = jax.jit(steps.make_eval_step(wide))(wide_state, batch)
  assert float(out["correct5"]) <= 3 and float(out["correct"]) <= float(out["correct5"])


def test_bf16_compute_keeps_float32_params():
  from cnnlab import models
  model = models.create("lenet5", dtype=jnp.bfloat16)
  c = base()
  c.optimizer.learning_rate = 0.05
  sched = optax.constant_schedule(0.05)
  tx = optim.create_optimizer(_spec(c).optim, sched)
  state = create_state(model, tx, jax.random.PRNGKey(0), (28, 28, 1))
  step = jax.jit(_train_step(model, tx, c, sched))
  r = np.random.default_rng(0)
  batch = {"image": jnp.asarray(r.normal(size=(16, 28, 28, 1)), jnp.float32),
           "label": jnp.asarray(r.integers(0, 10, 16), jnp.int32)}
  logits = model.apply({"params": state.params}, batch["image"])
  assert logits.dtype == jnp.bfloat16
  losses = []
  for _ in range(10):
    state, m = step(state, batch)
    losses.append(float(m["train_loss"]))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_lenet_map_loss_is_eq9_and_differs_from_cross_entropy():
  c = base()
  outputs = jnp.array([[-1.0, -5.0, -9.0], [-4.0, -0.5, -3.0]])
  labels = jnp.array([0, 2])
  ce = float(steps.make_loss(_spec(c).train)(outputs, {"label": labels}))
  c.loss = "lenet_map"
  c.loss_rubbish_j = 1.0
  got = float(steps.make_loss(_spec(c).train)(outputs, {"label": labels}))
  # eq. 9 by hand: y_correct + log(e^-j + sum_i e^-y_i), outputs are -y
  want = np.mean([1.0 + np.log(np.exp(-1.0) + np.exp(-1.0) + np.exp(-5.0) + np.exp(-9.0)),
                  3.0 + np.log(np.exp(-1.0) + np.exp(-4.0) + np.exp(-0.5) + np.exp(-3.0))])
  assert got == pytest.approx(want, rel=1e-6) and got != pytest.approx(ce)
  c.loss = "hinge"
  with pytest.raises(ValueError, match="loss='hinge'"):
    _spec(c)
