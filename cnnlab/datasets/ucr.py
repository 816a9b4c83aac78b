"""The UCR/UEA time-series classification archive: the ``.ts`` reader and its TFDS build.

    python -m experiments.prepare_data --dataset=ucr/GunPoint --source_dir=DIR

``DIR`` holds ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts`` as the archive ships them (any
dataset of the archive, univariate or multivariate). The build is the TFDS dataset
``<data_dir>/ucr/<Name>/1.0.0`` with the archive's own split (train / test, never mixed) and
features ``series`` (float32 [length, channels], the length varying per example when the
dataset has unequal lengths), ``label`` (ClassLabel) and ``length`` (the series' own length).

The ``.ts`` format (sktime / aeon): ``#`` comment lines; ``@`` header lines
(``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``, ``@dimensions``,
``@equalLength``, ``@seriesLength``, ``@classLabel true <labels...>``) up to ``@data``; then one
series per line: each dimension's values comma-separated, dimensions separated by ``:``, the
class label last. ``?`` (or ``NaN``) is a missing value, stored as NaN. Time-stamped series
(``@timeStamps true``) and regression files (no class labels) are rejected with the reason.
A line that does not fit raises ``TsFormatError("<file>:<line>: <what is wrong>")``.

Class labels are strings of any form; they are mapped to 0..K-1 in the order the
``@classLabel`` header of the train file declares them (the archive's own order: "1 2" ->
0, 1; "Standing Running Walking Badminton" -> 0..3), or, when the header lists none, sorted
(numerically when every label is a number). The names are kept in the ClassLabel feature, so
``class_names[k]`` is the archive's label of class k.

Unequal lengths: stored as they are (with ``length``); the pipeline makes them one length (the
dataset's longest by default, ``metadata.json``: ``max_length``) as ``dataset.series_lengths``
says (cnnlab/data/series_prep.py): univariate series by default as the UCR archive's adjusted
files (missing values interpolated linearly, noise padded at the end, the padded series
z-normalised as a whole), multivariate ones by default by cubic resampling (the published
table's code, dl-4-tsc's ``transform_to_same_length``); ``'resample'`` is linear interpolation.

Checksums: the sha256 of the ten files in ../shared/datasets/ucr are known (its README) and
verified; any other archive file is taken as it is and its sha256 recorded in metadata.json.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re

import numpy as np

from cnnlab.datasets import local

FAMILY = "ucr"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")

KNOWN_SHA256 = {
    "GunPoint_TRAIN.ts": "f842401779fd9800d247d8b33121a1a4643710a19b24917dbdd9a060ca8630d5",
    "GunPoint_TEST.ts": "79332750788a6227b325b96bd0d70130c8eb707b9731f8d7dec62b7a7d36017e",
    "ItalyPowerDemand_TRAIN.ts":
        "341269cb7e6cef96846b30e774580beec79addb93848ba360145219115a74b7c",
    "ItalyPowerDemand_TEST.ts":
        "26122451f87dd0387ef90b18bc8a86c041371b8a1c068004922b939971247144",
    "ArrowHead_TRAIN.ts": "a83c470aaf611a5f5284377cce27a5fc9f6292bc3d110257b0fd4905ced5ee72",
    "ArrowHead_TEST.ts": "5417dab42626d41df5e435bb22458c2df40dfad4bcd3b59559bbe72e20e84904",
    "BasicMotions_TRAIN.ts": "8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6",
    "BasicMotions_TEST.ts": "79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc",
    "JapaneseVowels_TRAIN.ts": "68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd",
    "JapaneseVowels_TEST.ts": "b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462",
}


class TsFormatError(ValueError):
  """A ``.ts`` file that cannot be read; the message is one line naming file and line."""


@dataclasses.dataclass
class TsFile:
  """One parsed ``.ts`` file: ``series[i]`` is float32 [length_i, channels], read from line
  ``lines[i]`` of the file."""
  path: str
  header: dict
  series: list
  labels: list
  lines: list

  @property
  def channels(self) -> int:
    return int(self.series[0].shape[1]) if self.series else int(self.header.get("dimensions", 0))

  @property
  def declared_labels(self) -> tuple[str, ...]:
    return tuple(self.header.get("classlabel", ()))


def _bool(path, lineno, key, value) -> bool:
  if value.lower() not in ("true", "false"):
    raise TsFormatError(f"{path}:{lineno}: @{key} {value!r} is not true or false")
  return value.lower() == "true"


def _header(path, lineno, line, header) -> None:
  key, _, rest = line[1:].partition(" ")
  key, rest = key.lower(), rest.strip()
  if key in ("timestamps", "missing", "univariate", "equallength", "targetlabel"):
    header[key] = _bool(path, lineno, key, rest.split()[0] if rest else "")
  elif key in ("dimensions", "serieslength"):
    if not rest.isdigit() or int(rest) < 1:
      raise TsFormatError(f"{path}:{lineno}: @{key} {rest!r} is not a positive integer")
    header[key] = int(rest)
  elif key == "classlabel":
    words = rest.split()
    if not words or not _bool(path, lineno, key, words[0]):
      raise TsFormatError(f"{path}:{lineno}: @classLabel false: the file has no class labels "
                          "(a regression or unlabelled problem); only classification is read")
    header[key] = tuple(words[1:])
  elif key == "problemname":
    header[key] = rest
  if header.get("timestamps"):
    raise TsFormatError(f"{path}:{lineno}: @timeStamps true: time-stamped series are not "
                        "supported (only value lists)")
  if header.get("targetlabel"):
    raise TsFormatError(f"{path}:{lineno}: @targetLabel true: a regression file; only "
                        "classification is read")


def _values(path, lineno, dim, text) -> np.ndarray:
  parts = [p.strip() for p in text.split(",")]
  try:
    return np.array([math.nan if p in ("?", "NaN", "nan") else float(p) for p in parts],
                    np.float32)
  except ValueError:
    bad = next(p for p in parts if p not in ("?", "NaN", "nan") and not _is_float(p))
    raise TsFormatError(f"{path}:{lineno}: dimension {dim + 1} has the value {bad!r}, which "
                        "is not a number or ? (missing)") from None


def _is_float(text) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def _series(path, lineno, line, header, dims) -> tuple[np.ndarray, str]:
  *fields, label = line.split(":")
  label = label.strip()
  if not fields or not label:
    raise TsFormatError(f"{path}:{lineno}: expected '<values>[:<values>...]:<label>', got "
                        f"{line[:60]!r}")
  if dims is not None and len(fields) != dims:
    raise TsFormatError(f"{path}:{lineno}: {len(fields)} dimension(s), but the file has {dims}")
  declared = header.get("classlabel")
  if declared and label not in declared:
    raise TsFormatError(f"{path}:{lineno}: class label {label!r} is not one of the declared "
                        f"labels {' '.join(declared)}")
  channels = [_values(path, lineno, d, f) for d, f in enumerate(fields)]
  lengths = {len(c) for c in channels}
  if len(lengths) > 1:
    raise TsFormatError(f"{path}:{lineno}: the dimensions have different lengths "
                        f"{[len(c) for c in channels]}")
  return np.stack(channels, axis=1), label


def read_ts(path: str) -> TsFile:
  """Parses one ``.ts`` file (see the module docstring); TsFormatError on anything wrong."""
  header: dict = {}
  series, labels, lines = [], [], []
  in_data = False
  with open(path, encoding="utf-8", errors="replace") as f:
    for lineno, raw in enumerate(f, 1):
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      if not in_data:
        if not line.startswith("@"):
          raise TsFormatError(f"{path}:{lineno}: data before the @data line")
        if line.lower() == "@data":
          if "classlabel" not in header:
            raise TsFormatError(f"{path}:{lineno}: no @classLabel line before @data")
          in_data = True
        else:
          _header(path, lineno, line, header)
        continue
      dims = header.get("dimensions") or (1 if header.get("univariate") else None)
      if dims is None and series:
        dims = series[0].shape[1]
      x, label = _series(path, lineno, line, header, dims)
      want = None
      if header.get("equallength"):
        want = header.get("serieslength") or (len(series[0]) if series else None)
      if want is not None and len(x) != want:
        raise TsFormatError(f"{path}:{lineno}: series of length {len(x)} in an equal-length "
                            f"file of length {want}")
      series.append(x)
      labels.append(label)
      lines.append(lineno)
  if not in_data:
    raise TsFormatError(f"{path}:1: no @data line (not a .ts file?)")
  if not series:
    raise TsFormatError(f"{path}:1: no series after @data")
  return TsFile(path, header, series, labels, lines)


def class_names(train: TsFile, test: TsFile | None = None) -> tuple[str, ...]:
  """The stable label order: the train header's @classLabel list, else the sorted training
  labels (numerically when all are numbers). A test label outside it is an error."""
  if train.declared_labels:
    names = train.declared_labels
  else:
    seen = set(train.labels)
    numeric = all(_is_float(s) for s in seen)
    names = tuple(sorted(seen, key=(lambda s: (float(s), s)) if numeric else None))
  for ts in (train, test):
    for label, lineno in zip(ts.labels, ts.lines) if ts else ():
      if label not in names:
        raise TsFormatError(f"{ts.path}:{lineno}: class label {label!r} is not one of the "
                            f"training classes {' '.join(names)}")
  return tuple(names)


def check_name(name: str) -> str:
  """The archive name of ``ucr/<Name>``; ValueError when malformed."""
  family, _, problem = str(name).partition("/")
  if family != FAMILY or not _NAME.match(problem):
    raise ValueError(f"dataset {name!r} is not a UCR/UEA archive name: use ucr/<Name> with "
                     "the archive's name, e.g. ucr/GunPoint")
  return problem


def source_files(problem: str, source_dir: str) -> dict[str, str]:
  return {split: os.path.join(source_dir, f"{problem}_{split.upper()}.ts")
          for split in ("train", "test")}


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _check_pair(train: TsFile, test: TsFile) -> None:
  if train.channels != test.channels:
    raise TsFormatError(f"{test.path}: {test.channels} dimension(s), but {train.path} has "
                        f"{train.channels}")


def local_spec(name: str, source_dir: str, *, checksums: dict | None = None,
               verify_checksums: bool = True):
  """Reads and checks both files; the LocalSpec that builds ``ucr/<Name>``."""
  problem = check_name(name)
  paths = source_files(problem, source_dir)
  sums = {}
  for split, path in paths.items():
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{source_dir} lacks {os.path.basename(path)} for {name} "
                              f"(expected {problem}_TRAIN.ts and {problem}_TEST.ts)")
    sums[os.path.basename(path)] = got = _sha256(path)
    want = (KNOWN_SHA256 if checksums is None else checksums).get(os.path.basename(path))
    if verify_checksums and want and got != want:
      raise ValueError(f"{path}: sha256 {got} does not match the expected {want} (corrupt or "
                       "different file)")
  files = {split: read_ts(path) for split, path in paths.items()}
  _check_pair(files["train"], files["test"])
  names = class_names(files["train"], files["test"])
  index = {n: k for k, n in enumerate(names)}
  lengths = [len(x) for ts in files.values() for x in ts.series]
  channels = files["train"].channels
  equal = len(set(lengths)) == 1
  import tensorflow_datasets as tfds
  features = {
      "series": tfds.features.Tensor(shape=(lengths[0] if equal else None, channels),
                                     dtype=np.float32),
      "label": tfds.features.ClassLabel(names=list(names)),
      "length": tfds.features.Scalar(dtype=np.int32)}

  def examples(ts):
    return lambda: ({"series": x, "label": index[y], "length": len(x)}
                    for x, y in zip(ts.series, ts.labels))

  meta = {"problem": problem, "channels": channels, "max_length": max(lengths),
          "min_length": min(lengths), "equal_length": equal, "class_names": list(names),
          "missing_values": bool(any(np.isnan(x).any() for ts in files.values()
                                     for x in ts.series)),
          "source_sha256": sums}
  return local.LocalSpec(
      family=FAMILY, config=problem, features=features,
      splits={s: examples(ts) for s, ts in files.items()}, metadata=meta,
      description=f"UCR/UEA archive dataset {problem} built by cnnlab from its .ts files")
