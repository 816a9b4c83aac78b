"""TFDS datasets whose examples cnnlab produces itself from local files (no download step).

The UCR/UEA archive (ucr.py) and folders of volumes (volumes.py) are not TFDS catalogue
datasets, and each archive dataset or folder is its own dataset. They are written as ordinary
TFDS datasets all the same — ``<data_dir>/<family>/<config>/1.0.0/`` with TFRecord shards,
dataset_info.json and features.json — by one unregistered ``GeneratorBasedBuilder`` per family,
configured per dataset (``LocalSpec``), and read back with ``tfds.builder_from_directory``,
which needs neither this module nor the original files. Examples are stored in generation
order (``disable_shuffling``), so the stored order of a split is the order of its source.

What the pipeline needs beyond TFDS's own metadata (class names stay in the ClassLabel
feature) is kept in the dataset's ``metadata.json`` (TFDS's MetadataDict), e.g. the longest
series of an unequal-length archive dataset or the sha256 of each source file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping

from cnnlab.data.prepared import LOCAL_VERSION, local_dir, local_is_prepared

_CLASSES: dict[str, type] = {}


@dataclasses.dataclass(frozen=True)
class LocalSpec:
  """What to build: ``splits`` maps split name -> a function returning its examples (dicts
  matching ``features``); ``metadata`` must be JSON-serialisable."""
  family: str
  config: str
  features: Mapping[str, Any]
  splits: Mapping[str, Callable[[], Iterable[dict]]]
  metadata: Mapping[str, Any]
  description: str






def _builder_class(family: str, config: str, description: str) -> type:
  """An unregistered builder class for one dataset (its one BuilderConfig declared, so TFDS
  does not warn about a custom configuration)."""
  key = (family, config)
  if key in _CLASSES:
    return _CLASSES[key]
  import tensorflow_datasets as tfds

  class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One cnnlab-built dataset of ``family``; configured by a LocalSpec."""
    name = family
    VERSION = tfds.core.Version(LOCAL_VERSION)
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config, description=description)]

    def __init__(self, *, spec: LocalSpec, **kwargs):
      self._spec = spec
      super().__init__(config=spec.config, **kwargs)

    def _log_download_bytes(self):   # TFDS's "Downloading and preparing ..." banner
      pass

    def _log_download_done(self):
      pass

    def _info(self):
      return self.dataset_info_from_configs(
          description=self._spec.description,
          features=tfds.features.FeaturesDict(dict(self._spec.features)),
          metadata=tfds.core.MetadataDict(dict(self._spec.metadata)),
          disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(make) for split, make in self._spec.splits.items()}

    def _generate_examples(self, make):
      for i, example in enumerate(make()):
        yield i, example

  _CLASSES[key] = LocalBuilder
  return LocalBuilder


@contextlib.contextmanager
def quiet_tfds(builder=None):
  """TFDS's progress bars off for the block (restored after): a build shows no nested bars.
  With ``builder`` (a stock TFDS builder, e.g. MNIST's), its "Downloading and preparing ..." /
  "... prepared to ..." banner is silenced too, as LocalBuilder's always is: cnnlab prints its
  own one line for a first-use build."""
  if builder is not None:
    builder._log_download_bytes = builder._log_download_done = lambda: None
  from tensorflow_datasets.core.utils import tqdm_utils
  import tensorflow_datasets as tfds
  before = bool(getattr(tqdm_utils, "_active", True))
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(before)


def build(spec: LocalSpec, data_dir: str, *, overwrite: bool = False) -> str:
  """Writes ``spec``'s dataset into ``data_dir`` (unless already there); returns its dir.

  TFDS writes into a temporary directory and renames it at the end, so an interrupted build
  leaves no half-written dataset that would look prepared.
  """
  import tensorflow_datasets as tfds
  path = local_dir(spec.family, spec.config, data_dir)
  if local_is_prepared(spec.family, spec.config, data_dir) and not overwrite:
    return path
  os.makedirs(data_dir, exist_ok=True)
  builder = _builder_class(spec.family, spec.config, spec.description)(spec=spec,
                                                                       data_dir=data_dir)
  if overwrite and os.path.isdir(path):   # asked for: the old build goes first
    import shutil
    shutil.rmtree(path)
  with quiet_tfds():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
        try_download_gcs=False))
  return path
