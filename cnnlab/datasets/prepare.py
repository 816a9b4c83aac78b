"""Build TFDS datasets offline from the original raw files, checksums verified.

    prepare("mnist", source_dir="../shared/datasets/mnist", data_dir="~/tensorflow_datasets")

Afterwards plain ``tfds.load("mnist", data_dir=...)`` works with no network, and the data is
what TFDS itself would have built: we run TFDS's own builder, and only tell its download
manager that the files are already here. TFDS looks for a file named like the download in the
manual dir before it touches the network (``DownloadManager(manual_dir=...)``) and verifies its
registered size + sha256; ImageNet is a manual-dir dataset anyway. ``try_download_gcs=False``
keeps TFDS from fetching a pre-built copy.

Inputs (``source_dir`` holds them under their original names):
- mnist, fashion_mnist: the four ``*-ubyte.gz`` files.
- cifar10 / cifar100: TFDS's own input, the binary tarball (``cifar-10-binary.tar.gz``), or the
  python tarball (``cifar-10-python.tar.gz``), converted here to the binary layout. Both are
  serialisations of the same batches in the same order, so the examples, their order and ids
  come out the same (tests/test_data_prepare.py checks the conversion record for record);
  only dataset_info.json's download size/checksum then describe the converted tarball.
  Pickles are read with an unpickler that only admits NumPy arrays.
- imagenet2012: ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` (TFDS's manual dir).
- imagenette, imagenette_320: ``imagenette2.tgz`` / ``imagenette2-320.tgz``.
- ucr/<Name>: ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts`` (ucr.py); volumes/<name>: class
  folders of .npy / NIfTI volumes (volume_folders.py); synthetic_volumes: nothing (generated). These
  are built by cnnlab's own builder (local.py), not a TFDS catalogue one.
- segmentation/<name> (image + mask folders), segvolumes/<name> (volume + label folders:
  NIfTI, .npy, DICOM series), isbi2012_em (the ISBI 2012 EM files, SHA256SUMS verified),
  synthetic_phantoms (generated): segmentation.py dispatches them, also through local.py.

Checksums: md5 of each file against the values published with the data (MNIST/Fashion: the
project README and torchvision; CIFAR: the CIFAR page; ImageNet: torchvision's table), or
TFDS's registered sha256 where no md5 is published (Imagenette). ``checksums={file: hex}``
replaces the known values (md5 or sha256, told apart by length) — for files a test writes;
``verify_checksums=False`` trusts the files as they are (TFDS is then told their own sha256).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile

import numpy as np

from cnnlab.data import datasets, prepared
from cnnlab.datasets import local, segmentation, ucr, volume_folders

KNOWN_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    "cifar10": {
        "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {
        "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
    "imagenet2012": {
        "ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
        "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622"},
}

# The alternative input for CIFAR (converted), and the manual-dir datasets' files.
_PYTHON_TAR = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
_MANUAL = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}


class PrepareError(ValueError):
  """Bad input for ``prepare`` (unknown dataset, missing file, wrong checksum); one line."""


def _registry(builder) -> dict:
  """url -> UrlInfo(size, sha256, filename) of the files TFDS downloads for this builder."""
  infos = dict(builder.url_infos or {})
  config = getattr(builder, "builder_config", None)
  if config is not None and hasattr(config, "dirname"):   # imagenette: one file per config
    infos = {u: i for u, i in infos.items() if i.filename == f"{config.dirname}.tgz"}
  return infos


def _hash(path: str, algorithms) -> dict[str, str]:
  hashers = {a: hashlib.new(a) for a in algorithms}
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 23), b""):
      for h in hashers.values():
        h.update(chunk)
  return {a: h.hexdigest() for a, h in hashers.items()}


def _verify(name: str, path: str, expected: str | None) -> None:
  if expected is None:
    raise PrepareError(f"no known checksum for {os.path.basename(path)} ({name}); pass "
                       "checksums={file: md5} or disable verification")
  algorithm = {32: "md5", 64: "sha256"}.get(len(expected))
  if algorithm is None:
    raise PrepareError(f"checksum {expected!r} for {path} is neither md5 nor sha256 hex")
  got = _hash(path, [algorithm])[algorithm]
  if got != expected.lower():
    raise PrepareError(f"{path}: {algorithm} {got} does not match the expected {expected} "
                       "(corrupt or different file)")


class _NumpyOnlyUnpickler(pickle.Unpickler):
  _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
              ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
              ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar")}

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise PrepareError(f"refusing to unpickle {module}.{name} from a CIFAR python batch")
    return super().find_class(module, name)


def _unpickle(data: bytes) -> dict:
  obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
  return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _names(values) -> bytes:
  return "".join(f"{v.decode() if isinstance(v, bytes) else v}\n" for v in values).encode()


def cifar_python_to_binary(python_tar: str, out_path: str, name: str) -> None:
  """Rewrites a CIFAR python tarball as the binary tarball TFDS's builder reads."""
  members: dict[str, bytes] = {}
  with tarfile.open(python_tar, "r:gz") as tar:
    for m in tar.getmembers():
      if m.isfile():
        members[os.path.basename(m.name)] = tar.extractfile(m).read()

  def get(fname):
    if fname not in members:
      raise PrepareError(f"{python_tar} has no {fname}: not a {name} python tarball")
    return _unpickle(members[fname])

  def records(batch, label_keys):
    data = np.asarray(batch["data"], np.uint8).reshape(-1, 3072)
    labels = [np.asarray(batch[k], np.uint8).reshape(-1, 1) for k in label_keys]
    return np.concatenate(labels + [data], axis=1).tobytes()

  if name == "cifar10":
    prefix, keys = "cifar-10-batches-bin/", ["labels"]
    files = {f"data_batch_{i}.bin": records(get(f"data_batch_{i}"), keys) for i in range(1, 6)}
    files["test_batch.bin"] = records(get("test_batch"), keys)
    files["batches.meta.txt"] = _names(get("batches.meta")["label_names"])
  else:
    prefix, keys = "cifar-100-binary/", ["coarse_labels", "fine_labels"]
    files = {"train.bin": records(get("train"), keys), "test.bin": records(get("test"), keys)}
    meta = get("meta")
    files["coarse_label_names.txt"] = _names(meta["coarse_label_names"])
    files["fine_label_names.txt"] = _names(meta["fine_label_names"])
  with tarfile.open(out_path, "w:gz", compresslevel=1) as tar:
    for fname, payload in files.items():
      info = tarfile.TarInfo(prefix + fname)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))


def _use_download_manager(builder, url_infos: dict) -> None:
  """Makes ``builder`` build with a DownloadManager that knows exactly ``url_infos``."""
  import tensorflow_datasets as tfds

  def make(download_dir, download_config):
    return tfds.download.DownloadManager(
        download_dir=download_dir, extract_dir=os.path.join(download_dir, "extracted"),
        manual_dir=download_config.manual_dir, url_infos=url_infos,
        manual_dir_instructions=builder.MANUAL_DOWNLOAD_INSTRUCTIONS, dataset_name=builder.name,
        force_checksums_validation=True)

  builder._make_download_manager = make  # pylint: disable=protected-access


def expected_files(name: str) -> list[str]:
  """The file names ``prepare`` looks for in source_dir (alternatives joined by ' or ')."""
  info = datasets.get(name)
  if name in _MANUAL:
    return list(_MANUAL[name])
  if info.family == "series":
    problem = name.split("/", 1)[1]
    return [f"{problem}_TRAIN.ts", f"{problem}_TEST.ts"]
  if info.family == "volume":
    return ["<class>/*.npy|*.nii|*.nii.gz (optionally under train/ and test/)"]
  if name == datasets.ISBI2012:
    return ["train/image/00.png ... 24.png", "train/label/00.png ... 24.png",
            "test/image/00.png ... 29.png", "SHA256SUMS"]
  if info.family == "segmentation":
    return ["<split>/image/*.png|tif", "<split>/label/* (matched by name)"]
  if info.family == "segvolume":
    return ["<split>/image/*.nii.gz|*.npy|<DICOM series folder>", "<split>/label/*"]
  import tensorflow_datasets as tfds
  files = [i.filename for i in _registry(tfds.builder(info.tfds_name)).values()]
  if name in _PYTHON_TAR:
    files = [f"{files[0]} or {_PYTHON_TAR[name]}"]
  return files


def prepare(name: str, source_dir: str | None, data_dir: str | None = None, *,
            checksums: dict[str, str] | None = None, verify_checksums: bool = True,
            max_examples_per_split: int | None = None, overwrite: bool = False) -> str:
  """Builds dataset ``name`` into ``data_dir`` from ``source_dir``; returns the dataset dir.

  Idempotent: an already prepared dataset is left alone unless ``overwrite``.
  ``max_examples_per_split`` (TFDS's own DownloadConfig option) cuts each split short — only
  for smoke tests; the result is then not the full dataset.
  """
  import tensorflow_datasets as tfds
  try:
    info = datasets.get(name)
  except ValueError as e:
    raise PrepareError(str(e)) from None
  if source_dir is not None:
    source_dir = os.path.abspath(os.path.expanduser(source_dir))
  if info.local:
    return prepare_local(info, source_dir, data_dir, checksums=checksums,
                         verify_checksums=verify_checksums, overwrite=overwrite)
  if source_dir is None or not os.path.isdir(source_dir):
    raise PrepareError(f"--source_dir={source_dir} is not a directory")
  root = datasets.resolve_data_dir(data_dir)
  builder = tfds.builder(info.tfds_name, data_dir=root)
  if builder.is_prepared() and not overwrite:
    return str(builder.data_path)
  registry = {} if name in _MANUAL else _registry(builder)
  registry_sha = {i.filename: i.checksum for i in registry.values()}
  known = {**registry_sha, **KNOWN_MD5.get(name, {})} if checksums is None else dict(checksums)

  def check(fname: str) -> None:
    if verify_checksums:
      _verify(name, os.path.join(source_dir, fname), known.get(fname))

  wanted = list(_MANUAL.get(name, registry_sha))
  present = [f for f in wanted if os.path.isfile(os.path.join(source_dir, f))]
  python_tar = _PYTHON_TAR.get(name)
  use_python = (python_tar is not None and not present
                and os.path.isfile(os.path.join(source_dir, python_tar)))
  if not use_python and len(present) < len(wanted):
    missing = [f for f in wanted if f not in present]
    raise PrepareError(f"{source_dir} lacks {', '.join(missing)} for {name} (expected: "
                       f"{', '.join(expected_files(name))})")
  for fname in [python_tar] if use_python else present:
    check(fname)

  os.makedirs(root, exist_ok=True)
  _build(builder, root, name, source_dir, registry, python_tar if use_python else None,
         trust_files=checksums is not None or not verify_checksums, overwrite=overwrite,
         max_examples_per_split=max_examples_per_split)
  return str(builder.data_path)


def _build(builder, root: str, name: str, source_dir: str, registry: dict,
           python_tar: str | None, *,
           trust_files: bool, overwrite: bool, max_examples_per_split: int | None) -> None:
  """Runs TFDS's own builder on the local files (its download manager pointed at them), in a
  temporary directory next to the data (CIFAR's python tarball converted to the binary one)."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import download_manager
  with tempfile.TemporaryDirectory(prefix="cnnlab_prepare_", dir=root) as tmp:
    manual_dir = source_dir
    url_infos = dict(registry)
    if python_tar:
      manual_dir = os.path.join(tmp, "manual")
      os.makedirs(manual_dir)
      (url, ui), = registry.items()
      converted = os.path.join(manual_dir, ui.filename)
      cifar_python_to_binary(os.path.join(source_dir, python_tar), converted, name)
      url_infos = {url: tfds.core.download.checksums.compute_url_info(converted)}
    elif trust_files:   # trust the files as they are
      url_infos = {url: tfds.core.download.checksums.compute_url_info(
          os.path.join(source_dir, ui.filename)) for url, ui in registry.items()}
    _use_download_manager(builder, url_infos)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    config = tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False, download_mode=mode,
        max_examples_per_split=max_examples_per_split)
    try:
      with local.quiet_tfds(builder):
        builder.download_and_prepare(download_dir=os.path.join(tmp, "downloads"),
                                     download_config=config)
    except download_manager.NonMatchingChecksumError as e:
      raise PrepareError(f"TFDS rejected a file for {name}: {str(e).splitlines()[0]}") from e


def prepare_local(info: datasets.DatasetInfo, source_dir: str | None, data_dir: str | None,
                  *, checksums: dict | None = None, verify_checksums: bool = True,
                  overwrite: bool = False) -> str:
  """Builds a dataset cnnlab makes from local files (ucr/<Name>, volumes/<name>,
  segmentation/<name>, segvolumes/<name>, isbi2012_em) or from nothing (synthetic_volumes,
  synthetic_phantoms); returns its dir. Bad input (missing file, malformed line, wrong
  checksum, a mask without its image, a refused DICOM series) -> PrepareError, one line."""
  root = datasets.resolve_data_dir(data_dir)
  key = datasets.local_key(info.name)
  if prepared.local_is_prepared(*key, root) and not overwrite:
    return prepared.local_dir(*key, root)
  if info.name not in datasets.GENERATED and (source_dir is None
                                              or not os.path.isdir(source_dir)):
    raise PrepareError(f"--source_dir={source_dir} is not a directory")
  try:   # the builders check their input before writing; decoding may still fail
    spec = _local_spec(info, source_dir, checksums, verify_checksums)
    return local.build(spec, root, overwrite=overwrite)
  except (ValueError, OSError) as e:   # TsFormatError, VolumeError ... are ValueErrors
    raise PrepareError(str(e).splitlines()[0]) from e


def _local_spec(info, source_dir, checksums, verify_checksums):
  if info.name == datasets.SYNTHETIC_VOLUMES:
    return volume_folders.synthetic_spec()
  if info.family == "series":
    return ucr.local_spec(info.name, source_dir, checksums=checksums,
                          verify_checksums=verify_checksums)
  if info.family == "volume":
    return volume_folders.local_spec(info.name, source_dir)
  return segmentation.local_spec(info.name, source_dir, checksums=checksums,
                                 verify_checksums=verify_checksums)


def summary(name: str, data_dir: str | None = None) -> str:
  """One line per split: its example count, and for classification its count per class."""
  import tensorflow_datasets as tfds
  facts = datasets.describe({"name": name, "data_dir": data_dir})
  b = datasets.builder(facts.info, data_dir)
  lines = []
  for split in b.info.splits:
    if "label" not in b.info.features:    # segmentation: class pixels are in its metadata
      lines.append(f"{split}: {b.info.splits[split].num_examples} examples")
      continue
    skip = {k: tfds.decode.SkipDecoding() for k in ("image",) if k in b.info.features}
    labels = np.concatenate([y for y in tfds.as_numpy(b.as_dataset(
        split=split, decoders=skip or None).map(lambda ex: ex["label"]).batch(65536))])
    hist = np.bincount(labels[labels >= 0], minlength=facts.num_classes)
    shown = " ".join(map(str, hist)) if facts.num_classes <= 20 else f"{len(hist)} classes"
    lines.append(f"{split}: {len(labels)} examples; per class: {shown}")
  return "\n".join(lines)


RAW_DATA_ENV = "CNNLAB_RAW_DATA_DIR"


def prepare_if_needed(ds_cfg) -> str | None:
  """First-use preparation for offline machines: when ``ds_cfg``'s dataset is not yet built in
  its data dir and ``$CNNLAB_RAW_DATA_DIR/<name>/`` holds the original files, build it from
  them (checksums verified) and return the dataset dir (``ucr/GunPoint`` looks in
  ``$CNNLAB_RAW_DATA_DIR/ucr/GunPoint/``, the layout of ../shared/datasets). The synthetic
  volumes are written whenever missing, variable or not. A variable naming a directory without
  ``<name>/`` raises ``DatasetUnavailableError`` (saying where it looked); an unset one does
  nothing (an unprepared dataset then fails fast, naming the prepare command). Each host
  prepares its own data dir. Meant for entry points (it writes files)."""
  info = datasets.get(ds_cfg.get("name", None))
  data_dir = ds_cfg.get("data_dir", None)
  root = os.environ.get(RAW_DATA_ENV)
  if info.name in datasets.GENERATED:
    if datasets.is_prepared(info, data_dir):
      return None
    where = prepared.local_dir(*datasets.local_key(info.name),
                               datasets.resolve_data_dir(data_dir))
    print(f"writing {info.name} into {where} (first use)", flush=True)
    return prepare(info.name, None, data_dir)
  if not root or datasets.is_prepared(info, data_dir):
    return None
  source = os.path.join(os.path.expanduser(root), *info.name.split("/"))
  if not os.path.isdir(source):
    raise datasets.DatasetUnavailableError(
        f"${RAW_DATA_ENV}={root!r} holds no {info.name}/ folder (looked for "
        f"{os.path.abspath(source)}); point it at the directory whose {info.name}/ has the "
        f"original files, or unset it and run: python -m experiments.prepare_data "
        f"--dataset={info.name} --source_dir=DIR")
  print(f"preparing {info.name} from {source} (first use; ${RAW_DATA_ENV})", flush=True)
  return prepare(info.name, source, data_dir)
