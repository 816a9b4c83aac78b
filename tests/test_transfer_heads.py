"""The head rule of init_from (issue 28 item 6) and a classifier as a U-Net's encoder (issue
26): a new dataset's class k is not the source's, so the classifier is re-initialised whenever
the dataset (or its class names) differs, unless keep_head; a classifier's fc under a U-Net is
dropped and reported, every encoder array loaded by path."""
import dataclasses

import jax
import numpy as np
import pytest

from cnnlab import models
from cnnlab.config import DatasetFacts
from cnnlab.models.kernels import PLAIN
from cnnlab.training import sources, transfer


def _spec(name, class_names, keep_head=False):
  facts = DatasetFacts(name=name, family=None, num_classes=len(class_names),
                       class_names=tuple(class_names), stored_shape=None, split_sizes={},
                       train_split="train", eval_split="test")

  @dataclasses.dataclass
  class Spec:
    data: object
    transfer: object
  return Spec(data=dataclasses.make_dataclass("D", ["name", "facts"])(name, facts),
              transfer=dataclasses.make_dataclass("T", ["keep_head"])(keep_head))


def _source(dataset, names):
  return sources.Source("src", {}, frozenset(), (dataset, names))


def test_head_is_reinitialised_for_another_dataset_even_with_the_same_class_count():
  digits = [str(i) for i in range(10)]
  fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]
  fresh, why = sources.fresh_head(_spec("fashion_mnist", fashion), _source("mnist", digits))
  assert fresh and "re-initialised" in why and "mnist" in why and "fashion_mnist" in why
  fresh, why = sources.fresh_head(_spec("fashion_mnist", fashion, keep_head=True),
                                  _source("mnist", digits))
  assert not fresh and "keep_head=True" in why
  fresh, why = sources.fresh_head(_spec("mnist", digits), _source("mnist", digits))
  assert not fresh and "same classes" in why
  renamed = [f"c{i}" for i in range(10)]      # same dataset name, other class names
  assert sources.fresh_head(_spec("mnist", renamed), _source("mnist", digits))[0]


def test_merge_with_a_fresh_head_keeps_the_targets_classifier():
  model = models.create("lenet5", kernels=PLAIN)
  x = jax.numpy.zeros((1, 28, 28, 1))
  a = jax.device_get(model.init(jax.random.PRNGKey(0), x))
  b = jax.device_get(model.init(jax.random.PRNGKey(1), x))
  head = transfer.head_paths(model, (28, 28, 1))
  merged, report = transfer.merge(b, a, head=head, fresh_head=True)
  flat_m, flat_a, flat_b = (transfer.flatten(v) for v in (merged, a, b))
  assert set(report.reinitialised) == set(head) and head
  for path in flat_m:
    want = flat_b[path] if path in head else flat_a[path]
    np.testing.assert_array_equal(flat_m[path], want)


def test_classifier_becomes_a_unet_encoder_its_fc_dropped():
  x = jax.numpy.zeros((1, 64, 64, 1))
  classifier = models.create("resnet18", num_classes=10, kernels=PLAIN)
  unet = models.create("unet", encoder="resnet18", num_classes=2, kernels=PLAIN)
  source = jax.device_get(jax.jit(lambda: classifier.init(jax.random.PRNGKey(0), x))())
  target = jax.device_get(jax.jit(lambda: unet.init(jax.random.PRNGKey(1), x))())
  merged, report = transfer.merge(
      target, source, head=transfer.head_paths(unet, (64, 64, 1)),
      source_head=transfer.head_paths(classifier, (64, 64, 1)), fresh_head=True,
      new_modules=True)
  assert set(report.dropped) == {"params/fc/kernel", "params/fc/bias"}
  flat_m, flat_s = transfer.flatten(merged), transfer.flatten(source)
  for path, value in flat_s.items():
    if not path.startswith("params/fc/"):
      np.testing.assert_array_equal(flat_m[path], value)
  assert report.new and all(p.split("/")[1].startswith(("dec", "head")) for p in report.new)
  assert not any(p.startswith("params/dec") for p in report.loaded)
  assert "dropped the source's" in report.summary()
  with pytest.raises(transfer.TransferError, match="not loadable"):   # same architecture: strict
    transfer.merge(target, source, head=transfer.head_paths(unet, (64, 64, 1)),
                   source_head=transfer.head_paths(classifier, (64, 64, 1)), fresh_head=True)
