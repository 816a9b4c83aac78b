"""Adding an architecture from outside cnnlab (BUILD_NOTES "Adding an architecture"): a linen
module defined in the user's own module, registered with ``cnnlab.models.register``, is then a
model name like any other — resolved, built, trained one step and checkpointed by the engine."""
import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cnnlab import models
from cnnlab.models import layers
from cnnlab.models.kernels import PLAIN, Kernels


class TinyNet(nn.Module):
  """What the engine asks of a model: num_classes, dtype, kernels; __call__(x, train)."""
  num_classes: int = 10
  width: int = 4
  dtype: object = jnp.float32
  kernels: Kernels = PLAIN

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(layers.conv, dtype=self.dtype, kernels=self.kernels)
    x = nn.relu(conv(self.width, 3, padding=1, name="conv")(x))
    x = layers.global_avg_pool(x)
    return layers.dense(self.num_classes, dtype=self.dtype, name="fc")(x)


def _register(name: str) -> None:
  if name not in models.names():
    models.register(models.ModelInfo(name=name, family="user", num_params=4 * 9 + 4 * 10 + 10,
                                     input_shape=(28, 28, 1), num_classes=10,
                                     paper="a test's own model"),
                    functools.partial(TinyNet, width=4))


def test_a_user_model_trains_one_step(mnist_data_dir, tmp_path):
  from conftest import lenet_config
  from cnnlab.training import load_trained, train_and_evaluate
  _register("user_tiny_net")
  config = lenet_config(mnist_data_dir, num_train_steps=1, eval_every_steps=0,
                        checkpoint_every_steps=1, **{"model.name": "user_tiny_net"})
  final = train_and_evaluate(config, str(tmp_path))
  assert final["step"] == 1 and np.isfinite(final["eval_loss"])
  run = load_trained(str(tmp_path))
  assert set(run.variables["params"]) == {"conv", "fc"}
  assert models.info("user_tiny_net").num_params == layers.count_params(run.variables["params"])
