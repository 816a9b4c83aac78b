"""cnnlab.data: the datasets catalogue, each paper's preprocessing, a deterministic per-host
input pipeline (building datasets from files is cnnlab.datasets' job).

    from cnnlab.data import pipeline
    cfg = pipeline.make_config("cifar10")
    batches = pipeline.train_batches(cfg, global_batch_size=128, seed=0)

Modules: datasets (catalogue, fail-fast), preprocess (per-family transforms), pipeline (the
API), memory / streaming (its two back ends), volumes (volume file readers). Importing this package does not import TensorFlow.
"""
from cnnlab.data import datasets, pipeline
from cnnlab.data.datasets import DatasetUnavailableError
from cnnlab.data.pipeline import (eval_batches, make_config, measure_throughput, num_examples,
                                  output_shape, train_batches)

__all__ = ["datasets", "pipeline", "DatasetUnavailableError", "eval_batches", "make_config",
           "measure_throughput", "num_examples", "output_shape", "train_batches"]
