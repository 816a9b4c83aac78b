"""Segmentation dataset builders: image + mask folders, volume + label folders (NIfTI, .npy,
DICOM), ISBI 2012 EM, synthetic phantoms — built through prepare.prepare from files written
here, read back with tfds.builder_from_directory; label mapping, metadata and refusals."""
import hashlib
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import datasets, prepared
from cnnlab.datasets import isbi2012, local, phantoms, prepare, seg_pairs

# The real files: $CNNLAB_RAW_DATA_DIR/isbi2012_em when set, else ../shared/datasets beside
# the checkout (the layout prepare_if_needed reads).
SHARED_ISBI = os.path.join(os.environ.get("CNNLAB_RAW_DATA_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets"),
    "isbi2012_em")
IGNORE = seg_pairs.IGNORE_INDEX


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _read(path, split):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(path)
  return b, list(tfds.as_numpy(b.as_dataset(split=split)))


def _mask(seed, h, w, values=(0, 128, 255)):
  return np.random.default_rng(seed).choice(values, size=(h, w)).astype(np.uint8)


@pytest.fixture
def folder2d(tmp_path):
  """train: 4 grey images of two sizes, validation: 2, test: 2 without labels."""
  src = tmp_path / "src"
  masks = {}
  for split, n in (("train", 4), ("validation", 2), ("test", 2)):
    for i in range(n):
      h, w = (6, 8) if i % 2 else (5, 7)
      _png(str(src / split / "image" / f"s{i}.png"), np.full((h, w), 10 * i + 3))
      if split != "test":
        masks[(split, i)] = _mask(i + (10 if split == "validation" else 0), h, w)
        _png(str(src / split / "label" / f"s{i}.png"), masks[(split, i)])
  return src, masks


def _prepare(name, src, tmp_path, **kw):
  return prepare.prepare(name, str(src), str(tmp_path / "tfds"), **kw)


def test_image_mask_folders_default_mapping(folder2d, tmp_path):
  src, masks = folder2d
  path = _prepare("segmentation/toy", src, tmp_path)
  assert path.endswith(os.path.join("segmentation", "toy", "1.0.0"))
  b, train = _read(path, "train")
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {
      "train": 4, "validation": 2, "test": 2}
  meta = dict(b.info.metadata)
  assert meta["label_values"] == [0, 128, 255] and meta["num_classes"] == 3
  assert meta["class_names"] == ["value_0", "value_128", "value_255"]
  assert meta["label_mapping_source"] == "distinct values of the train masks"
  assert meta["shape"] == [None, None, 1] and meta["channels"] == 1 and meta["ndim"] == 2
  assert meta["min_size"] == [5, 7] and meta["max_size"] == [6, 8]
  assert meta["unlabelled_splits"] == ["test"] and meta["ignore_index"] == IGNORE
  for ex in train:
    i = int(ex["file"].decode().split("/")[-1][1:-4])
    want = masks[("train", i)]
    assert ex["image"].shape == (*want.shape, 1) and ex["image"].dtype == np.uint8
    assert (ex["image"] == 10 * i + 3).all()
    assert ex["mask"].dtype == np.uint8
    np.testing.assert_array_equal(ex["mask"], np.searchsorted([0, 128, 255], want))
  counts = np.sum([np.bincount(np.searchsorted([0, 128, 255], masks[("train", i)]).ravel(),
                               minlength=3) for i in range(4)], axis=0)
  assert meta["class_pixels"]["train"] == counts.tolist()
  _, test = _read(path, "test")
  assert all((ex["mask"] == IGNORE).all() and ex["mask"].shape == ex["image"].shape[:2]
             for ex in test)
  # Idempotent: a second call finds the build and leaves it alone.
  stamp = os.path.getmtime(os.path.join(path, "dataset_info.json"))
  assert _prepare("segmentation/toy", src, tmp_path) == path
  assert os.path.getmtime(os.path.join(path, "dataset_info.json")) == stamp


def test_labels_json_names_and_ignore_values(folder2d, tmp_path):
  src, masks = folder2d
  (src / "labels.json").write_text(json.dumps(
      {"values": [255, 0], "class_names": ["cell", "membrane"], "ignore_values": [128]}))
  b, train = _read(_prepare("segmentation/named", src, tmp_path), "train")
  meta = dict(b.info.metadata)
  assert meta["class_names"] == ["cell", "membrane"] and meta["ignore_values"] == [128]
  assert meta["label_mapping_source"] == "labels.json"
  for ex in train:
    want = masks[("train", int(ex["file"].decode().split("/")[-1][1:-4]))]
    np.testing.assert_array_equal(ex["mask"], np.select([want == 255, want == 0], [0, 1],
                                                        IGNORE))


def test_rgb_images_and_palette_masks(tmp_path):
  src = tmp_path / "src"
  rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  for i in range(2):
    _png(str(src / "train" / "image" / f"{i}.png"), rgb)
    pal = Image.fromarray(np.array([[0, 1, 2, 1, 0]] * 4, np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    os.makedirs(src / "train" / "label", exist_ok=True)
    pal.save(src / "train" / "label" / f"{i}.png")
  b, train = _read(_prepare("segmentation/rgb", src, tmp_path), "train")
  assert dict(b.info.metadata)["label_values"] == [0, 1, 2]   # palette indices, not colours
  np.testing.assert_array_equal(train[0]["image"], rgb)
  assert train[0]["mask"].tolist()[0] == [0, 1, 2, 1, 0]


def _refused(name, src, tmp_path, match):
  with pytest.raises(prepare.PrepareError, match=match) as e:
    _prepare(name, src, tmp_path)
  assert "\n" not in str(e.value)
  assert not prepared.local_is_prepared(*datasets.local_key(name), str(tmp_path / "tfds"))


def test_image_mask_folder_refusals(folder2d, tmp_path):
  src, _ = folder2d
  lbl = src / "validation" / "label"
  _png(str(lbl / "s1.png"), np.zeros((6, 9)))
  _refused("segmentation/bad", src, tmp_path,
           r"validation/label/s1.png: mask size 6x9 differs from its image "
           r"validation/image/s1.png \(6x8\)")
  _png(str(lbl / "s1.png"), np.full((6, 8), 7))
  _refused("segmentation/bad", src, tmp_path,
           r"validation/label/s1.png: label value\(s\) \[7\] outside the label mapping "
           r"\(allowed: \[0, 128, 255\], distinct values of the train masks\)")
  os.remove(lbl / "s1.png")
  _refused("segmentation/bad", src, tmp_path,
           r"validation/image/s1.png: image without a mask \(no validation/label/s1.\*\)")
  _png(str(lbl / "s1.png"), np.zeros((6, 8)))
  _png(str(lbl / "s9.png"), np.zeros((6, 8)))
  _refused("segmentation/bad", src, tmp_path,
           r"validation/label/s9.png: mask without an image \(no validation/image/s9.\*\)")
  os.remove(lbl / "s9.png")
  Image.fromarray(np.zeros((6, 8), np.uint8)).save(lbl / "s1.jpg")
  os.remove(lbl / "s1.png")
  _refused("segmentation/bad", src, tmp_path, r"s1.jpg: a JPEG mask \(lossy")
  os.remove(lbl / "s1.jpg")
  _png(str(lbl / "s1.png"), np.zeros((6, 8)))
  _png(str(src / "validation" / "image" / "s0.png"), np.zeros((5, 7, 3)))
  _refused("segmentation/bad", src, tmp_path, r"validation/image/s0.png: 3 channel\(s\) where "
           r".*/image/s0.png has 1")
  Image.fromarray(np.zeros((5, 7), np.uint16)).save(src / "validation" / "image" / "s0.png")
  _refused("segmentation/bad", src, tmp_path, r"s0.png: image mode I;16 .*convert it to 8-bit")


def test_label_mapping_refusals(folder2d, tmp_path):
  src, _ = folder2d
  (src / "labels.json").write_text(json.dumps({"num_classes": 2}))
  _refused("segmentation/m", src, tmp_path,
           r"train/label/s\d.png: label value\(s\) \[128, 255\] outside the label mapping "
           r"\(allowed: \[0, 1\], labels.json\)")
  (src / "labels.json").write_text("{\"values\": [0]}")
  _refused("segmentation/m", src, tmp_path, r"label mapping with 1 class\(es\) \[0\]: need 2")
  (src / "labels.json").write_text("[1, 2]")
  _refused("segmentation/m", src, tmp_path, r"labels.json: not a label mapping")
  os.remove(src / "labels.json")
  for i in range(4):
    m = np.asarray(Image.open(src / "train" / "label" / f"s{i}.png"))
    _png(str(src / "train" / "label" / f"s{i}.png"), np.zeros_like(m))
  _refused("segmentation/m", src, tmp_path, r"the train masks hold 1 distinct value\(s\) \[0\]")


def test_names_and_dispatch():
  assert datasets.local_key("segmentation/x") == ("segmentation", "x")
  assert datasets.local_key("segvolumes/ct-1") == ("segvolumes", "ct-1")
  assert datasets.local_key("isbi2012_em") == ("segmentation", "isbi2012_em")
  assert datasets.local_key("synthetic_phantoms") == ("segvolumes", "synthetic_phantoms")
  for other in ("mnist", "segmentation/", "segmentation/isbi2012_em", "segvolumes/a/b"):
    assert datasets.local_key(other) is None
  for name, family in (("segmentation/x", "segmentation"), ("isbi2012_em", "segmentation"),
                       ("segvolumes/ct-1", "segvolume"), ("synthetic_phantoms", "segvolume"),
                       ("volumes/x", "volume")):
    assert datasets.get(name).family == family


# --------------------------------------------------------------------------- volumes

@pytest.fixture
def folder3d(tmp_path):
  """train: a .npy scan, a NIfTI scan (2 x 3 x 4 mm) and a DICOM series; validation: one
  NIfTI scan; labels hold 0 / 1 / 2 (.npy and NIfTI)."""
  import nibabel
  src = tmp_path / "src"
  rng = np.random.default_rng(0)
  nifti_affine = np.diag([2.0, 3.0, 4.0, 1.0])
  written = {}
  for split, names in (("train", ("a", "b", "c")), ("validation", ("d",))):
    (src / split / "image").mkdir(parents=True)
    (src / split / "label").mkdir(parents=True)
    for k, name in enumerate(names):
      shape = (4, 5, 6) if k != 1 else (3, 5, 4)
      label = rng.integers(0, 3, shape).astype(np.uint8)
      if name == "c":
        pytest.importorskip("pydicom")
        from test_dicom import _series
        _series(str(src / split / "image" / "c"), n=4, rows=5, cols=6, slopes=False)
        np.save(src / split / "label" / "c.npy", label)
        written[name] = (None, label)
        continue
      scan = rng.normal(size=shape).astype(np.float32)
      if name == "a":
        np.save(src / split / "image" / "a.npy", scan)
        nibabel.save(nibabel.Nifti1Image(label, nifti_affine),
                     str(src / split / "label" / "a.nii.gz"))
      else:
        nibabel.save(nibabel.Nifti1Image(scan, nifti_affine),
                     str(src / split / "image" / f"{name}.nii.gz"))
        nibabel.save(nibabel.Nifti1Image(label.astype(np.float32), nifti_affine),
                     str(src / split / "label" / f"{name}.nii"))
      written[name] = (scan, label)
  return src, written


def test_volume_label_folders_with_nifti_npy_and_dicom(folder3d, tmp_path):
  src, written = folder3d
  path = _prepare("segvolumes/scans", src, tmp_path)
  b, train = _read(path, "train")
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {
      "train": 3, "validation": 1}
  meta = dict(b.info.metadata)
  assert meta["label_values"] == [0, 1, 2] and meta["ndim"] == 3 and meta["channels"] == 1
  assert meta["shape"] == [None, None, None, 1] and meta["affine_frame"] == "RAS"
  assert sum(meta["class_voxels"]["train"]) == sum(w[1].size for n, w in written.items()
                                                   if n != "d")
  by_name = {ex["file"].decode().split("/")[-1]: ex for ex in train}
  assert set(by_name) == {"a.npy", "b.nii.gz", "c"}
  a, bb, c = by_name["a.npy"], by_name["b.nii.gz"], by_name["c"]
  np.testing.assert_allclose(a["image"][..., 0], written["a"][0])
  assert np.isnan(a["spacing"]).all() and np.isnan(a["affine"]).all()   # .npy: unknown
  np.testing.assert_allclose(bb["spacing"], [2, 3, 4])
  np.testing.assert_allclose(bb["affine"], np.diag([2.0, 3.0, 4.0, 1.0]))
  assert c["image"].shape == (4, 5, 6, 1) and c["spacing"] == pytest.approx([2.5, .7, .9], 1e-4)
  assert c["image"][1, 0, 0, 0] == 100     # slice 1 in geometric order (stored 100 k + ...)
  for name, ex in by_name.items():
    np.testing.assert_array_equal(ex["mask"], written[name.split(".")[0]][1])
    assert ex["mask"].dtype == np.uint8 and ex["image"].dtype == np.float32


def test_volume_label_folder_refusals(folder3d, tmp_path):
  import nibabel
  src, written = folder3d
  val = src / "validation" / "label"
  nibabel.save(nibabel.Nifti1Image(written["d"][1], np.diag([2.0, 3.0, 4.5, 1.0])),
               str(val / "d.nii"))
  _refused("segvolumes/v", src, tmp_path, r"validation/label/d.nii: voxel spacing \(2.0, 3.0, "
           r"4.5\) mm differs from its scan validation/image/d.nii.gz \(2.0, 3.0, 4.0\) mm")
  nibabel.save(nibabel.Nifti1Image(written["d"][1][:, :, :3], np.diag([2.0, 3.0, 4.0, 1.0])),
               str(val / "d.nii"))
  _refused("segvolumes/v", src, tmp_path, r"d.nii: label shape \(4, 5, 3\) differs from its "
           r"scan validation/image/d.nii.gz \(4, 5, 6\)")
  nibabel.save(nibabel.Nifti1Image(written["d"][1] * 0.5, np.diag([2.0, 3.0, 4.0, 1.0])),
               str(val / "d.nii"))
  _refused("segvolumes/v", src, tmp_path, r"d.nii: mask values are not integers \(e.g. 0.5\)")
  os.remove(val / "d.nii")
  np.save(val / "d.npy", written["d"][1])
  series = src / "train" / "image" / "c"
  os.remove(series / sorted(os.listdir(series))[1])
  _refused("segvolumes/v", src, tmp_path, r"train/image/c: uneven slice spacing")


# --------------------------------------------------------------------------- ISBI 2012

def _write_isbi(root, size=8):
  """A look-alike of the ISBI folder: 25 labelled + 30 test slices and SHA256SUMS."""
  rng = np.random.default_rng(0)
  lines = []
  for split, n, labelled in (("train", 25, True), ("test", 30, False)):
    for k in range(n):
      files = [("image", rng.integers(0, 256, (size, size)))]
      if labelled:
        files.append(("label", rng.choice([0, 255], (size, size))))
      for kind, array in files:
        rel = f"{split}/{kind}/{k:02d}.png"
        _png(os.path.join(root, rel), array)
        with open(os.path.join(root, rel), "rb") as f:
          lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {rel}\n")
  with open(os.path.join(root, "SHA256SUMS"), "w") as f:
    f.writelines(lines)
  with open(os.path.join(root, "SHA256SUMS"), "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_isbi_split_mapping_and_checksums(tmp_path):
  src = str(tmp_path / "isbi")
  sums = _write_isbi(src)
  with pytest.raises(prepare.PrepareError, match="SHA256SUMS: sha256 .* does not match the "
                     "expected 941b71cf"):   # the look-alike is not the pinned release
    prepare.prepare("isbi2012_em", src, str(tmp_path / "tfds"))
  path = prepare.prepare("isbi2012_em", src, str(tmp_path / "tfds"),
                         checksums={"SHA256SUMS": sums})
  assert path.endswith(os.path.join("segmentation", "isbi2012_em", "1.0.0"))
  b, val = _read(path, "validation")
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {
      "train": 20, "validation": 5, "test": 30}
  meta = dict(b.info.metadata)
  assert meta["class_names"] == ["membrane", "cell_interior"]
  assert meta["label_values"] == [0, 255] and "slices 20-24" in meta["split_rule"]
  assert [ex["file"].decode() for ex in val] == [f"train/image/{k}.png" for k in range(20, 25)]
  stored = np.asarray(Image.open(os.path.join(src, "train", "label", "20.png")))
  np.testing.assert_array_equal(val[0]["mask"], (stored == 255).astype(np.uint8))
  _, test = _read(path, "test")
  assert all((ex["mask"] == IGNORE).all() for ex in test)


def test_isbi_altered_or_missing_file_refused(tmp_path):
  src = str(tmp_path / "isbi")
  sums = _write_isbi(src)
  _png(os.path.join(src, "train", "label", "03.png"), np.zeros((8, 8)))
  with pytest.raises(prepare.PrepareError, match=r"train/label/03.png: sha256 does not match "
                     "SHA256SUMS"):
    prepare.prepare("isbi2012_em", src, str(tmp_path / "t"), checksums={"SHA256SUMS": sums})
  assert _write_isbi(src) == sums          # the same files again
  os.remove(os.path.join(src, "test", "image", "29.png"))
  with pytest.raises(prepare.PrepareError, match=r"test/image/29.png: listed in SHA256SUMS but "
                     "missing"):
    prepare.prepare("isbi2012_em", src, str(tmp_path / "t"), checksums={"SHA256SUMS": sums})
  assert not prepared.local_is_prepared("segmentation", "isbi2012_em", str(tmp_path / "t"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_ISBI), reason="../shared/datasets/isbi2012_em absent")
def test_isbi_real_files(tmp_path):
  start, cpu = time.perf_counter(), time.process_time()
  path = prepare.prepare("isbi2012_em", SHARED_ISBI, str(tmp_path / "tfds"))
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  b, train = _read(path, "train")
  meta = dict(b.info.metadata)
  assert meta["shape"] == [512, 512, 1] and meta["checksums"] == "verified against SHA256SUMS"
  membrane = meta["class_pixels"]["train"][0] / sum(meta["class_pixels"]["train"])
  assert 0.15 < membrane < 0.30        # README: ~22 % of pixels are membrane
  assert train[0]["image"].shape == (512, 512, 1) and set(np.unique(train[0]["mask"])) == {0, 1}
  size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
  print(f"isbi2012_em build: {seconds:.1f} s wall, {cpu:.1f} s CPU, {size / 2**20:.1f} MiB")


# --------------------------------------------------------------------------- phantoms

def test_phantoms_pure_function_and_classes():
  a = list(phantoms.examples("train", count=3))
  b = list(phantoms.examples("train", count=2))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["mask"], y["mask"])
  assert not np.array_equal(a[0]["mask"], a[1]["mask"])
  other = next(phantoms.examples("validation", count=1))
  assert not np.array_equal(other["mask"], a[0]["mask"])
  for ex in a:
    image, mask = ex["image"][..., 0], ex["mask"]
    assert image.shape == phantoms.SHAPE and mask.dtype == np.uint8
    assert set(np.unique(mask)) == set(range(len(phantoms.CLASS_NAMES)))
    mean = [image[mask == k].mean() for k in range(5)]
    assert mean[4] < mean[1] < mean[2] < mean[3]          # lesion < liver < kidney < spine
    assert (image == np.rint(image)).all()                 # integer HU, as CT stores them


def test_phantoms_small_build(tmp_path):
  spec = phantoms.local_spec(sizes={"train": 3, "validation": 1, "test": 1})
  b, train = _read(local.build(spec, str(tmp_path)), "train")
  meta = dict(b.info.metadata)
  assert meta["organ_classes"] == [1, 2, 3] and meta["lesion_classes"] == [4]
  assert meta["class_names"] == ["background", "liver", "kidney", "spine", "lesion"]
  first = next(phantoms.examples("train", count=1))
  np.testing.assert_array_equal(train[0]["image"], first["image"])
  np.testing.assert_array_equal(train[0]["mask"], first["mask"])
  np.testing.assert_allclose(train[0]["spacing"], [5, 5, 5])
  centre = train[0]["affine"] @ [23.5, 23.5, 23.5, 1]
  np.testing.assert_allclose(centre, [0, 0, 0, 1], atol=1e-9)


@pytest.mark.slow
def test_phantoms_full_build_time_and_size(tmp_path):
  start, cpu = time.perf_counter(), time.process_time()
  path = prepare.prepare("synthetic_phantoms", None, str(tmp_path))
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  b, _ = _read(path, "validation")
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == phantoms.SIZES
  size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
  print(f"synthetic_phantoms build: {seconds:.1f} s wall, {cpu:.1f} s CPU, "
        f"{size / 2**20:.1f} MiB")
