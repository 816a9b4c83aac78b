"""The picture functions of cnnlab.explain (formerly re-exported as cnnlab.viz) on small
models with random parameters: layer tracing, feature maps, filters, curves, confusion
matrices: PNGs of the documented pixel size."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.data.datasets import CLASS_NAMES
from cnnlab.explain import features, figures, grids, training_plots


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _grid_px(n, cell, dpi=100):
  rows, cols = figures.grid_shape(n)
  return round(cols * cell * dpi), round((rows * cell + figures.HEADER_INCHES) * dpi)


def _random_variables(model, shape, seed=0):
  """Random parameters without running the initialisers (compiling those is the slow part)."""
  rs = np.random.RandomState(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
  return jax.tree.map(lambda s: (0.2 * rs.randn(*s.shape)).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def lenet():
  model = models.create("lenet5")
  variables = _random_variables(model, (28, 28, 1))
  image = np.random.RandomState(0).rand(28, 28, 1).astype(np.float32)
  return model, variables, image


def test_trace_layers_in_call_order(lenet):
  model, variables, image = lenet
  layers = features.trace(model, variables, image[None])
  assert [(l.name, l.kind, l.output.shape) for l in layers] == [
      # lenet5's conv blocks are fused conv+ReLU+pool modules (a CPU speed-up), so each
      # block's output is the pooled map.
      ("conv1", "ConvReluPool", (1, 14, 14, 6)), ("conv2", "ConvReluPool", (1, 5, 5, 16)),
      ("fc1", "Dense", (1, 120)), ("fc2", "Dense", (1, 84)), ("fc3", "Dense", (1, 10))]
  logits = model.apply(variables, image[None])
  np.testing.assert_allclose(layers[-1].output, logits, rtol=1e-6)


def test_feature_maps_have_the_layers_channels(lenet, tmp_path):
  model, variables, image = lenet
  name, maps = features.feature_maps(model, variables, image)
  assert name == "conv1" and maps.shape == (14, 14, 6)     # fused conv+ReLU+pool block
  name, maps = features.feature_maps(model, variables, image[None], "conv2")
  assert name == "conv2" and maps.shape == (5, 5, 16)
  with pytest.raises(ValueError, match="valid: conv1, conv2"):
    features.feature_maps(model, variables, image, "fc1")
  path = grids.plot_feature_maps(maps, str(tmp_path / "fm.png"), image=image, title="conv2")
  assert _png_size(path) == _grid_px(16 + 1, 1.0)        # 16 maps and the input: 5 x 4 grid
  path = grids.plot_feature_maps(maps, str(tmp_path / "fm8.png"), max_maps=8, cell_inches=0.5)
  assert _png_size(path) == _grid_px(8, 0.5)


def test_paper_lenet_partial_conv_and_first_kernel(tmp_path):
  model = models.create("lenet5_1998")
  variables = _random_variables(model, (32, 32, 1), seed=1)
  image = np.zeros((32, 32, 1), np.float32)
  assert features.feature_maps(model, variables, image, "c3")[1].shape == (10, 10, 16)
  name, kernel = features.first_conv_kernel(model, variables, (32, 32, 1))
  assert name == "c1"
  np.testing.assert_array_equal(kernel, variables["params"]["c1"]["kernel"])
  path = grids.plot_filters(kernel, str(tmp_path / "filters.png"), title="c1")
  assert _png_size(path) == _grid_px(6, 0.8) == (240, 210)


class _TwoConvs(nn.Module):
  """The first conv called sorts last by name, as a pytree operation would order it."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), name="z_first")(x)
    return nn.Conv(5, (3, 3), name="a_second")(x)


def test_first_conv_is_found_by_call_order_not_name(tmp_path):
  model = _TwoConvs()
  variables = _random_variables(model, (8, 8, 3))   # after tree.map: a_second sorts first
  assert list(variables["params"]) == ["a_second", "z_first"]
  name, kernel = features.first_conv_kernel(model, variables, (8, 8, 3))
  assert name == "z_first" and kernel.shape == (3, 3, 3, 4)
  path = grids.plot_filters(kernel, str(tmp_path / "rgb.png"))   # 3 input channels: RGB panels
  assert _png_size(path) == _grid_px(4, 0.8)


def _rows(n_steps, start, loss0):
  rows = [{"step": s, "time": start + s, "train_loss": loss0 / s, "train_accuracy": 1 - 1 / s}
          for s in range(1, n_steps + 1)]
  rows += [{"step": s, "time": start + s + 0.5, "eval_loss": 2 * loss0 / s,
            "eval_accuracy": 1 - 2 / s} for s in (5, 10)]
  return rows


def test_curves_and_series(tmp_path):
  rows = _rows(10, 100.0, 1.0) + [{"step": 10, "time": 130.0, "train_loss": 0.05}]  # resumed
  steps, times, values = training_plots.series(rows, "train_loss")
  assert list(steps) == list(range(1, 11)) and values[-1] == 0.05 and times[-1] == 130.0
  clock = training_plots.run_clock(rows, [{"start_time": 90.0, "end_time": 105.0},
                                          {"start_time": 125.0}])
  assert clock(100.0) == 10.0 and clock(130.0) == 20.0
  path = training_plots.plot_curves({"seed0": rows, "seed1": _rows(10, 500.0, 2.0)},
                                    str(tmp_path / "curves.png"), title="t", target=0.9)
  assert _png_size(path) == (1200, 800)


def test_confusion(tmp_path):
  cm = np.eye(10, dtype=int) * 50 + 1
  path = training_plots.plot_confusion(cm, str(tmp_path / "c.png"),
                                       class_names=CLASS_NAMES["fashion_mnist"], title="fm")
  assert _png_size(path) == (700, 700)
  path = training_plots.plot_confusion(np.ones((100, 100)), str(tmp_path / "c100.png"),
                                       size=5, dpi=80)
  assert _png_size(path) == (400, 400)
  with pytest.raises(ValueError, match="square"):
    training_plots.plot_confusion(np.ones((3, 4)), str(tmp_path / "bad.png"))
  with pytest.raises(ValueError, match="2 names for 10 classes"):
    training_plots.plot_confusion(cm, str(tmp_path / "bad.png"), class_names=["a", "b"])


# experiments/visualize.py on a trained workdir: tests/test_predict.py (one shared workdir).
