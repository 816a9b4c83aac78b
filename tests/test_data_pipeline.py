"""cnnlab.data pipeline: shapes per family (TFDS mock data and tiny prepared files),
determinism and restarts, per-host shares, exact eval counts, fail-fast."""
import os

import types
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import counting_compiles

from cnnlab import config as config_lib
from cnnlab.data import datasets, memory, pipeline, preprocess, streaming
from cnnlab.datasets import prepare, synthetic

tfds.disable_progress_bar()
HOST = dict(process_index=0, process_count=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Tiny synthetic cifar10 / mnist / imagenette / imagenet2012 built through prepare()."""
  root = tmp_path_factory.mktemp("tfds")
  src = root / "src"
  for name, write, kw in (
      ("cifar10", synthetic.write_cifar, dict(n_train=50, n_test=20)),
      ("mnist", synthetic.write_mnist, {}),
      ("imagenette", synthetic.write_imagenette, dict(per_class=5, val_per_class=3)),
      ("imagenet2012", synthetic.write_imagenet, dict(classes=2, per_class=3, n_val=5))):
    sums = write(str(src / name), **kw)
    cap = 64 if name == "mnist" else None
    prepare.prepare(name, str(src / name), str(root / "data"), checksums=sums,
                    max_examples_per_split=cap)
  return str(root / "data")


def cfg(name, data_dir=None, **kw):
  return pipeline.data_spec(name, data_dir=data_dir, **kw)


def catalogue_cfg(name, **kw):
  """The DataSpec of ``name`` resolved against the catalogue's facts (nothing prepared)."""
  section = {"name": name, **kw}
  return config_lib.resolve_data(section, datasets.describe(section, require_prepared=False))


def take(it, n):
  return [next(it) for _ in range(n)]


def same(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x) and len(a) == len(b)


def ids_of(images, info):
  """Example ids of solid-colour synthetic images (centre pixel, un-normalised)."""
  mean, std = np.array(info.mean) * 255, np.array(info.std) * 255
  h, w = images.shape[1:3]
  return [synthetic.color_id(img[h // 2, w // 2] * std + mean) for img in images]


# ------------------------------------------------------------------------------- catalogue

def test_catalogue_and_errors():
  assert set(datasets.names()) >= {"mnist", "fashion_mnist", "cifar10", "cifar100",
                                   "imagenet2012", "imagenette"}
  assert datasets.get("imagenet2012").splits == {"train": 1_281_167, "validation": 50_000}
  with pytest.raises(ValueError, match="valid datasets are mnist, fashion_mnist"):
    datasets.get("svhn")
  with pytest.raises(ValueError, match="has splits train, test"):
    catalogue_cfg("mnist", eval_split="validation")
  with pytest.raises(ValueError, match="allows standard, lenet1998"):
    catalogue_cfg("mnist", preprocess="inception")
  with pytest.raises(ValueError, match="gives 28x28"):
    catalogue_cfg("mnist", image_size=32)
  with pytest.raises(ValueError, match="unknown dataset option"):
    cfg("mnist", shufle_buffer=3)
  assert catalogue_cfg("mnist", preprocess="lenet1998").input_shape == (32, 32, 1)
  assert catalogue_cfg("cifar100").input_shape == (32, 32, 3)
  assert catalogue_cfg("imagenet2012").input_shape == (224, 224, 3)
  assert catalogue_cfg("imagenet2012", preprocess="alexnet").input_shape == (227, 227, 3)


def test_lenet1998_scaling():
  x = np.zeros((2, 28, 28, 1), np.uint8)
  x[0, 5, 5] = 255
  y = preprocess.mnist_lenet1998(x)
  assert y.shape == (2, 32, 32, 1) and y.dtype == np.float32
  np.testing.assert_allclose(y.max(), 1.175, rtol=1e-6)
  np.testing.assert_allclose(y[0, 7, 7, 0], 1.175, rtol=1e-6)   # (5, 5) moved by the 2-px pad
  assert np.allclose(np.delete(y.reshape(-1), 7 * 32 + 7), -0.1)


def test_cifar_crop_flip_matches_reference():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
  dy, dx, flip = preprocess.cifar_crop_flip_params(np.random.default_rng(1), 6)
  got = preprocess.cifar_crop_flip(x, dy, dx, flip)
  for i in range(6):
    ref = np.pad(x[i], ((4, 4), (4, 4), (0, 0)))[dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
    np.testing.assert_array_equal(got[i], ref[:, ::-1] if flip[i] else ref)


def test_imagenet_transforms_accept_png_too():
  import tensorflow as tf
  image = np.broadcast_to(np.array([200, 100, 50], np.uint8), (50, 70, 3))
  info = datasets.get("imagenet2012")
  for encoded in (tf.io.encode_jpeg(image, quality=100), tf.io.encode_png(image)):
    kw = dict(image_size=32, eval_resize=40, mean=info.mean, std=info.std)
    out = [preprocess.imagenet_eval(encoded, **kw)]
    for pre in info.preprocess_options:
      out.append(preprocess.imagenet_train(encoded, tf.constant([1, 2], tf.int64),
                                           preprocess=pre, scale_range=(40, 48), **kw))
    for x in out:
      assert x.shape == (32, 32, 3)
      np.testing.assert_allclose(x.numpy()[16, 16] * np.array(info.std) * 255
                                 + np.array(info.mean) * 255, [200, 100, 50], atol=2)


# ------------------------------------------------------------------- each family on mock data

@pytest.mark.parametrize("name,kw,shape", [
    ("mnist", {}, (28, 28, 1)),
    ("fashion_mnist", dict(preprocess="lenet1998"), (32, 32, 1)),
    ("cifar10", {}, (32, 32, 3)),
    ("cifar100", dict(preprocess="per_pixel_mean"), (32, 32, 3)),
    ("imagenet2012", dict(image_size=48, eval_resize=56), (48, 48, 3)),
    ("imagenette", dict(image_size=40, eval_resize=48, preprocess="vgg", scale_min=48,
                        scale_max=64, shuffle_buffer=8), (40, 40, 3)),
    ("imagenette", dict(image_size=40, eval_resize=48, preprocess="alexnet",
                        pca_lighting=0.1), (40, 40, 3)),
])
def test_family_on_mock_data(name, kw, shape):
  with tfds.testing.mock_data(num_examples=12):
    c = cfg(name, "/nonexistent/dir", download=True, **kw)   # mock's download: a no-op
    assert c.input_shape == shape
    batch = next(pipeline.train_batches(c, global_batch_size=4, seed=0, **HOST))
    assert batch["image"].shape == (4, *shape) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert np.isfinite(batch["image"]).all() and -4 < batch["image"].min() < 0
    assert batch["image"].max() < 4
    feed = pipeline.Feed(c)
    n = (len(feed.arrays(c.eval_split)[1]) if c.facts.family.in_memory
         else streaming.split_size(feed.builder, c.eval_split))   # what the mock holds
    ev = list(feed.eval_batches(global_batch_size=8, **HOST))
    assert len(ev) == -(-n // 8) and sum(int(b["mask"].sum()) for b in ev) == n
    assert ev[0]["image"].shape == (8, *shape) and ev[0]["mask"].dtype == bool


# ------------------------------------------------------------- tiny prepared files, per family

@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)),
                                        ("imagenette", (32, 32, 3)),
                                        ("imagenet2012", (32, 32, 3))])
def test_family_on_prepared_files(data_dir, name, shape):
  streams = datasets.get(name).family == "imagenet"
  kw = dict(eval_resize=40) if streams else {}
  if not streams:      # an option the family does not read is refused (a setting takes effect)
    with pytest.raises(ValueError, match="does not use it"):
      cfg(name, data_dir, eval_resize=40)
  c = cfg(name, data_dir, image_size=32 if shape[0] == 32 else None, **kw)
  batches = take(pipeline.train_batches(c, global_batch_size=4, seed=1, **HOST), 3)
  for b in batches:
    assert b["image"].shape == (4, *shape) and b["image"].dtype == np.float32
    assert ((0 <= b["label"]) & (b["label"] < datasets.get(name).num_classes)).all()
  ev = list(pipeline.eval_batches(c, global_batch_size=4, **HOST))
  n = c.eval_examples                         # from the prepared metadata
  assert c.eval_split == datasets.get(name).eval_split and n > 0
  assert sum(int(b["mask"].sum()) for b in ev) == n


def test_honours_tfds_data_dir(data_dir, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  assert cfg("cifar10").eval_examples == 20


def test_fail_fast_when_not_prepared(tmp_path):
  with counting_compiles() as compiles, pytest.raises(datasets.DatasetUnavailableError) as e:
    next(pipeline.train_batches(cfg("cifar10", str(tmp_path)), global_batch_size=8, seed=0,
                                **HOST))
  assert compiles == [] and os.listdir(tmp_path) == []     # nothing compiled, nothing written
  msg = str(e.value)
  assert "\n" not in msg and isinstance(e.value, RuntimeError)
  assert "python -m experiments.prepare_data --dataset=cifar10 --source_dir=DIR" in msg
  with pytest.raises(datasets.DatasetUnavailableError):
    cfg("imagenet2012", str(tmp_path), eval_split="validation")


# ------------------------------------------------------------------ determinism and restarts

def test_memory_determinism_restart_and_hosts(data_dir):
  c = cfg("cifar10", data_dir)
  run = lambda seed, start=0, **kw: take(pipeline.train_batches(   # noqa: E731
      c, global_batch_size=8, seed=seed, start_step=start, **(kw or HOST)), 14 - start)
  full = run(3)                               # 50 examples / 8 = 6 steps per epoch: 2+ epochs
  assert same(full, run(3))
  assert not same(full, run(4))
  assert same(full[9:], run(3, 9))            # restart mid-epoch
  plain = take(pipeline.train_batches(cfg("cifar10", data_dir, augment=False),
                                      global_batch_size=8, seed=3, **HOST), 6)
  epoch = [img.tobytes() for b in plain for img in b["image"]]
  assert len(set(epoch)) == 48                # no example twice within an epoch
  halves = [run(3, 0, process_index=p, process_count=2) for p in (0, 1)]
  for s in range(14):                         # two hosts' shares make up the one-host batch
    for k in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([halves[0][s][k], halves[1][s][k]]), full[s][k])


def test_streaming_determinism_restart_and_hosts(data_dir):
  info = datasets.get("imagenette")
  c = cfg("imagenette", data_dir, image_size=24, eval_resize=32, shuffle_buffer=4)
  run = lambda seed, start=0, **kw: take(pipeline.train_batches(   # noqa: E731
      c, global_batch_size=2, seed=seed, start_step=start, **(kw or HOST)), 17 - start)
  full = run(5)                               # 15 examples / 2 = 7 steps per epoch
  assert same(full, run(5))
  assert not same(full, run(6))
  assert same(full[10:], run(5, 10))          # restart inside epoch 1, mid-block
  assert same(full[7:], run(5, 7))            # restart on an epoch boundary
  for e in range(2):
    ids = sum((ids_of(b["image"], info) for b in full[7 * e:7 * e + 7]), [])
    assert len(set(ids)) == 14 and set(ids) <= set(range(15))
  shares = [take(pipeline.train_batches(c, global_batch_size=4, seed=5, process_index=p,
                                        process_count=2), 3) for p in (0, 1)]
  seen = [set(sum((ids_of(b["image"], info) for b in s), [])) for s in shares]
  assert not seen[0] & seen[1]                # disjoint host shares ...
  lo_hi = [streaming.host_range(15, p, 2) for p in (0, 1)]
  assert lo_hi == [(0, 7), (7, 15)]           # ... of a complete partition


def test_epoch_plan_covers_each_position_once():
  for n, block in ((15, 4), (100, 7), (8, 8), (5, 16)):
    for epoch in range(3):
      pos = [i for ranges, _, _ in streaming.epoch_plan(n, block, 0, epoch)
             for lo, hi in ranges for i in range(lo, hi)]
      assert sorted(pos) == list(range(n))


# -------------------------------------------------------------------------- exact eval counts

@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_memory_eval_counts_10000(process_count):
  n, g = 10_000, 96                           # 96 does not divide 10,000
  images = np.zeros((n, 2, 2, 1), np.uint8)
  ids = np.arange(n, dtype=np.int32)
  identity = lambda x, rng, sl, gb: x.astype(np.float32)   # noqa: E731
  per_host = [list(memory.eval_batches(images, ids, identity, global_batch_size=g,
                                       process_index=p, process_count=process_count))
              for p in range(process_count)]
  assert len({len(h) for h in per_host}) == 1 and len(per_host[0]) == 105
  seen = np.concatenate([b["label"][b["mask"]] for h in per_host for b in h])
  assert len(seen) == n and np.array_equal(np.sort(seen), ids)
  assert all(b["image"].shape[0] == g // process_count for h in per_host for b in h)


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_eval_counts_through_the_pipeline(data_dir, process_count):
  for name, n in (("cifar10", 20), ("imagenette", 9)):
    c = cfg(name, data_dir, image_size=24, eval_resize=32) if name != "cifar10" else \
        cfg(name, data_dir)
    per_host = [list(pipeline.eval_batches(c, global_batch_size=4, process_index=p,
                                           process_count=process_count))
                for p in range(process_count)]
    assert len({len(h) for h in per_host}) == 1 and len(per_host[0]) == -(-n // 4)
    images = np.concatenate([b["image"][b["mask"]] for h in per_host for b in h])
    assert len(images) == n
    if name == "imagenette":
      assert sorted(ids_of(images, datasets.get(name))) == list(range(15, 24))  # val ids
    else:
      assert len({img.tobytes() for img in images}) == n


def test_measure_throughput_on_mock(monkeypatch):
  """Counts the images of the timed batches only (not the warm-up) over the timed interval:
  with pipeline's clock replaced by one that advances 2 s per reading, 5 batches of 16 are
  80 images in 2 s."""
  ticks = iter(range(0, 1000, 2))
  monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
  with tfds.testing.mock_data(num_examples=64):
    rate = pipeline.measure_throughput(cfg("mnist", download=True), global_batch_size=16,
                                       num_batches=5, warmup=1)
  assert rate == 40.0


def test_background_propagates_errors():
  def boom():
    yield 1
    raise OSError("disk gone")
  it = memory.background(boom(), 2)
  assert next(it) == 1
  with pytest.raises(OSError, match="disk gone"):
    next(it)
