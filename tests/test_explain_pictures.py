"""cnnlab.explain's pictures from plain arrays: heat maps over 1-D series, 2-D images and 3-D
volumes; filter and feature-map grids of every rank; the confident-mistakes gallery. Each is
a valid PNG of the documented size with something drawn in it."""
import matplotlib.image
import numpy as np
import pytest

from cnnlab.explain import figures, grids, heatmaps


def _png(path, size=None):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  wh = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
  if size is not None:
    assert wh == size, (path, wh)
  assert matplotlib.image.imread(path).std() > 0.01, path    # not a blank canvas
  return wh


def _grid_px(n, cell, dpi=100):
  rows, cols = figures.grid_shape(n)
  return round(cols * cell * dpi), round((rows * cell + figures.HEADER_INCHES) * dpi)


RS = np.random.RandomState(0)


@pytest.mark.parametrize("shape,size", [((50, 3), (1000, 630)), ((20, 24, 1), (800, 440)),
                                        ((20, 24, 3), (800, 440)),
                                        ((8, 10, 12, 1), (1100, 420))])
def test_heatmaps_of_every_rank(tmp_path, shape, size):
  x = RS.randn(*shape).astype(np.float32)
  heat = np.abs(RS.randn(*shape[:-1]))
  _png(heatmaps.plot_heatmap(x, heat, str(tmp_path / "h.png"), title="Grad-CAM: 7 (0.93)"),
       size)
  _png(heatmaps.plot_heatmap(x, heat - heat.mean(), str(tmp_path / "signed.png")), size)
  with pytest.raises(ValueError, match="heat map of its spatial shape"):
    heatmaps.plot_heatmap(x, heat[..., :-1], str(tmp_path / "bad.png"))


def test_volume_slices(tmp_path):
  x = RS.randn(8, 10, 12, 1)
  heat = np.zeros((8, 10, 12))
  heat[1, 2, 3] = 1.0
  _png(heatmaps.plot_heatmap(x, heat, str(tmp_path / "peak.png"), slices="peak"))
  _png(heatmaps.plot_heatmap(x, heat, str(tmp_path / "chosen.png"), slices=(1, None, 3)))
  with pytest.raises(ValueError, match="slice 20 is outside axis 0 of size 8"):
    heatmaps.plot_heatmap(x, heat, str(tmp_path / "bad.png"), slices=(20, None, None))


@pytest.mark.parametrize("kernel_shape", [(8, 2, 5), (3, 3, 4, 6), (3, 3, 3, 2, 4)])
def test_filters_of_every_rank(tmp_path, kernel_shape):
  path = grids.plot_filters(RS.randn(*kernel_shape), str(tmp_path / "f.png"), title="conv")
  _png(path, _grid_px(kernel_shape[-1], 0.8))
  path = grids.plot_filters(RS.randn(*kernel_shape), str(tmp_path / "f1.png"), in_channel=1)
  _png(path, _grid_px(kernel_shape[-1], 0.8))
  with pytest.raises(ValueError, match="in_channel=9"):
    grids.plot_filters(RS.randn(*kernel_shape), str(tmp_path / "bad.png"), in_channel=9)


@pytest.mark.parametrize("maps_shape", [(40, 6), (9, 9, 5), (6, 7, 8, 3)])
def test_feature_maps_of_every_rank(tmp_path, maps_shape):
  image = RS.randn(*maps_shape[:-1], 1)
  path = grids.plot_feature_maps(RS.randn(*maps_shape), str(tmp_path / "m.png"), image=image)
  _png(path, _grid_px(maps_shape[-1] + 1, 1.0))


def test_confident_mistakes_gallery(tmp_path):
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.99, 0.01]])
  labels = np.array([0, 0, 0, 1, 1])
  np.testing.assert_array_equal(grids.confident_mistakes(probs, labels), [4, 1, 2, 3])
  np.testing.assert_array_equal(grids.confident_mistakes(probs, labels, k=2), [4, 1])
  images = RS.rand(5, 12, 12, 1)
  path = grids.plot_mistakes(images, probs, labels, str(tmp_path / "g.png"),
                             class_names=["cat", "dog"], title="mistakes")
  _png(path, _grid_px(4, 1.4))
  _png(grids.plot_mistakes(RS.randn(5, 30, 2), probs, labels, str(tmp_path / "s.png")))
  with pytest.raises(ValueError, match="no mistakes among the 2 inputs"):
    grids.plot_mistakes(images[:2], probs[:2], np.array([0, 1]), str(tmp_path / "n.png"))


def _feed(name, stored_shape, **options):
  """The Feed of a 2-class local dataset ``name`` as if prepared with examples of
  ``stored_shape`` (facts given directly: nothing is read)."""
  import dataclasses
  from cnnlab import config as config_lib
  from cnnlab.data import datasets, families, pipeline
  info = dataclasses.replace(datasets.get(name), input_shape=stored_shape, num_classes=2,
                             splits={"train": 4, "test": 2}, metadata={"prepared": True})
  family = families.get(info.family)
  facts = config_lib.DatasetFacts(
      name=name, family=family, num_classes=2, class_names=("a", "b"),
      stored_shape=stored_shape, split_sizes=dict(info.splits), train_split=info.train_split,
      eval_split=info.eval_split, task=family.task, info=info)
  return pipeline.Feed(config_lib.resolve_data({"name": name, **options}, facts))


def test_user_series_and_volumes_are_prepared_as_the_eval_pipeline_does(tmp_path):
  """Preparing users' .csv / .ts series and .npy volumes (no trained model needed): the data
  package's z-normalisation and resampling, one-line errors naming the file."""
  from cnnlab.explain import user_files
  series = _feed("ucr/GunPoint", (50, 1), preprocess="znorm", series_length=None,
                 series_lengths="resample")
  prepare = user_files.Preparer(series, (50, 1))
  values = np.sin(np.linspace(0, 3, 50)) * 5 + 2
  np.savetxt(tmp_path / "one_row.csv", values[None], delimiter=",")
  (tmp_path / "s.ts").write_text("@problemName t\n@univariate true\n@classLabel true a b\n"
                                 "@data\n" + ",".join(map(str, values)) + ":a\n"
                                 + ",".join(map(str, values[::2])) + ":b\n")
  (tmp_path / "bad.ts").write_text("@data\n1,2,x:a\n")
  got = [(n, prepare(n, raw)) for path in ("one_row.csv", "s.ts")
         for n, raw in user_files.read(str(tmp_path / path))]
  assert [n.split("/")[-1] for n, _ in got] == ["one_row.csv", "s.ts#0", "s.ts#1"]
  assert all(x.shape == (50, 1) for _, x in got)
  for _, x in got[:2]:
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-3      # z-normalised
  np.testing.assert_allclose(got[0][1], got[1][1], atol=1e-5)
  assert abs(got[2][1][-1, 0] - got[1][1][-2, 0]) < 0.2             # resampled, not padded
  with pytest.raises(user_files.InputError, match="bad.ts"):
    user_files.read(str(tmp_path / "bad.ts"))
  with pytest.raises(user_files.InputError, match=r"two.csv: .*\(50, 1\)|two.csv: .*takes"):
    np.savetxt(tmp_path / "two.csv", np.ones((50, 2)), delimiter=",")
    prepare(str(tmp_path / "two.csv"), user_files.read(str(tmp_path / "two.csv"))[0][1])
  volume = _feed("synthetic_volumes", (6, 6, 6, 1), preprocess="zscore", crop_shape=None,
                 flip_axes=(0, 1, 2))
  prepare = user_files.Preparer(volume, (6, 6, 6, 1))
  np.save(tmp_path / "v.npy", RS.rand(6, 6, 6) * 100)
  x = prepare(str(tmp_path / "v.npy"), user_files.read(str(tmp_path / "v.npy"))[0][1])
  assert x.shape == (6, 6, 6, 1) and abs(x.mean()) < 1e-4
  np.save(tmp_path / "w.npy", RS.rand(5, 6, 6))
  with pytest.raises(user_files.InputError, match=r"w.npy: .*\(6, 6, 6, 1\)"):
    prepare(str(tmp_path / "w.npy"), user_files.read(str(tmp_path / "w.npy"))[0][1])
  with pytest.raises(user_files.InputError, match="an image; this model takes volume"):
    prepare("x.png", np.zeros((6, 6, 1), np.uint8))
