"""cnnlab.data: feeding runs — the datasets catalogue and its facts, one object per dataset
family, each paper's preprocessing and a deterministic per-host input pipeline. (Building
datasets from files is cnnlab.datasets' job.)

    from cnnlab import data
    facts = data.describe(config.dataset)          # one metadata read
    feed = data.Feed(spec.data)                    # a run's batches

Modules: datasets (catalogue, describe, fail-fast), prepared (where prepared data lives, its
metadata), families (per-family options, shapes, loading, transforms), preprocess (the
transforms), pipeline (Feed: the API), memory / streaming (its two back ends), volumes (volume
file readers). Importing this package does not import TensorFlow.
"""
from cnnlab.data import datasets, families, pipeline
from cnnlab.data.datasets import DatasetUnavailableError, describe
from cnnlab.data.pipeline import (Feed, data_spec, eval_batches, measure_throughput,
                                  train_batches)

__all__ = ["DatasetUnavailableError", "Feed", "data_spec", "datasets", "describe",
           "eval_batches", "families", "measure_throughput", "pipeline", "train_batches"]
