"""The datasets catalogue: what each dataset is, as data, and where its prepared files live.

Each ``DatasetInfo`` names the TFDS dataset behind a cnnlab name, its classes, stored input
shape, splits with their example counts, default train/eval splits, the preprocessing family
('mnist' | 'cifar' | 'imagenet' | 'series' | 'volume'), the per-channel mean/std used to
normalise images, and whether the split is small enough to hold decoded in host memory
(``in_memory``).

Besides the fixed entries, three kinds of names stand for datasets built from local files
(local.py), whose classes, shapes and sizes are known only once prepared:
- ``ucr/<Name>``: any dataset of the UCR/UEA time-series archive (ucr.py), input (L, C);
- ``volumes/<name>``: a researcher's folder of labelled volumes (volumes.py), (D, H, W, C);
- ``synthetic_volumes``: a small volumetric task the project writes itself on first use.
``get(name)`` gives their entry with what the name alone tells (num_classes 0, shape and split
sizes None); ``describe(name, data_dir)`` fills them in from the prepared metadata (a JSON
read, no example decoded) and is what anything needing the class count or input shape uses.

Mean/std constants (per channel, pixels scaled to [0, 1]):
- MNIST 0.13066 / 0.30811 and Fashion-MNIST 0.28604 / 0.35302: computed by us over the 60,000
  training images of the original files in ../shared/datasets (checked by
  tests/test_data_prepare.py when those files are present).
- CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616) and CIFAR-100
  (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762): the per-channel statistics of the
  50,000 training images (Krizhevsky 2009 data), as commonly reproduced.
- ImageNet (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225): torchvision's ImageNet training-set
  statistics, which its pretrained weights expect; also used for Imagenette (a subset).

Fail-fast: ``ensure_prepared`` checks, from local files only, that a dataset has been built in
the TFDS data dir before anything asks TFDS to load it. TFDS alone would try to download and
retry for minutes on a machine without network; we raise ``DatasetUnavailableError`` naming the
offline prepare command instead. (Under ``tfds.testing.mock_data``, whose
``download_and_prepare`` is a no-op, pass ``download=True``.)
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

MNIST_PREPROCESS = ("standard", "lenet1998")
# Series: 'znorm_univariate' (default) z-normalises univariate series and keeps multivariate
# ones as given — our reading of Ismail Fawaz et al. 2019's code (UCR z-normalised, UEA as is);
# 'znorm' normalises every series per channel; 'raw' none.
SERIES_PREPROCESS = ("znorm_univariate", "znorm", "raw")
VOLUME_PREPROCESS = ("zscore", "raw")      # per-volume intensity z-score, or none
SYNTHETIC_VOLUMES = "synthetic_volumes"
CIFAR_PREPROCESS = ("standard", "per_pixel_mean")
IMAGENET_PREPROCESS = ("inception", "vgg", "alexnet")


class DatasetUnavailableError(RuntimeError):
  """The dataset is not prepared in the data dir (and cnnlab never downloads on its own)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """One catalogue entry. ``splits`` maps split name -> number of examples in the full data."""
  name: str
  tfds_name: str
  family: str                       # 'mnist' | 'cifar' | 'imagenet' | 'series' | 'volume'
  num_classes: int                  # 0 while unknown (a local dataset not yet described)
  input_shape: tuple                # stored shape; None for a variable dimension
  splits: Mapping[str, int | None]
  train_split: str
  eval_split: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  in_memory: bool
  preprocess_options: tuple[str, ...]
  class_names: tuple[str, ...] | None = None
  metadata: Mapping = dataclasses.field(default_factory=dict)   # local datasets' metadata.json

  @property
  def default_preprocess(self) -> str:
    return self.preprocess_options[0]

  @property
  def image_shape(self) -> tuple:
    """The stored input shape (the name predates 1-D and 3-D inputs)."""
    return self.input_shape

  @property
  def channels(self) -> int:
    return int(self.input_shape[-1])

  @property
  def local(self) -> bool:
    """Built by cnnlab from local files (local.py) rather than by a TFDS catalogue builder."""
    return self.family in ("series", "volume")


def _mnist_like(name, mean, std):
  return DatasetInfo(name=name, tfds_name=name, family="mnist", num_classes=10,
                     input_shape=(28, 28, 1), splits={"train": 60_000, "test": 10_000},
                     train_split="train", eval_split="test", mean=(mean,), std=(std,),
                     in_memory=True, preprocess_options=MNIST_PREPROCESS)


def _cifar(name, classes, mean, std):
  return DatasetInfo(name=name, tfds_name=name, family="cifar", num_classes=classes,
                     input_shape=(32, 32, 3), splits={"train": 50_000, "test": 10_000},
                     train_split="train", eval_split="test", mean=mean, std=std,
                     in_memory=True, preprocess_options=CIFAR_PREPROCESS)


def _imagenet(name, tfds_name, classes, train, validation):
  return DatasetInfo(name=name, tfds_name=tfds_name, family="imagenet", num_classes=classes,
                     input_shape=(None, None, 3),
                     splits={"train": train, "validation": validation},
                     train_split="train", eval_split="validation", mean=_IMAGENET_MEAN,
                     std=_IMAGENET_STD, in_memory=False, preprocess_options=IMAGENET_PREPROCESS)


CATALOGUE: dict[str, DatasetInfo] = {
    info.name: info for info in (
        _mnist_like("mnist", 0.13066, 0.30811),
        _mnist_like("fashion_mnist", 0.28604, 0.35302),
        _cifar("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        _cifar("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        _imagenet("imagenet2012", "imagenet2012", 1000, 1_281_167, 50_000),
        # Imagenette v2 (TFDS's default config): 10 easy ImageNet classes, full-size JPEGs.
        _imagenet("imagenette", "imagenette/full-size-v2", 10, 9_469, 3_925),
        # The same images with the shorter side resized to 320 px (faster to decode).
        _imagenet("imagenette_320", "imagenette/320px-v2", 10, 9_469, 3_925),
    )
}


# Local families: name prefix -> (family, preprocess options).
LOCAL_PREFIXES = {"ucr": ("series", SERIES_PREPROCESS), "volumes": ("volume", VOLUME_PREPROCESS)}
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_NAME_FORMS = "ucr/<archive name> (e.g. ucr/GunPoint), volumes/<folder name>"


def names() -> list[str]:
  """The fixed names (``ucr/<Name>`` and ``volumes/<name>`` come in addition)."""
  return list(CATALOGUE) + [SYNTHETIC_VOLUMES]


def local_key(name: str) -> tuple[str, str] | None:
  """(prefix, config) of a local dataset's name — its TFDS dir is <prefix>/<config> — or None
  for a catalogue name."""
  if name == SYNTHETIC_VOLUMES:
    return "volumes", SYNTHETIC_VOLUMES
  prefix, sep, config = str(name).partition("/")
  if sep and prefix in LOCAL_PREFIXES and _LOCAL_NAME.match(config) and (
      config != SYNTHETIC_VOLUMES):
    return prefix, config
  return None


def _local_entry(name: str, prefix: str, config: str) -> DatasetInfo:
  family, options = LOCAL_PREFIXES[prefix]
  return DatasetInfo(name=name, tfds_name=f"{prefix}/{config}", family=family, num_classes=0,
                     input_shape=None, splits={"train": None, "test": None},
                     train_split="train", eval_split="test", mean=(), std=(), in_memory=True,
                     preprocess_options=options)


def get(name: str) -> DatasetInfo:
  """The catalogue entry for ``name``; ValueError listing the valid names otherwise."""
  if name in CATALOGUE:
    return CATALOGUE[name]
  key = local_key(name) if isinstance(name, str) else None
  if key is None:
    raise ValueError(f"unknown dataset {name!r}: valid datasets are "
                     f"{', '.join(names())}, {_NAME_FORMS}")
  return _local_entry(name, *key)


def is_prepared(info: DatasetInfo, data_dir: str | None) -> bool:
  """Whether ``info``'s dataset is built in the data dir (local files only)."""
  directory = resolve_data_dir(data_dir)
  if info.local:
    from cnnlab.datasets import local
    return local.is_prepared(*local_key(info.name), directory)
  import tensorflow_datasets as tfds
  return tfds.builder(info.tfds_name, data_dir=directory).is_prepared()


def describe(name: str, data_dir: str | None = None) -> DatasetInfo:
  """``get(name)`` with everything known: for a local dataset, class count and names, stored
  input shape (the longest series for unequal-length archives), split sizes and metadata, read
  from its prepared metadata files (no TensorFlow, no examples decoded). Raises
  ``DatasetUnavailableError`` when it is not prepared."""
  info = get(name)
  if not info.local:
    return info
  from cnnlab.datasets import local
  directory = resolve_data_dir(data_dir)
  key = local_key(name)
  if not local.is_prepared(*key, directory):
    raise _unavailable(info, data_dir, directory)
  found = local.read_info(*key, directory)
  meta = found["metadata"]
  if info.family == "series":
    shape = (int(meta["max_length"]), int(meta["channels"]))
  else:
    shape = tuple(int(d) for d in meta["shape"])
  return dataclasses.replace(info, num_classes=len(found["class_names"]), input_shape=shape,
                             splits=found["splits"], class_names=tuple(found["class_names"]),
                             metadata=meta)


def check_split(info: DatasetInfo, split: str) -> str:
  """A split name, optionally with TFDS's slicing (``train[:1000]``, ``train[10%:]``) to
  train or evaluate on part of it."""
  base = split.split("[", 1)[0] if isinstance(split, str) else split
  if base not in info.splits or (isinstance(split, str) and "[" in split and
                                 not re.fullmatch(r"\w+\[[-0-9%:]*\]", split)):
    raise ValueError(f"unknown split {split!r} for dataset {info.name}: valid splits are "
                     f"{', '.join(info.splits)}")
  return split


def check_preprocess(info: DatasetInfo, preprocess: str | None) -> str:
  preprocess = preprocess or info.default_preprocess
  if preprocess not in info.preprocess_options:
    raise ValueError(f"unknown preprocess {preprocess!r} for dataset {info.name}: valid "
                     f"options are {', '.join(info.preprocess_options)}")
  return preprocess


def resolve_data_dir(data_dir: str | None) -> str:
  """An explicit data_dir wins; else $TFDS_DATA_DIR; else TFDS's default (~/tensorflow_datasets)."""
  if data_dir:
    return os.path.expanduser(str(data_dir))
  from tensorflow_datasets.core import constants
  return os.path.expanduser(constants.get_default_data_dir())


def prepare_command(name: str, data_dir: str | None = None) -> str:
  cmd = f"python -m experiments.prepare_data --dataset={name}"
  cmd += "" if name == SYNTHETIC_VOLUMES else " --source_dir=DIR"
  return cmd + (f" --data_dir={data_dir}" if data_dir else "")


def _unavailable(info: DatasetInfo, data_dir, directory) -> DatasetUnavailableError:
  how = ("it is written on first use by experiments/train.py, or now with: "
         if info.name == SYNTHETIC_VOLUMES else "build it offline from the original files with: ")
  extra = "" if info.local else " (or set download=True to let TFDS download it)"
  return DatasetUnavailableError(
      f"dataset {info.name!r} (TFDS {info.tfds_name}) is not prepared in {directory}; {how}"
      f"{prepare_command(info.name, data_dir and directory)}{extra}")


def builder(info: DatasetInfo, data_dir: str | None, *, download: bool = False):
  """TFDS builder for ``info`` in ``data_dir``, after the fail-fast check (local files only).

  ``download=True`` lets TFDS fetch and build the dataset itself when it is missing (needs
  network); by default a missing dataset raises ``DatasetUnavailableError`` at once. Local
  datasets (ucr/..., volumes/...) are opened read-only from their directory.
  """
  directory = resolve_data_dir(data_dir)
  if info.local:
    from cnnlab.datasets import local
    if not local.is_prepared(*local_key(info.name), directory):
      raise _unavailable(info, data_dir, directory)
    return local.open_builder(*local_key(info.name), directory)
  import tensorflow_datasets as tfds
  b = tfds.builder(info.tfds_name, data_dir=directory)
  if b.is_prepared():
    return b
  if download:
    b.download_and_prepare()
    return b
  raise _unavailable(info, data_dir, directory)
