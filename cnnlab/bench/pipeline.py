"""The benchmark's input-pipeline figure: ``cnnlab.data.pipeline.measure_throughput`` for an
image model's dataset family at the benchmark's batch size. This is the only part of the
benchmark that needs TensorFlow / TFDS; ``benchmark --pipeline=false`` never imports it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from cnnlab.data import datasets, pipeline
from cnnlab.datasets import prepare, synthetic

from cnnlab.bench.jax_side import dataset_for


def _synthetic_data_dir(dataset: str, root: str) -> str:
  """Writes small raw files in the dataset's original format and prepares them with TFDS."""
  raw, data_dir = os.path.join(root, "raw"), os.path.join(root, "tfds")
  if dataset == "mnist":
    sums = synthetic.write_mnist(raw)
    prepare.prepare("mnist", raw, data_dir, checksums=sums, max_examples_per_split=4096)
  elif dataset == "cifar10":
    sums = synthetic.write_cifar(raw, "cifar10", n_train=4096, n_test=256)
    prepare.prepare("cifar10", raw, data_dir, checksums=sums)
  else:   # photo-like JPEGs of ImageNet's typical size, so decoding costs what it really does
    sums = synthetic.write_imagenet(raw, classes=4, per_class=24, n_val=8,
                                    size_range=(300, 500), solid=False)
    prepare.prepare("imagenet2012", raw, data_dir, checksums=sums)
  return data_dir


def pipeline_throughput(model_name: str, batch_size: int, image_size: int,
                        data_dir: str | None, num_batches: int) -> dict:
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  name, pre = dataset_for(model_name, image_size)
  if name is None:   # 1-D signals and volumes / video: no image pipeline to measure
    return {"pipeline_dataset": None, "pipeline_source": None, "pipeline_img_s": None}
  source = "synthetic"
  with tempfile.TemporaryDirectory(prefix="cnnlab_bench_") as tmp:
    use_dir = None
    try:      # the prepared dataset: data_dir, else TFDS's default data dir ($TFDS_DATA_DIR)
      datasets.builder(datasets.get(name), data_dir)
      use_dir = source = datasets.resolve_data_dir(data_dir)
    except datasets.DatasetUnavailableError:
      pass
    if use_dir is None:
      with contextlib.redirect_stdout(sys.stderr):   # TFDS prints its progress to stdout
        use_dir = _synthetic_data_dir(name, tmp)
    over = {"data_dir": use_dir}
    if pre:
      over["preprocess"] = pre
    if name == "imagenet2012":   # the streaming family: the only one with these options
      over.update(image_size=image_size, shuffle_buffer=256)
    spec = pipeline.data_spec(name, **over)
    rate = pipeline.measure_throughput(spec, global_batch_size=batch_size,
                                       num_batches=num_batches, warmup=3)
  return {"pipeline_dataset": name, "pipeline_source": source, "pipeline_img_s": rate}
