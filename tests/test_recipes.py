"""Every recipe in experiments/configs starts and trains a few steps end to end on TFDS's mock
data (random examples with the real features), with the recipe's own model, optimizer,
schedule and preprocessing; only batch, steps and — for ImageNet — image size are shrunk."""
import importlib

import numpy as np
import pytest

from conftest import spec_of

# One run per recipe file (its default argument where that is cheap enough for a 2-core CI);
# every variant is still validated in full below.
RECIPES = [
    ("lenet5_mnist", None, None),
    ("lenet5_1998_mnist", None, None),
    ("lenet5_fashion_mnist", None, None),
    ("resnet20_cifar10", "20", None),
    ("alexnet_imagenet", "alexnet", 64),
    ("vgg16_imagenet", "16", 32),
    ("googlenet_imagenet", None, 64),
    ("resnet50_imagenet", "18,cosine", 64),
]
VARIANTS = RECIPES + [("resnet20_cifar10", "110", None), ("alexnet_imagenet", "alexnet_2012", 227),
                      ("resnet50_imagenet", "50,classic", 64), ("vgg16_imagenet", "19_bn", 32),
                      ("lenet5_1998_mnist", "sdlm", None),
                      ("lenet5_1998_mnist", "sdlm_paper_eta", None)]


@pytest.mark.slow
@pytest.mark.parametrize("recipe,arg,image_size", RECIPES,
                         ids=[f"{r}:{a}" if a else r for r, a, _ in RECIPES])
def test_recipe_runs_on_mock_data(recipe, arg, image_size, tmp_path):
  import tensorflow_datasets as tfds
  from cnnlab.training import train_and_evaluate
  module = importlib.import_module(f"experiments.configs.{recipe}")
  assert module.__doc__ and "python -m experiments.train" in module.__doc__
  config = module.get_config(arg) if arg else module.get_config()
  config.batch_size = 2
  config.num_train_steps = 2
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  config.compilation_cache_dir = ""
  config.dataset.download = True   # under mock_data TFDS's "download" is a no-op
  if image_size:
    config.dataset.image_size = image_size
    config.dataset.eval_resize = image_size + 8
    config.dataset.shuffle_buffer = 8
  with tfds.testing.mock_data(num_examples=6):
    final = train_and_evaluate(config, str(tmp_path))
  assert final["step"] == 2 and final["eval_count"] == 6
  assert np.isfinite(final["eval_loss"])


@pytest.mark.parametrize("recipe,arg", [(r, a) for r, a, _ in VARIANTS])
def test_recipe_validates(recipe, arg):
  """The full-size recipe passes validation as written (model, data, optimizer, schedule);
  the split size is the catalogue's (no data is read). The model's input check, no longer in
  the pure resolve, runs where the model is built (traced, not compiled)."""
  from cnnlab.data import datasets
  from cnnlab.training import builders
  module = importlib.import_module(f"experiments.configs.{recipe}")
  config = module.get_config(arg) if arg else module.get_config()
  info = datasets.get(config.dataset.name)
  spec = spec_of(config, n=info.splits[info.train_split])
  model = builders.model(spec.model)
  assert spec.model.name == config.model.name and spec.loop.total_steps > 0
  assert model.num_classes == spec.model.num_classes == info.num_classes


def test_resnet_paper_numbers_are_one_set():
  """The recipe's table of the paper's ResNet errors and the registry's model cards agree
  (one set of numbers: a change in one place without the other fails here)."""
  from cnnlab import models
  from experiments.configs import resnet50_imagenet as r
  assert set(r.RESNET_PAPER_ERROR) == {18, 34, 50, 101, 152}
  for depth, (top1, top5) in r.RESNET_PAPER_ERROR.items():
    card = models.info(f"resnet{depth}").paper_result
    assert f"{top1:.2f}%" in card, (depth, card)
    if top5 is not None:
      assert f"{top5:.2f}%" in card, (depth, card)
  assert "Table 3, ResNet-34 B" in models.info("resnet34").paper_result
