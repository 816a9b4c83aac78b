"""Volume folders (.npy and NIfTI) -> TFDS, the 3-D augmentation of the in-memory back end
(shapes, determinism, host shares), and the synthetic volumes written on first use."""
import os

import numpy as np
import pytest

from conftest import spec_of

from cnnlab.data import datasets, memory, pipeline, preprocess
from cnnlab.data import volumes
from cnnlab.datasets import prepare, volume_folders


def feed(data_dir, name="volumes/scans", **options):
  """The Feed of ``name`` prepared in ``data_dir`` with dataset ``options``."""
  return pipeline.Feed(pipeline.data_spec(name, data_dir=data_dir, **options))


def describe(name, data_dir):
  """The catalogue entry of a prepared local dataset, as its one metadata read gives it."""
  return datasets.describe({"name": name, "data_dir": data_dir}).info


def _vol(seed, shape=(6, 5, 4)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Two classes: 'lesion' with 5 .npy volumes, 'healthy' with 4 .npy + 1 .nii.gz."""
  import nibabel
  src = tmp_path_factory.mktemp("scans")
  written = {}
  for c, cls in enumerate(("lesion", "healthy")):
    (src / cls).mkdir()
    for i in range(5):
      v = _vol(10 * c + i)
      if cls == "healthy" and i == 4:
        nibabel.save(nibabel.Nifti1Image(v, np.eye(4)), str(src / cls / f"s{i}.nii.gz"))
        written[f"{cls}/s{i}.nii.gz"] = v
      else:
        np.save(src / cls / f"s{i}.npy", v)
        written[f"{cls}/s{i}.npy"] = v
  (src / "notes.txt").write_text("ignored")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare("volumes/scans", str(src), data_dir)
  return str(src), data_dir, written


def test_folder_build_npy_and_nifti(folder):
  _, data_dir, written = folder
  info = describe("volumes/scans", data_dir)
  assert info.family == "volume" and info.class_names == ("healthy", "lesion")   # sorted
  assert info.input_shape == (6, 5, 4, 1) and info.num_classes == 2
  assert info.splits == {"train": 8, "test": 2}      # every 5th file of each class held out
  b = datasets.builder(info, data_dir)
  import tensorflow_datasets as tfds
  for split in ("train", "test"):
    for ex in tfds.as_numpy(b.as_dataset(split=split)):
      name = ex["file"].decode()
      assert ("s4" in name) == (split == "test")
      np.testing.assert_allclose(ex["volume"][..., 0], written[name], rtol=1e-6)
      assert info.class_names[ex["label"]] == name.split("/")[0]
  x, y = feed(data_dir).arrays("train")
  assert x.shape == (8, 6, 5, 4, 1) and y.tolist() == [0] * 4 + [1] * 4
  np.testing.assert_allclose(x.reshape(8, -1).mean(1), 0, atol=1e-5)   # per-volume z-score
  np.testing.assert_allclose(x.reshape(8, -1).std(1), 1, rtol=1e-4)


def test_folder_errors_name_the_file(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  np.save(tmp_path / "a" / "x.npy", _vol(0))
  np.save(tmp_path / "b" / "y.npy", _vol(1, (6, 5, 3)))
  with pytest.raises(prepare.PrepareError, match=r"b/y.npy: shape \(6, 5, 3, 1\) differs"):
    prepare.prepare("volumes/v", str(tmp_path), str(tmp_path / "d"))
  np.save(tmp_path / "b" / "y.npy", np.array([{"x": 1}], dtype=object))
  with pytest.raises(prepare.PrepareError, match=r"b/y.npy: cannot read the volume header"):
    prepare.prepare("volumes/v", str(tmp_path), str(tmp_path / "d"))
  os.remove(tmp_path / "b" / "y.npy")
  with pytest.raises(prepare.PrepareError, match="found 1 class folder"):
    prepare.prepare("volumes/v", str(tmp_path), str(tmp_path / "d"))
  assert not datasets.is_prepared(datasets.get("volumes/v"), str(tmp_path / "d"))


def test_explicit_train_test_folders(tmp_path):
  for split, n in (("train", 3), ("test", 2)):
    for cls in ("a", "b"):
      (tmp_path / split / cls).mkdir(parents=True)
      for i in range(n):
        np.save(tmp_path / split / cls / f"{i}.npy", _vol(i))
  names, splits = volume_folders.scan(str(tmp_path))
  assert names == ("a", "b")
  assert [len(splits[s]) for s in ("train", "test")] == [6, 4]
  assert splits["test"][0] == (os.path.join("test", "a", "0.npy"), 0)


def _augment(x, y, scans, *, p, n_proc, step=3, seed=5):
  fn = scans.transform(train=True)
  it = memory.train_batches(x, y, fn, global_batch_size=8, seed=seed, start_step=step,
                            process_index=p, process_count=n_proc)
  return next(it)


def test_3d_augmentation_shapes_determinism_and_host_shares(folder):
  _, data_dir, _ = folder
  scans = feed(data_dir, crop_shape=(4, 4, 3), flip_axes=(0, 2), augment=True)
  x, y = scans.arrays("train")
  assert scans.spec.input_shape == (4, 4, 3, 1)
  whole = _augment(x, y, scans, p=0, n_proc=1)
  assert whole["image"].shape == (8, 4, 4, 3, 1) and whole["image"].dtype == np.float32
  again = _augment(x, y, scans, p=0, n_proc=1)
  np.testing.assert_array_equal(whole["image"], again["image"])          # pure in (seed, s)
  halves = [_augment(x, y, scans, p=p, n_proc=2) for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), whole["image"])
  other = _augment(x, y, scans, p=0, n_proc=1, step=4)
  assert not np.array_equal(other["image"], whole["image"])
  # Every crop is a window of its source volume, mirrored only along the allowed axes.
  rng = np.random.default_rng([5, 2, 3])
  corners, flips = preprocess.volume_crop_flip_params(rng, 8, (6, 5, 4), (4, 4, 3), (0, 2))
  assert not flips[:, 1].any() and (corners <= [2, 1, 1]).all()
  d, h, w = corners[0]
  want = x[np.flatnonzero(y == whole["label"][0])]
  crops = [v[d:d + 4, h:h + 4, w:w + 3][::-1 if flips[0, 0] else 1, :, ::-1 if flips[0, 2]
                                         else 1] for v in want]
  assert any(np.array_equal(c, whole["image"][0]) for c in crops)


def test_eval_centre_crop_and_padding_masks(folder):
  _, data_dir, _ = folder
  scans = feed(data_dir, crop_shape=(4, 3, 2))
  x, y = scans.arrays("test")
  fn = scans.transform(train=False)
  batches = [list(memory.eval_batches(x, y, fn, global_batch_size=4, process_index=p,
                                      process_count=2)) for p in (0, 1)]
  assert sum(int(b["mask"].sum()) for host in batches for b in host) == 2
  first = batches[0][0]["image"][0]
  np.testing.assert_array_equal(first, x[0, 1:5, 1:4, 1:3])      # centred: (6-4)//2, ...
  assert not batches[1][0]["mask"].any() and not batches[1][0]["image"].any()
  raw = [volumes.read_volume(os.path.join(folder[0], "healthy", "s4.nii.gz"))[..., 0]]
  got = scans.eval_inputs(raw)
  assert got.shape == (1, 4, 3, 2, 1)
  with pytest.raises(ValueError, match=r"input 0 has shape \(2, 2, 2, 1\)"):
    scans.eval_inputs([np.zeros((2, 2, 2))])
  with pytest.raises(ValueError, match="crop_shape"):
    feed(data_dir, crop_shape=(7, 1, 1))


def test_synthetic_volumes_written_on_first_use(tmp_path, monkeypatch):
  monkeypatch.delenv(prepare.RAW_DATA_ENV, raising=False)
  cfg = {"name": "synthetic_volumes", "data_dir": str(tmp_path)}
  with pytest.raises(datasets.DatasetUnavailableError, match="written on first use"):
    datasets.describe(cfg)
  assert prepare.prepare_if_needed(cfg)
  info = describe("synthetic_volumes", str(tmp_path))
  assert info.num_classes == 3 and info.input_shape == (20, 20, 20, 1)
  assert info.splits == {"train": 600, "test": 300}
  x, y = feed(str(tmp_path), "synthetic_volumes", preprocess="raw").arrays("test")
  assert np.bincount(y).tolist() == [100, 100, 100]
  first = next(volume_folders.synthetic_examples("test"))
  np.testing.assert_array_equal(x[0], first["volume"])                 # pure function of seed
  # The rod: the brightest 2x2 line of 8 voxels lies along the labelled axis.
  for k in range(6):
    v = x[k, ..., 0]
    assert np.argmax([np.max(_line_sums(v, ax)) for ax in range(3)]) == y[k]
  # Class means of the voxel histogram agree: intensity alone does not tell the classes.
  means = [x[y == c].mean() for c in range(3)]
  assert np.ptp(means) < 0.02
  assert prepare.prepare_if_needed(cfg) is None
  # The 3-D recipe resolves on them: shape from the crop, classes from the dataset.
  from experiments.configs import resnet18_3d_volumes as recipe
  c = recipe.get_config()
  c.dataset.data_dir = str(tmp_path)
  spec = spec_of(c)
  assert spec.model.input_shape == (16, 16, 16, 1) and spec.model.num_classes == 3
  assert spec.loop.total_steps == recipe.STEPS and spec.data.train_examples == 600


def _line_sums(v, axis):
  """Sums over every 2x2x8 box whose long side is along ``axis``."""
  size = [2, 2, 2]
  size[axis] = 8
  c = np.cumsum(np.cumsum(np.cumsum(np.pad(v, ((1, 0),) * 3), 0), 1), 2)
  d, h, w = size
  return (c[d:, h:, w:] - c[:-d, h:, w:] - c[d:, :-h, w:] - c[d:, h:, :-w] + c[:-d, :-h, w:]
          + c[:-d, h:, :-w] + c[d:, :-h, :-w] - c[:-d, :-h, :-w])
