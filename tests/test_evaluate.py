"""experiments/evaluate.py: a workdir's checkpoint, or torchvision weights, on a split —
top-1, top-5, loss, per-class accuracy and the confusion matrix written to the workdir."""
import json
import os

import numpy as np
import pytest

from conftest import lenet_config


def test_evaluate_checkpoint_writes_all_metrics(mnist_data_dir, tmp_path):
  from cnnlab.training import train_and_evaluate
  from experiments import evaluate
  config = lenet_config(mnist_data_dir, num_train_steps=6, eval_every_steps=6)
  final = train_and_evaluate(config, str(tmp_path))
  result = evaluate.evaluate(config, str(tmp_path), checkpoint="latest", split="test")
  saved = json.load(open(tmp_path / "eval_test.json"))
  assert saved["eval_count"] == 1024 == result["eval_count"]
  assert saved["eval_accuracy"] == pytest.approx(final["eval_accuracy"], abs=1e-6)
  confusion = np.array(saved["confusion_matrix"])
  assert confusion.shape == (10, 10) and confusion.sum() == 1024
  assert np.trace(confusion) / 1024 == pytest.approx(saved["eval_accuracy"], abs=1e-6)
  per_class = np.diag(confusion) / confusion.sum(axis=1)
  np.testing.assert_allclose(saved["per_class_accuracy"], per_class, atol=1e-9)
  # top-5 recomputed independently: the restored model's logits on the whole test split.
  from cnnlab.data import pipeline
  from cnnlab.training import load_trained
  t = load_trained(str(tmp_path), "latest")
  hits = count = 0
  for b in pipeline.eval_batches(t.spec.data, split="test", global_batch_size=256):
    logits = np.asarray(t.model.apply(t.variables, b["image"], train=False))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    mask = np.asarray(b["mask"], bool)
    hits += int(np.sum(np.any(top5 == np.asarray(b["label"])[:, None], axis=1) & mask))
    count += int(mask.sum())
  assert count == 1024 and saved["eval_top5"] == pytest.approx(hits / count, abs=1e-6)
  assert saved["eval_top5"] < 1.0 or saved["eval_accuracy"] > 0.5   # not a vacuous 100 %
  from cnnlab.training import ConfigError
  with pytest.raises(ConfigError, match="--checkpoint='99'"):
    evaluate.evaluate(config, str(tmp_path), checkpoint="99")


def test_evaluate_torchvision_weights(tmp_path):
  """A torchvision-layout ResNet-18 state dict (.safetensors, synthetic weights) evaluated on
  mock ImageNet through the same code path."""
  import tensorflow_datasets as tfds
  from safetensors.numpy import save_file
  import make_torchvision_fixtures as fx
  from experiments import evaluate
  from experiments.configs import resnet50_imagenet
  fixture = fx.load_fixture(os.path.join(fx.FIXTURE_DIR, "resnet18_97.npz"))
  state_dict = fx.synthetic_state_dict(fixture["weight_seed"], fixture["keys"], fixture["shapes"])
  path = str(tmp_path / "resnet18.safetensors")
  save_file(state_dict, path)
  config = resnet50_imagenet.get_config("18,classic")
  config.batch_size = 4
  config.dataset.image_size = 64
  config.dataset.eval_resize = 72
  config.compilation_cache_dir = ""
  config.dataset.download = True   # under mock_data TFDS's "download" is a no-op
  with tfds.testing.mock_data(num_examples=10):
    result = evaluate.evaluate(config, str(tmp_path), torchvision_weights=path)
  assert result["eval_count"] == 10 and result["source"] == path
  confusion = np.array(json.load(open(tmp_path / "eval_validation.json"))["confusion_matrix"])
  assert confusion.shape == (1000, 1000) and confusion.sum() == 10
