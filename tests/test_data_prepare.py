"""cnnlab.datasets.prepare and experiments/prepare_data: raw files -> the dataset TFDS would build,
checksums, one-line errors (exit 2), and the real MNIST / Fashion-MNIST files when present."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnnlab.data import datasets
from cnnlab.datasets import prepare, synthetic
from conftest import assert_real_dataset

tfds.disable_progress_bar()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "datasets")


def load(name, data_dir, split, images=True):
  """All features of a prepared split as arrays, via plain tfds.load (images left encoded
  unless ``images``)."""
  decoders = None if images else {"image": tfds.decode.SkipDecoding()}
  ds = tfds.load(datasets.get(name).tfds_name, split=split, data_dir=data_dir, batch_size=-1,
                 download=False, decoders=decoders)
  return tfds.as_numpy(ds)


def test_mnist_files_build_tfds_mnist(tmp_path):
  sums = synthetic.write_mnist(str(tmp_path / "src"))
  path = prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "data"),
                         checksums=sums, max_examples_per_split=40)
  assert path.endswith(os.path.join("mnist", "3.0.1"))
  builder = tfds.builder("mnist", data_dir=str(tmp_path / "data"))
  assert builder.is_prepared() and set(builder.info.splits) == {"train", "test"}
  assert repr(builder.info.features) == repr(tfds.builder("mnist").info.features)
  train = load("mnist", str(tmp_path / "data"), "train")
  want_images, want_labels = synthetic.mnist_images(40)   # TFDS stores them shuffled by key
  got = sorted((img.tobytes(), int(y)) for img, y in zip(train["image"][..., 0], train["label"]))
  assert got == sorted((img.tobytes(), int(y)) for img, y in zip(want_images, want_labels))
  # Idempotent: a second call finds it prepared and returns at once.
  assert prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "data")) == path


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_tarball_equals_binary_tarball(tmp_path, name):
  """The python tarball, converted, gives exactly what TFDS builds from the binary one."""
  built = {}
  for fmt in ("python", "binary"):
    sums = synthetic.write_cifar(str(tmp_path / fmt), name, n_train=30, n_test=12, fmt=fmt,
                                 seed=7)
    prepare.prepare(name, str(tmp_path / fmt), str(tmp_path / f"data_{fmt}"), checksums=sums)
    built[fmt] = {s: load(name, str(tmp_path / f"data_{fmt}"), s) for s in ("train", "test")}
  for split, n in (("train", 30), ("test", 12)):
    a, b = built["python"][split], built["binary"][split]
    assert len(a["label"]) == n and set(a) == set(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  info = tfds.builder(name, data_dir=str(tmp_path / "data_python")).info
  assert info.features["label"].names[:2] == (["class0", "class1"] if name == "cifar10"
                                               else ["fine0", "fine1"])


def test_imagenet_and_imagenette_builds(tmp_path):
  sums = synthetic.write_imagenet(str(tmp_path / "in"), classes=2, per_class=3, n_val=4)
  prepare.prepare("imagenet2012", str(tmp_path / "in"), str(tmp_path / "data"), checksums=sums)
  b = tfds.builder("imagenet2012", data_dir=str(tmp_path / "data"))
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 6, "validation": 4}
  sums = synthetic.write_imagenette(str(tmp_path / "nette"), dirname="imagenette2-320",
                                    per_class=2, val_per_class=1)
  prepare.prepare("imagenette_320", str(tmp_path / "nette"), str(tmp_path / "data"),
                  checksums=sums)
  val = load("imagenette_320", str(tmp_path / "data"), "validation", images=False)
  assert sorted(val["label"].tolist()) == [0, 1, 2]


def test_bad_inputs_are_one_line_errors(tmp_path):
  with pytest.raises(prepare.PrepareError, match="valid datasets are"):
    prepare.prepare("mnist3d", str(tmp_path), str(tmp_path / "data"))
  with pytest.raises(prepare.PrepareError, match="lacks .*train-images-idx3-ubyte.gz"):
    prepare.prepare("mnist", str(tmp_path), str(tmp_path / "data"))
  with pytest.raises(prepare.PrepareError, match="is not a directory"):
    prepare.prepare("mnist", str(tmp_path / "nope"), str(tmp_path / "data"))
  sums = synthetic.write_cifar(str(tmp_path / "c"), "cifar10", fmt="binary")
  # Self-written file against the published md5 of the real tarball: rejected.
  with pytest.raises(prepare.PrepareError, match="md5 .* does not match .*c32a1d4ab5d03f"):
    prepare.prepare("cifar10", str(tmp_path / "c"), str(tmp_path / "data"))
  wrong = {k: "0" * 32 for k in sums}
  with pytest.raises(prepare.PrepareError, match="does not match"):
    prepare.prepare("cifar10", str(tmp_path / "c"), str(tmp_path / "data"), checksums=wrong)
  assert not tfds.builder("cifar10", data_dir=str(tmp_path / "data")).is_prepared()


def test_python_tarball_pickles_may_only_hold_arrays(tmp_path):
  import io
  import tarfile

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo owned",))

  path = tmp_path / "src" / "cifar-10-python.tar.gz"
  path.parent.mkdir()
  with tarfile.open(path, "w:gz") as tar:
    payload = __import__("pickle").dumps({b"data": Evil()}, protocol=2)
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
  with pytest.raises(prepare.PrepareError, match="refusing to unpickle"):
    prepare.cifar_python_to_binary(str(path), str(tmp_path / "out.tar.gz"), "cifar10")


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.prepare_data", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_cli_usage_errors_exit_2(tmp_path):
  r = _cli("--dataset=svhn", f"--source_dir={tmp_path}")
  assert r.returncode == 2 and "valid datasets are mnist" in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1
  synthetic.write_cifar(str(tmp_path / "c"), "cifar10", fmt="python")
  r = _cli("--dataset=cifar10", f"--source_dir={tmp_path / 'c'}",
           f"--data_dir={tmp_path / 'data'}")
  assert r.returncode == 2 and "does not match" in r.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------- the real raw files

@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/datasets not present")
def test_real_fashion_mnist_files(tmp_path):
  """Real MNIST gets the same checks in test_engine.py's first-use run of the main job (one
  full 70,000-image build of each dataset per suite)."""
  prepare.prepare("fashion_mnist", os.path.join(SHARED, "fashion_mnist"), str(tmp_path))
  assert_real_dataset("fashion_mnist", str(tmp_path))
