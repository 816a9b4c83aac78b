"""The UCR/UEA .ts reader (files the tests write), its TFDS build, the series inputs of the
in-memory back end, and the real GunPoint files of ../shared/datasets/ucr."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import spec_of

from cnnlab.data import datasets, memory, pipeline, series_prep
from cnnlab.datasets import prepare, ucr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_UCR = os.path.join(REPO, "..", "shared", "datasets", "ucr")

UNIVARIATE = """# a comment
@problemName Toy
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true 2 1
@data
1,2,3,4:1
4,3,2,1:2
0.5,0.5,1.5,-2e-1:1
"""

# Multivariate (2 dims), unequal lengths, string labels, a missing value; no @classLabel list.
MULTI = """@problemName Moves
@univariate false
@dimensions 2
@equalLength false
@missing true
@classLabel true
@data
1,2,3:10,20,30:walk
4,?,6,7,8:1,1,1,1,1:run
0,1:5,5:walk
"""


def write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


def test_univariate_reader_keeps_declared_label_order(tmp_path):
  ts = ucr.read_ts(write(tmp_path / "Toy_TRAIN.ts", UNIVARIATE))
  assert ts.header["problemname"] == "Toy" and ts.channels == 1
  assert [x.shape for x in ts.series] == [(4, 1)] * 3
  np.testing.assert_allclose(ts.series[2][:, 0], [0.5, 0.5, 1.5, -0.2], rtol=1e-6)
  assert ts.labels == ["1", "2", "1"]
  assert ucr.class_names(ts) == ("2", "1")      # the header's order, not sorted


def test_multivariate_unequal_string_labels_missing(tmp_path):
  ts = ucr.read_ts(write(tmp_path / "Moves_TRAIN.ts", MULTI))
  assert [x.shape for x in ts.series] == [(3, 2), (5, 2), (2, 2)]
  np.testing.assert_array_equal(ts.series[0], [[1, 10], [2, 20], [3, 30]])
  assert np.isnan(ts.series[1][1, 0]) and not np.isnan(ts.series[1][1, 1])
  assert ucr.class_names(ts) == ("run", "walk")   # nothing declared: sorted


def test_undeclared_numeric_labels_sort_as_numbers(tmp_path):
  text = "@problemName N\n@classLabel true\n@data\n" + "".join(
      f"{i},{i}:{label}\n" for i, label in enumerate(["10", "9", "2", "10"]))
  ts = ucr.read_ts(write(tmp_path / "N_TRAIN.ts", text))
  assert ucr.class_names(ts) == ("2", "9", "10")


BAD = {
    "dimensions": ("@dimensions 2\n@classLabel true a b\n@data\n1,2:3,4:a\n1,2:b\n", 5,
                   "1 dimension"),
    "number": ("@classLabel true a b\n@data\n1,2,x3:a\n", 3, "'x3'"),
    "label": ("@classLabel true a b\n@data\n1,2:a\n1,2:c\n", 4, "'c' is not one of"),
    "length": ("@equalLength true\n@classLabel true a b\n@data\n1,2:a\n1,2,3:b\n", 5,
               "length 3 in an equal-length"),
    "ragged_dims": ("@classLabel true a\n@data\n1,2:1,2,3:a\n", 3, "different lengths"),
    "no_label": ("@classLabel true a\n@data\n1,2,3\n", 3, "expected '<values>"),
    "timestamps": ("@timeStamps true\n@classLabel true a\n@data\n", 1, "time-stamped"),
    "regression": ("@classLabel false\n@data\n", 1, "no class labels"),
    "no_data": ("@classLabel true a\n", 1, "no @data line"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_files_one_line_error_naming_file_and_line(tmp_path, case):
  text, line, what = BAD[case]
  path = write(tmp_path / "Bad_TRAIN.ts", text)
  with pytest.raises(ucr.TsFormatError) as e:
    ucr.read_ts(path)
  msg = str(e.value)
  assert msg.startswith(f"{path}:{line}: ") and what in msg and "\n" not in msg


def test_names(tmp_path):
  assert ucr.check_name("ucr/GunPoint") == "GunPoint"
  for bad in ("ucr/", "ucr/../x", "GunPoint", "ucr/a b"):
    with pytest.raises(ValueError):
      datasets.get(bad)
  assert datasets.get("ucr/AnyName").family == "series"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Moves (multivariate, unequal, string labels, missing value) built into a data dir."""
  src = tmp_path_factory.mktemp("src")
  write(src / "Moves_TRAIN.ts", MULTI)
  write(src / "Moves_TEST.ts", MULTI.replace("0,1:5,5:walk", "9,8,7,6,5,4:1,2,3,4,5,6:run"))
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare("ucr/Moves", str(src), data_dir)
  return str(src), data_dir


def feed(data_dir, name="ucr/Moves", **options):
  """The Feed of ``name`` prepared in ``data_dir`` with dataset ``options``."""
  return pipeline.Feed(pipeline.data_spec(name, data_dir=data_dir, **options))


def test_build_records_classes_lengths_and_splits(built):
  _, data_dir = built
  facts = datasets.describe({"name": "ucr/Moves", "data_dir": data_dir})
  info = facts.info
  assert (facts.num_classes, facts.class_names, facts.stored_shape) == (
      2, ("run", "walk"), (6, 2))
  assert info.num_classes == 2 and info.class_names == ("run", "walk")
  assert info.input_shape == (6, 2)             # the longest series over both splits
  assert info.splits == {"train": 3, "test": 3}
  assert info.metadata["missing_values"] and not info.metadata["equal_length"]
  b = datasets.builder(info, data_dir)
  raw, labels = memory.load_split(b, "train", feature="series")
  assert [x.shape for x in raw] == [(3, 2), (5, 2), (2, 2)]   # stored order, as written
  assert labels.tolist() == [1, 0, 1]


def test_series_inputs_resampled_and_znormalised(built):
  _, data_dir = built
  linear = feed(data_dir, preprocess="raw", series_length=5, series_lengths="resample")
  x, _ = linear.arrays("train")
  assert x.shape == (3, 5, 2) and linear.spec.input_shape == (5, 2)
  np.testing.assert_allclose(x[0, :, 1], np.interp(np.linspace(0, 1, 5), [0, 0.5, 1],
                                                   [10, 20, 30]), rtol=1e-6)
  np.testing.assert_array_equal(x[1, :, 1], 1.0)              # already length 5
  same, _ = feed(data_dir).arrays("test")
  assert same[2, 0].tolist() == [9, 1]       # default: a multivariate dataset stays as given
  z, _ = feed(data_dir, preprocess="znorm", series_lengths="resample").arrays("test")
  assert z.shape == (3, 6, 2) and np.isfinite(z).all()
  last = z[2]                                                  # length 6: not resampled
  np.testing.assert_allclose(last.mean(0), 0, atol=1e-6)
  np.testing.assert_allclose(last.std(0), 1, rtol=1e-5)
  # A missing value becomes the series mean (0 after normalisation), then resampled.
  want = series_prep.series_to_length(np.nan_to_num(series_prep.series_znorm(
      np.array([[4, 1], [np.nan, 1], [6, 1], [7, 1], [8, 1]], np.float32))), 6)
  np.testing.assert_allclose(z[1], want, atol=1e-6)
  assert (z[1][:, 1] == 0).all()                               # constant channel -> 0


def test_eval_inputs_match_the_pipeline_arrays(built):
  src, data_dir = built
  ts = ucr.read_ts(os.path.join(src, "Moves_TEST.ts"))
  moves = feed(data_dir)
  x, _ = moves.arrays("test")
  np.testing.assert_allclose(moves.eval_inputs(ts.series), x)
  with pytest.raises(ValueError, match=r"series 0 has shape \(3, 1\); ucr/Moves takes"):
    moves.eval_inputs([np.zeros((3, 1))])


def test_prepare_errors_are_one_line(built, tmp_path):
  src, _ = built
  with pytest.raises(prepare.PrepareError, match="lacks Other_TRAIN.ts"):
    prepare.prepare("ucr/Other", src, str(tmp_path / "d"))
  bad = tmp_path / "bad"
  write(bad / "B_TRAIN.ts", MULTI)
  write(bad / "B_TEST.ts", MULTI.replace("0,1:5,5:walk", "0,1:5,5:fly"))
  with pytest.raises(prepare.PrepareError, match=r"B_TEST.ts:10: class label 'fly'"):
    prepare.prepare("ucr/B", str(bad), str(tmp_path / "d"))
  write(bad / "GunPoint_TRAIN.ts", MULTI)
  write(bad / "GunPoint_TEST.ts", MULTI)
  with pytest.raises(prepare.PrepareError, match="sha256 .* does not match .*f8424017"):
    prepare.prepare("ucr/GunPoint", str(bad), str(tmp_path / "d"))
  assert not datasets.is_prepared(datasets.get("ucr/GunPoint"), str(tmp_path / "d"))
  with pytest.raises(datasets.DatasetUnavailableError, match="ucr/B.*--source_dir=DIR"):
    datasets.describe({"name": "ucr/B", "data_dir": str(tmp_path / "d")})


@pytest.mark.skipif(not os.path.isdir(SHARED_UCR), reason="../shared/datasets/ucr not present")
def test_real_gunpoint_first_use_from_raw_data_dir(tmp_path, monkeypatch):
  """The README's counts: 50 train (24 / 26) and 150 test (76 / 74), length 150, labels 1 2;
  built the way train.py does on first use, from $CNNLAB_RAW_DATA_DIR/ucr/GunPoint."""
  monkeypatch.setenv(prepare.RAW_DATA_ENV, os.path.dirname(SHARED_UCR))
  cfg = {"name": "ucr/GunPoint", "data_dir": str(tmp_path)}
  assert prepare.prepare_if_needed(cfg).endswith(os.path.join("ucr", "GunPoint", "1.0.0"))
  info = datasets.describe(cfg).info
  assert info.splits == {"train": 50, "test": 150} and info.input_shape == (150, 1)
  assert info.class_names == ("1", "2")
  assert info.metadata["source_sha256"]["GunPoint_TRAIN.ts"] == ucr.KNOWN_SHA256[
      "GunPoint_TRAIN.ts"]
  gunpoint = feed(str(tmp_path), "ucr/GunPoint")
  for split, counts in (("train", [24, 26]), ("test", [76, 74])):
    x, y = gunpoint.arrays(split)
    assert np.bincount(y).tolist() == counts and x.shape == (sum(counts), 150, 1)
  assert prepare.prepare_if_needed(cfg) is None                  # already there


def test_cli_bad_line_exits_2_with_one_line(tmp_path):
  write(tmp_path / "src" / "T_TRAIN.ts", UNIVARIATE.replace("4,3,2,1:2", "4,3,2:2"))
  write(tmp_path / "src" / "T_TEST.ts", UNIVARIATE)
  r = subprocess.run([sys.executable, "-m", "experiments.prepare_data", "--dataset=ucr/T",
                      f"--source_dir={tmp_path / 'src'}", f"--data_dir={tmp_path / 'd'}"],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  last = r.stderr.strip().splitlines()[-1]
  assert "T_TRAIN.ts:11: series of length 3 in an equal-length file of length 4" in last


def _toy_archive(directory, n_train=30, n_test=12, length=16):
  """A learnable 2-class univariate problem (a bump early vs late) in .ts files."""
  rng = np.random.default_rng(0)
  for split, n in (("TRAIN", n_train), ("TEST", n_test)):
    lines = ["@problemName Bumps", "@univariate true", "@equalLength true",
             f"@seriesLength {length}", "@classLabel true early late", "@data"]
    for i in range(n):
      x = rng.normal(0, 0.1, length)
      x[(2 if i % 2 == 0 else length - 6):][:4] += 2.0
      lines.append(",".join(f"{v:.4f}" for v in x) + (":early" if i % 2 == 0 else ":late"))
    write(directory / f"Bumps_{split}.ts", "\n".join(lines) + "\n")


def test_ucr_recipes_resolve_with_the_paper_protocol(tmp_path):
  """Batch min(16 | 64, n/10), class count and input shape from the prepared dataset; Adam
  1e-3; halving after 50 epochs without train-loss improvement, floor 1e-4; the reported model
  is the lowest-train-loss checkpoint."""
  from cnnlab import config as config_lib
  from experiments.configs import fcn1d_ucr, resnet1d_ucr
  _toy_archive(tmp_path / "src", n_train=230)
  prepare.prepare("ucr/Bumps", str(tmp_path / "src"), str(tmp_path / "d"))
  for module, batch, epochs in ((fcn1d_ucr, 16, 2000), (resnet1d_ucr, 23, 1500)):
    c = module.get_config()
    c.dataset.name, c.dataset.data_dir = "ucr/Bumps", str(tmp_path / "d")
    spec = spec_of(c)
    assert spec.loop.global_batch == batch and spec.loop.steps_per_epoch == 230 // batch
    assert spec.model.num_classes == 2 and spec.model.input_shape == (16, 1)
    assert spec.loop.total_steps == epochs * (230 // batch)
    s = spec.schedule
    assert (s.name, s.peak, s.plateau_factor, s.plateau_patience, s.plateau_min_lr) == (
        "plateau", 1e-3, 0.5, 50, 1e-4)
    assert s.plateau_every_steps == spec.loop.steps_per_epoch       # one measurement/epoch
    assert (spec.loop.best_metric, spec.loop.best_mode, spec.loop.report_best) == (
        "train_loss", "min", True)
    assert spec.loop.checkpoint_every == spec.loop.steps_per_epoch
    assert spec.loop.checkpoint_best_only
    assert spec.data.options["preprocess"] == "znorm_univariate"


def test_fcn_recipe_trains_end_to_end(tmp_path):
  """A few epochs of the FCN recipe through train_and_evaluate on a written archive dataset:
  final metrics come from the lowest-train-loss checkpoint."""
  from cnnlab.training import train_and_evaluate
  from experiments.configs import fcn1d_ucr
  _toy_archive(tmp_path / "src")
  prepare.prepare("ucr/Bumps", str(tmp_path / "src"), str(tmp_path / "d"))
  c = fcn1d_ucr.get_config()
  c.dataset.name, c.dataset.data_dir = "ucr/Bumps", str(tmp_path / "d")
  c.num_epochs = 4.0                        # batch 3 -> 10 steps per epoch, 40 steps
  c.compilation_cache_dir = ""
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert final["step"] == 40 and final["selected_by"].startswith("train_loss")
  assert final["selected_step"] in (10, 20, 30, 40) and 0.0 <= final["eval_accuracy"] <= 1.0
