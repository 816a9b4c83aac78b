r"""Builds a TFDS dataset offline from its original files, so ``tfds.load`` needs no network.

    python -m experiments.prepare_data --dataset=mnist --source_dir=../shared/datasets/mnist \
        [--data_dir=DIR]
    python -m experiments.prepare_data --dataset=ucr/GunPoint \
        --source_dir=../shared/datasets/ucr/GunPoint       # any UCR/UEA archive dataset
    python -m experiments.prepare_data --dataset=volumes/NAME --source_dir=DIR  # class/*.npy|nii
    python -m experiments.prepare_data --dataset=synthetic_volumes              # no source

--data_dir defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets (where training looks too).
Each input file's checksum is verified first (see cnnlab/data/prepare.py for the files each
dataset needs). Exit status: 0 built (or already there), 2 bad flags / missing or corrupt
input (one line on stderr), 1 anything else.
"""
import time

from absl import flags

from experiments import cli

_DATASET = flags.DEFINE_string("dataset", None, "Catalogue name: mnist, fashion_mnist, cifar10, "
                               "cifar100, imagenet2012, imagenette, imagenette_320, "
                               "synthetic_volumes, ucr/<archive name>, volumes/<name>.")
_SOURCE_DIR = flags.DEFINE_string("source_dir", None, "Directory holding the original files.")
_DATA_DIR = cli.shared_flag(flags.DEFINE_string, "data_dir", None, "TFDS data dir to build into.")
_VERIFY = flags.DEFINE_bool("verify_checksums", True, "Check each file's md5/sha256 first "
                            "(ImageNet's 147 GB take a while).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if already prepared.")


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  import tensorflow_datasets as tfds
  from cnnlab.data import datasets
  from cnnlab.datasets import prepare
  try:
    info = datasets.get(_DATASET.value)
  except ValueError as e:
    cli.usage_error(f"--dataset={_DATASET.value!r} is invalid: {str(e).split(': ', 1)[1]}")
  if not _SOURCE_DIR.value and info.name not in datasets.GENERATED:
    cli.usage_error("--source_dir is required (the directory holding "
                    f"{', '.join(prepare.expected_files(_DATASET.value))})")
  tfds.disable_progress_bar()
  start = time.time()
  try:
    path = prepare.prepare(_DATASET.value, _SOURCE_DIR.value, _DATA_DIR.value,
                           verify_checksums=_VERIFY.value, overwrite=_OVERWRITE.value)
  except prepare.PrepareError as e:
    cli.usage_error(str(e))
  print(f"{_DATASET.value} prepared in {path} ({time.time() - start:.0f} s)")
  print(prepare.summary(_DATASET.value, _DATA_DIR.value))


if __name__ == "__main__":
  cli.run(main)
