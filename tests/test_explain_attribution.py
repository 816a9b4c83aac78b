"""cnnlab.explain's attributions on hand-built models that only look at one region of the
input (a window in time, a box in an image, a cube in a volume): saliency, SmoothGrad,
Integrated Gradients, Grad-CAM and occlusion must put their mass there, in 1-D, 2-D and 3-D;
Integrated Gradients must satisfy completeness; everything compiles under jax.jit."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab.explain import attribution, explainers, features, gradcam, occlusion


class LooksAtRegion(nn.Module):
  """Zeroes the input outside ``region`` (a slice per spatial dim), then conv 3 -> tanh ->
  conv 3 ('feat', no bias, so it is exactly zero away from the region) -> global mean -> dense.
  Nothing outside the region (plus the convs' 2-position halo) can change the output."""
  region: tuple

  @nn.compact
  def __call__(self, x, train=False):
    rank = x.ndim - 2
    mask = np.zeros(x.shape[1:-1], np.float32)
    mask[tuple(slice(a, b) for a, b in self.region)] = 1.0
    x = x * mask[None, ..., None]
    x = jnp.tanh(nn.Conv(6, (3,) * rank, use_bias=False, name="conv")(x))
    x = nn.Conv(8, (3,) * rank, use_bias=False, name="feat")(x)
    x = nn.relu(x).mean(axis=tuple(range(1, rank + 1)))
    return nn.Dense(3, name="fc")(x)


CASES = {   # spatial shape, channels, region; halo 2 (two 3-wide convs) + occlusion window 2
    "1d": ((64,), 2, ((24, 36),)),
    "2d": ((20, 20), 1, ((3, 7), (11, 16))),
    "3d": ((12, 12, 12), 1, ((1, 4), (6, 9), (5, 8))),
}


def _dilated(spatial, region, by):
  m = np.zeros(spatial, bool)
  m[tuple(slice(max(0, a - by), b + by) for a, b in region)] = True
  return m


def _random_variables(model, x, seed=0):
  """Random parameters without compiling the initialisers."""
  rs = np.random.RandomState(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree.map(lambda s: (0.3 * rs.randn(*s.shape)).astype(np.float32), shapes)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
  spatial, channels, region = CASES[request.param]
  model = LooksAtRegion(region)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, *spatial, channels))
  return request.param, model, _random_variables(model, x), x, region


@functools.partial(jax.jit, static_argnums=0)
def _all_methods(model, variables, x):
  f = functools.partial(features.apply_inference, model, variables)
  target = jnp.argmax(f(x), -1)
  ig = attribution.integrated_gradients(f, x, target, steps=64)
  return {"saliency": attribution.heat(attribution.saliency(f, x, target)),
          "smoothgrad": attribution.heat(attribution.smoothgrad(f, x, target, samples=8)),
          "integrated_gradients": attribution.heat(ig),
          "gradcam": gradcam.gradcam(model, variables, x, target, "feat"),
          "occlusion": jnp.abs(occlusion.occlusion(f, x, target, window=2)),
          "completeness": attribution.completeness(f, x, ig, target)}


def test_mass_is_where_the_model_looks(case):
  name, model, variables, x, region = case
  spatial = x.shape[1:-1]
  out = jax.device_get(_all_methods(model, variables, x))
  halo = {"occlusion": 3}          # + the occlusion window reaching in from outside
  for method in ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "occlusion"):
    h = np.asarray(out[method])
    assert h.shape == (2, *spatial), (name, method, h.shape)
    inside = _dilated(spatial, region, halo.get(method, 2))
    assert inside.mean() < 0.35, name      # the test means something: the zone is small
    total = h.reshape(2, -1).sum(axis=1)
    assert np.all(total > 0), (name, method)
    frac = h[:, inside].sum(axis=1) / total
    assert np.all(frac > 0.95), (name, method, frac)
    # and the hottest position is in the region itself (or its one-position rim)
    peak = np.unravel_index(h[0].argmax(), spatial)
    assert _dilated(spatial, region, 1)[peak], (name, method, peak)


def test_integrated_gradients_completeness(case):
  name, model, variables, x, _ = case
  c = jax.device_get(_all_methods(model, variables, x)["completeness"])
  assert np.all(np.abs(c["delta"]) > 1e-4), c    # a non-trivial score change to explain
  assert np.all(c["ok"]), (name, c)              # |sum - delta| <= 2 % |delta| + 1e-3


def test_gradcam_moves_with_the_region():
  """The same weights looking at a different box: Grad-CAM follows the box, not a position."""
  spatial = (16, 16)
  x = jax.random.normal(jax.random.PRNGKey(2), (1, *spatial, 1))
  peaks = []
  for region in (((1, 5), (1, 5)), ((10, 15), (9, 14))):
    model = LooksAtRegion(region)
    variables = _random_variables(model, x)
    h = np.asarray(gradcam.gradcam(model, variables, x, None, "feat"))[0]
    peaks.append(np.unravel_index(h.argmax(), spatial))
    assert _dilated(spatial, region, 1)[peaks[-1]]
  assert peaks[0] != peaks[1]


def test_saliency_is_the_exact_gradient_and_checks_inputs():
  """A linear model: the saliency is its weight column, IG is x * w exactly."""
  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(2, use_bias=False)(x.reshape(x.shape[0], -1))
  model = Linear()
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 1))
  variables = _random_variables(model, x, seed=1)
  w = variables["params"]["Dense_0"]["kernel"]
  f = functools.partial(features.apply_inference, model, variables)
  s = attribution.saliency(f, x, jnp.array([1, 0, 1]))
  np.testing.assert_allclose(s[0, :, 0], w[:, 1], rtol=1e-6)
  np.testing.assert_allclose(s[1, :, 0], w[:, 0], rtol=1e-6)
  ig = attribution.integrated_gradients(f, x, 1, steps=4)
  np.testing.assert_allclose(ig[..., 0], x[..., 0] * w[:, 1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="window=0"):
    occlusion.occlusion(f, x, window=0)
  with pytest.raises(ValueError, match="unknown explanation 'lime'; valid: saliency"):
    explainers.heat_maps("lime", model, variables, x)
