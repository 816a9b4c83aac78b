"""The datasets catalogue: what each dataset is, as data, and where its prepared files live.

Each ``DatasetInfo`` names the TFDS dataset behind a cnnlab name, its classes (count and
names), stored input shape, splits with their example counts, default train/eval splits, its
family ('mnist' | 'cifar' | 'imagenet' | 'series' | 'volume'; the family object in
cnnlab.data.families owns the options, checks, input shape, loading and transforms), and the
per-channel mean/std used to normalise images.

Besides the fixed entries, three kinds of names stand for datasets built from local files
(local.py), whose classes, shapes and sizes are known only once prepared:
- ``ucr/<Name>``: any dataset of the UCR/UEA time-series archive (ucr.py), input (L, C);
- ``volumes/<name>``: a researcher's folder of labelled volumes (volumes.py), (D, H, W, C);
- ``synthetic_volumes``: a small volumetric task the project writes itself on first use.
``get(name)`` gives their entry with what the name alone tells (num_classes 0, shape and split
sizes None). ``describe(dataset_config)`` is what a run uses: ONE read of the prepared
metadata (split sizes, class names; for local datasets their metadata.json), no example
decoded, returned as ``cnnlab.config.DatasetFacts`` with the sizes of the splits and slices the
config names.

Mean/std constants (per channel, pixels scaled to [0, 1]):
- MNIST 0.13066 / 0.30811 and Fashion-MNIST 0.28604 / 0.35302: computed by us over the 60,000
  training images of the original files in ../shared/datasets (checked by
  tests/test_data_prepare.py when those files are present).
- CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616) and CIFAR-100
  (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762): the per-channel statistics of the
  50,000 training images (Krizhevsky 2009 data), as commonly reproduced.
- ImageNet (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225): torchvision's ImageNet training-set
  statistics, which its pretrained weights expect; also used for Imagenette (a subset).

Fail-fast: ``describe`` and ``builder`` check, from local files only, that a dataset has been
built in the TFDS data dir before anything asks TFDS to load it. TFDS alone would try to
download and retry for minutes on a machine without network; we raise ``DatasetUnavailableError`` naming the
offline prepare command instead. (Under ``tfds.testing.mock_data``, whose
``download_and_prepare`` is a no-op, pass ``download=True``.)
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

from cnnlab.config import DatasetFacts
from cnnlab.data import families, prepared
from cnnlab.data.prepared import resolve_data_dir

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
SYNTHETIC_VOLUMES = "synthetic_volumes"
SYNTHETIC_PHANTOMS = "synthetic_phantoms"
ISBI2012 = "isbi2012_em"
# Local datasets with a fixed name: name -> (prefix, config) of their TFDS dir.
LOCAL_FIXED = {SYNTHETIC_VOLUMES: ("volumes", SYNTHETIC_VOLUMES),
               SYNTHETIC_PHANTOMS: ("segvolumes", SYNTHETIC_PHANTOMS),
               ISBI2012: ("segmentation", ISBI2012)}
# Written by cnnlab itself on first use (no source files).
GENERATED = (SYNTHETIC_VOLUMES, SYNTHETIC_PHANTOMS)

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}


class DatasetUnavailableError(RuntimeError):
  """The dataset is not prepared in the data dir (and cnnlab never downloads on its own)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """One catalogue entry. ``splits`` maps split name -> number of examples in the full data."""
  name: str
  tfds_name: str
  family: str                       # a cnnlab.data.families name
  num_classes: int                  # 0 while unknown (a local dataset not yet described)
  input_shape: tuple | None         # stored shape; None for a variable dimension
  splits: Mapping[str, int | None]
  train_split: str
  eval_split: str
  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()
  class_names: tuple[str, ...] | None = None
  metadata: Mapping = dataclasses.field(default_factory=dict)   # local datasets' metadata.json

  @property
  def local(self) -> bool:
    """Built by cnnlab from local files (cnnlab.datasets) rather than a TFDS catalogue builder."""
    return local_key(self.name) is not None

  @property
  def preprocess_options(self) -> tuple[str, ...]:
    return families.get(self.family).preprocess_options


def _mnist_like(name, mean, std):
  return DatasetInfo(name=name, tfds_name=name, family="mnist", num_classes=10,
                     input_shape=(28, 28, 1), splits={"train": 60_000, "test": 10_000},
                     train_split="train", eval_split="test", mean=(mean,), std=(std,),
                     class_names=CLASS_NAMES[name])


def _cifar(name, classes, mean, std):
  return DatasetInfo(name=name, tfds_name=name, family="cifar", num_classes=classes,
                     input_shape=(32, 32, 3), splits={"train": 50_000, "test": 10_000},
                     train_split="train", eval_split="test", mean=mean, std=std,
                     class_names=CLASS_NAMES.get(name))


def _imagenet(name, tfds_name, classes, train, validation):
  return DatasetInfo(name=name, tfds_name=tfds_name, family="imagenet", num_classes=classes,
                     input_shape=(None, None, 3),
                     splits={"train": train, "validation": validation},
                     train_split="train", eval_split="validation", mean=_IMAGENET_MEAN,
                     std=_IMAGENET_STD)


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

# Local datasets: name prefix -> family.
LOCAL_PREFIXES = {"ucr": "series", "volumes": "volume", "segmentation": "segmentation",
                  "segvolumes": "segvolume"}
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_NAME_FORMS = ("ucr/<archive name> (e.g. ucr/GunPoint), volumes/<folder name>, "
               "segmentation/<folder name>, segvolumes/<folder name>")


def names() -> list[str]:
  """The fixed names (``ucr/<Name>``, ``volumes/<name>``, ``segmentation/<name>`` and
  ``segvolumes/<name>`` come in addition)."""
  return list(CATALOGUE) + list(LOCAL_FIXED)


def local_key(name: str) -> tuple[str, str] | None:
  """(prefix, config) of a local dataset's name — its TFDS dir is <prefix>/<config> — or None
  for a catalogue name."""
  if name in LOCAL_FIXED:
    return LOCAL_FIXED[name]
  prefix, sep, config = str(name).partition("/")
  if sep and prefix in LOCAL_PREFIXES and _LOCAL_NAME.match(config) and (
      config not in {c for _, c in LOCAL_FIXED.values()}):
    return prefix, config
  return None


def get(name: str) -> DatasetInfo:
  """The catalogue entry for ``name``; ValueError listing the valid names otherwise."""
  if name in CATALOGUE:
    return CATALOGUE[name]
  key = local_key(name) if isinstance(name, str) else None
  if key is None:
    raise ValueError(f"unknown dataset {name!r}: valid datasets are "
                     f"{', '.join(names())}, {_NAME_FORMS}")
  return DatasetInfo(name=name, tfds_name="/".join(key), family=LOCAL_PREFIXES[key[0]],
                     num_classes=0, input_shape=None, splits={"train": None, "test": None},
                     train_split="train", eval_split="test")


def is_prepared(info: DatasetInfo, data_dir: str | None) -> bool:
  """Whether ``info``'s dataset is built in the data dir (local files only)."""
  directory = resolve_data_dir(data_dir)
  if info.local:
    return prepared.local_is_prepared(*local_key(info.name), directory)
  return prepared.catalogue_builder(info.tfds_name, directory).is_prepared()


def _field(dataset, key):
  if isinstance(dataset, str):
    return dataset if key == "name" else None
  return dataset.get(key, None)


def describe(dataset, *, require_prepared: bool = True) -> DatasetFacts:
  """The facts a run resolves against (``cnnlab.config.resolve``), from ONE metadata read:
  ``dataset`` is a config's dataset section (or a bare name). Split sizes come from the
  prepared metadata — the catalogue's for a TFDS dataset that is not prepared when
  ``require_prepared`` is False (validating a recipe) or TFDS may download it — and every
  split or slice the section names is sized too. Raises ValueError for an unknown name,
  ``DatasetUnavailableError`` for a dataset that is not prepared."""
  info = get(_field(dataset, "name"))
  data_dir = _field(dataset, "data_dir")
  directory = resolve_data_dir(data_dir)
  if info.local:
    info = _local_info(info, data_dir, directory)
  else:
    info = _catalogue_info(info, data_dir, directory, require_prepared
                           and not _field(dataset, "download"))
  sizes = {k: int(v) for k, v in info.splits.items() if v is not None}
  for key in ("train_split", "eval_split"):
    split = _field(dataset, key)
    if split and split not in sizes and prepared.slice_size(split, sizes) is not None:
      sizes[split] = prepared.slice_size(split, sizes)
  family = families.get(info.family)
  return DatasetFacts(name=info.name, family=family, num_classes=info.num_classes,
                      class_names=info.class_names, stored_shape=info.input_shape,
                      split_sizes=sizes, train_split=info.train_split,
                      eval_split=info.eval_split, task=family.task, info=info)


def _local_info(info: DatasetInfo, data_dir, directory: str) -> DatasetInfo:
  key = local_key(info.name)
  if not prepared.local_is_prepared(*key, directory):
    raise _unavailable(info, data_dir, directory)
  found = prepared.read_local(*key, directory)
  meta = found["metadata"]
  shape = families.get(info.family).stored_shape(meta)
  names = found["class_names"] or meta.get("class_names") or []
  eval_split = "validation" if "validation" in found["splits"] else info.eval_split
  return dataclasses.replace(info, num_classes=len(names), input_shape=shape,
                             splits=found["splits"], class_names=tuple(names),
                             eval_split=eval_split, metadata=meta)


def _catalogue_info(info: DatasetInfo, data_dir, directory: str, required: bool):
  builder = None
  if os.path.isdir(os.path.join(directory, info.tfds_name.split("/")[0])):
    builder = prepared.catalogue_builder(info.tfds_name, directory)
  if builder is None or not builder.is_prepared():
    if required:
      raise _unavailable(info, data_dir, directory)
    return info
  names = prepared.builder_class_names(builder)
  return dataclasses.replace(info, splits=prepared.builder_split_sizes(builder),
                             class_names=info.class_names or (tuple(names) if names else None))


def prepare_command(name: str, data_dir: str | None = None) -> str:
  cmd = f"python -m experiments.prepare_data --dataset={name}"
  cmd += "" if name in GENERATED else " --source_dir=DIR"
  return cmd + (f" --data_dir={data_dir}" if data_dir else "")


def _unavailable(info: DatasetInfo, data_dir, directory) -> DatasetUnavailableError:
  how = ("it is written on first use by experiments/train.py, or now with: "
         if info.name in GENERATED else "build it offline from the original files with: ")
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
    key = local_key(info.name)
    if not prepared.local_is_prepared(*key, directory):
      raise _unavailable(info, data_dir, directory)
    return prepared.open_local(*key, directory)
  b = prepared.catalogue_builder(info.tfds_name, directory)
  if b.is_prepared():
    return b
  if download:
    b.download_and_prepare()
    return b
  raise _unavailable(info, data_dir, directory)
