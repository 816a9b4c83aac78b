"""SDLM (LeCun et al. 1998, Appendix C) and online training: the curvature estimate equals the
Gauss-Newton diagonal computed by brute force, the step is eta * g / (mu + h), and the jitted
online step equals a Python loop of single-example updates."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import spec_of

from cnnlab.models import lenet
from cnnlab.proj.lecun1998 import curvature, online, sdlm
from cnnlab.training.state import create_state


class Tiny(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.tanh(nn.Conv(4, (3, 3), padding="VALID")(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes)(x)


def _data(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, 5, 5, 1)), jnp.float32),
          jnp.asarray(rng.integers(0, 3, n), jnp.int32))


def _map(outputs, labels):
  return lenet.map_loss(outputs, labels, 1.0)


def test_diag_gauss_newton_equals_brute_force():
  model = Tiny()
  x, y = _data()
  params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
  outputs = lambda p, xi: model.apply({"params": p}, xi[None])[0]
  got = sdlm.diag_gauss_newton(outputs, lambda o, yi: _map(o[None], yi[None]), params, x, y)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  want = np.zeros(flat.shape)
  for xi, yi in zip(x, y):
    f = lambda v: outputs(unravel(v), xi)
    jac = np.asarray(jax.jacobian(f)(flat))                      # (K, P)
    h = np.asarray(jax.hessian(lambda o: _map(o[None], yi[None]))(f(flat)))
    want += np.einsum("kp,kl,lp->p", jac, h, jac)
  want /= len(x)
  np.testing.assert_allclose(jax.flatten_util.ravel_pytree(got)[0], want, rtol=2e-4, atol=1e-7)
  assert want.max() > 1e-3          # a real curvature, not zeros


def test_sdlm_step_is_eta_g_over_mu_plus_h():
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  tx = sdlm.sdlm(0.5, mu=0.02)
  state = tx.init(params)
  h = {"w": jnp.array([0.0, 1.0, 10.0])}
  state = sdlm.set_hessian(state, h)
  g = {"w": jnp.array([1.0, 1.0, -2.0])}
  upd, state = tx.update(g, state, params)
  np.testing.assert_allclose(upd["w"], -0.5 * g["w"] / (0.02 + h["w"]), rtol=1e-6)
  np.testing.assert_array_equal(sdlm.get_hessian(state)["w"], h["w"])
  with pytest.raises(ValueError, match="mu"):
    sdlm.scale_by_sdlm(0.0)
  with pytest.raises(ValueError, match="no SDLMState"):
    sdlm.set_hessian(optax.sgd(0.1).init(params), h)


def test_online_step_equals_python_loop_and_refreshes_per_pass():
  model = Tiny()
  x, y = _data(8)
  eta = optax.constant_schedule(0.05)
  tx = sdlm.sdlm(eta, mu=0.02)
  state = create_state(model, tx, jax.random.PRNGKey(1), (5, 5, 1))
  step = jax.jit(online.make_online_train_step(model, tx, _map, eta, steps_per_pass=2,
                                               hessian_samples=4))
  batch = {"image": x, "label": y}
  new, m = step(state, batch)
  # Reference: curvature from the first 4 examples, then 8 sequential single-example updates.
  outputs = lambda p, xi: model.apply({"params": p}, xi[None])[0]
  h = sdlm.diag_gauss_newton(outputs, lambda o, yi: _map(o[None], yi[None]), state.params,
                             x[:4], y[:4])
  params, opt = state.params, sdlm.set_hessian(state.opt_state, h)
  for xi, yi in zip(x, y):
    g = jax.grad(lambda p: _map(outputs(p, xi)[None], yi[None]))(params)
    upd, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, upd)
  # 8 sequential float32 updates divided by small curvatures: on an AVX2 CPU the jitted and
  # eager paths round differently by up to 4e-5 relative (measured); a wrong update is far off.
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert int(new.step) == 1 and int(m["finite"]) == 1
  # Step 1 is mid-pass: the curvature is kept; step 2 starts a pass: it is re-estimated.
  new2, _ = step(new, batch)
  for a, b in zip(jax.tree.leaves(sdlm.get_hessian(new2.opt_state)), jax.tree.leaves(h)):
    np.testing.assert_array_equal(a, b)
  new3, _ = step(new2, batch)
  h3 = sdlm.diag_gauss_newton(outputs, lambda o, yi: _map(o[None], yi[None]), new2.params,
                              x[:4], y[:4])
  for a, b in zip(jax.tree.leaves(sdlm.get_hessian(new3.opt_state)), jax.tree.leaves(h3)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_rbf_curvature_split_is_the_same_function():
  """Cutting LeNet-5 (1998) at F6 for the curvature must not change the function: RBF + MAP on
  F6's outputs equals the MAP loss on the model's outputs."""
  from cnnlab import models
  model = models.create("lenet5_1998")
  x = jnp.asarray(np.random.default_rng(0).uniform(-0.1, 1.175, (2, 32, 32, 1)), jnp.float32)
  y = jnp.array([3, 7])
  params = jax.jit(lambda k: model.init(k, x[:1])["params"])(jax.random.PRNGKey(0))
  outputs, loss = online.rbf_curvature_split(model, 1.0)
  for i in range(2):
    whole = lenet.map_loss(model.apply({"params": params}, x[i:i + 1]), y[i:i + 1], 1.0)
    np.testing.assert_allclose(loss(outputs(params, x[i]), y[i]), whole, rtol=1e-6)


def test_sdlm_recipe_through_the_trainer_resumes_bit_identically(mnist_data_dir, tmp_path):
  """The paper's procedure (recipe ':sdlm') shrunk: online SDLM steps through
  train_and_evaluate; the curvature estimate is optimizer state, so 2 + restart + 2 steps ==
  4 steps to the bit, and it is non-zero after the first step."""
  import shutil
  from experiments.configs import lenet5_1998_mnist
  from cnnlab.training import load_trained, train_and_evaluate

  def config():
    c = lenet5_1998_mnist.get_config("sdlm")
    c.dataset.data_dir = mnist_data_dir
    c.batch_size = 16
    c.optimizer.sdlm_hessian_samples = 8
    c.num_train_steps = 4
    c.checkpoint_every_steps = 2
    c.eval_every_steps = 4
    c.log_every_steps = 1
    c.compilation_cache_dir = ""
    return c

  full = train_and_evaluate(config(), str(tmp_path / "full"))
  h = sdlm.get_hessian(load_trained(str(tmp_path / "full"), 4).state.opt_state)
  assert max(float(jnp.max(x)) for x in jax.tree.leaves(h)) > 0
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
  resumed = train_and_evaluate(config(), str(tmp_path / "resumed"))
  assert resumed["params_fingerprint"] == full["params_fingerprint"]
  assert 0.0 <= full["eval_accuracy"] <= 1.0


def test_sdlm_needs_online_updates():
  from experiments.configs import lenet5_1998_mnist
  from cnnlab.config import ConfigError
  c = lenet5_1998_mnist.get_config("sdlm")
  c.online_updates = False
  with pytest.raises(ConfigError, match="online_updates=True"):
    spec_of(c, n=60000)


def test_paper_curvature_recursion():
  """The paper's diagonal back-propagation (App. C): its recorded forward pass is the model's,
  every estimate is >= 0 with the parameters' shapes, and at the top (F6's bias) it is exactly
  f'(a)^2 * diag(d2E/dx^2)."""
  from cnnlab import models
  model = models.create("lenet5_1998")
  x = jnp.asarray(np.random.default_rng(0).uniform(-0.1, 1.175, (3, 32, 32, 1)), jnp.float32)
  y = jnp.array([1, 4, 9])
  params = jax.jit(lambda k: model.init(k, x[:1])["params"])(jax.random.PRNGKey(0))
  f, _, sums = curvature.features(params, x)
  np.testing.assert_array_equal(
      f, models.create("lenet5_1998", num_classes=0).apply({"params": params}, x))
  _, loss = online.rbf_curvature_split(model, 1.0)
  h = jax.jit(lambda p: curvature.mean_curvature(p, x, y, loss))(params)
  for name in ("c1", "s2", "c3", "s4", "c5", "f6"):
    for k, v in params[name].items():
      assert h[name][k].shape == v.shape and float(h[name][k].min()) >= 0
  want = 0.0
  for i in range(3):
    d2x = np.diag(np.asarray(jax.hessian(lambda ff: loss(ff, y[i]))(f[i])))
    t = np.tanh(lenet.SQUASH_S * np.asarray(sums[-1][i]))
    want += (lenet.SQUASH_A * lenet.SQUASH_S * (1 - t * t)) ** 2 * np.maximum(d2x, 0) / 3
  np.testing.assert_allclose(h["f6"]["bias"], want, rtol=1e-5)
  assert float(h["c1"]["kernel"].max()) > 0


def test_paper_curvature_only_for_lenet1998():
  from experiments.configs import lenet5_1998_mnist
  from cnnlab.config import ConfigError
  c = lenet5_1998_mnist.get_config("sdlm")
  c.optimizer.sdlm_curvature = "paper"
  assert spec_of(c, n=60000).optim.sdlm_curvature == "paper"
  c.loss = "cross_entropy"
  with pytest.raises(ConfigError, match="sdlm_curvature"):
    spec_of(c, n=60000)
