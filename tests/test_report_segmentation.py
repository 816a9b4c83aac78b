"""cnnlab.report on segmentation runs: recipes whose EXPECTED metrics are pixel error, mean
Dice, a class's Dice or the mean Dice of several classes get rows with those numbers as
fractions, judged against their '<=' / '>=' targets (a fake runs folder; no training)."""
import json
import math
import os
import re

import pytest

from cnnlab import report as report_lib
from cnnlab.report import expected

ISBI = ({"eval_pixel_error": 0.0734, "eval_dice_membrane": 0.912, "eval_mean_dice": 0.93},
        {"eval_pixel_error": 0.0812, "eval_dice_membrane": 0.898, "eval_mean_dice": 0.92})
PHANTOMS = {"eval_dice_liver": 0.95, "eval_dice_kidney": 0.90, "eval_dice_spine": 0.84,
            "eval_dice_lesion": float("nan"), "eval_mean_dice": 0.9}


def _write(path, name, data):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, name), "w") as f:
    json.dump(data, f)


def _run(root, group, seed, model, dataset, final, recipe):
  wd = os.path.join(root, group, f"seed{seed}")
  _write(wd, "config.json", {"model": {"name": model, "kwargs": {}}, "batch_size": 8,
                             "dataset": {"name": dataset}, "seed": seed})
  _write(wd, "final_metrics.json", {**final, "eval_loss": 0.2, "eval_count": 5.0, "step": 20,
                                    "eval_split": "validation", "wall_time_sec": 30.0})
  _write(wd, "run_info.json", {"recipe": recipe, "config_arg": None, "seed": seed,
                               "command": f"train {group} {seed}", "wall_time_sec": 40.0})
  return wd


def _row(text, first_cell):
  rows = [l for l in text.splitlines() if l.startswith(f"| {first_cell} ")]
  assert len(rows) == 1, (first_cell, rows)
  return [c.strip() for c in re.split(r"(?<!\\)\|", rows[0])[1:-1]]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  for seed, final in enumerate(ISBI):
    wd = _run(str(root), "unet_isbi2012", seed, "unet", "isbi2012_em", final, "unet_isbi2012")
  _write(wd, "eval_validation.json", {   # as experiments.evaluate writes it: pixel counts
      **ISBI[1], "split": "validation", "class_names": ["membrane", "cell_interior"],
      "confusion_matrix": [[900, 100], [60, 2940]]})
  _run(str(root), "unet3d_phantoms", 0, "unet3d", "synthetic_phantoms", PHANTOMS,
       "unet3d_phantoms")
  out = tmp_path_factory.mktemp("docs")
  text = report_lib.build_report(str(root), str(out / "RESULTS.md"), str(out / "figures"))
  return text, out


def test_metric_values_of_a_segmentation_evaluation():
  final = {"eval_pixel_error": 0.0734, "eval_mean_dice": 0.91, "eval_dice_a": 0.8,
           "eval_dice_b": 0.6, "eval_iou_a": 0.5, "eval_dice_c": float("nan")}
  assert expected.metric_value(final, "pixel_error") == 0.0734
  assert expected.metric_value(final, "mean_dice") == 0.91
  assert expected.metric_value(final, "dice:a") == 0.8
  assert expected.metric_value(final, "dice:a+b") == pytest.approx(0.7)
  assert expected.metric_value(final, "iou:a") == 0.5
  assert expected.metric_value(final, "dice:a+c") is None        # NaN: class absent
  assert expected.metric_value(final, "dice:zzz") is None        # not evaluated
  assert expected.metric_value(final, "accuracy") is None        # not a classification
  assert expected.metric_value({"eval_accuracy": 0.9}, "error") == pytest.approx(0.1)
  with pytest.raises(ValueError, match="metric 'dice:' is not one of"):
    expected.metric_value(final, "dice:")
  assert expected.metric_label("dice:liver+kidney") == "mean Dice of liver, kidney"
  assert expected.metric_label("dice:membrane") == "membrane Dice"
  assert expected.metric_label("pixel_error") == "pixel error"


def test_fractions_are_formatted_as_fractions():
  assert report_lib.fmt_metric([0.0734], "pixel_error") == "0.0734"
  assert report_lib.fmt_metric([0.912, 0.898], "dice:membrane") == "0.905 ± 0.010"
  assert report_lib.fmt_metric([0.99], "accuracy") == "99.00 %"


def test_segmentation_recipes_get_rows_with_their_metrics_and_targets(report):
  from experiments.configs import unet3d_phantoms, unet_isbi2012
  text, _ = report
  isbi = _row(text, "unet_isbi2012")
  # Pixel error mean 0.0773 <= 0.10: met; membrane Dice mean 0.905 +- 0.0099.
  assert isbi[3] == "0.0773 ± 0.0055 val pixel error; 0.905 ± 0.010 val membrane Dice (n=2) ✓"
  assert unet_isbi2012.TARGET_PIXEL_ERROR == 0.10 and "0.0611" in isbi[4]
  phantoms = _row(text, "unet3d_phantoms")
  organs = sum(PHANTOMS[f"eval_dice_{o}"] for o in unet3d_phantoms.ORGANS) / 3
  assert organs < unet3d_phantoms.TARGET_ORGAN_DICE
  # The lesion's Dice is NaN (absent): left out; the organs' mean 0.8967 misses 0.90.
  assert phantoms[3] == "0.897 val mean Dice of liver, kidney, spine (n=1) ✗"
  assert "| seed0 | 20 |" in text and "0.0734 pixel error; 0.912 membrane Dice" in text
  assert "unfinished" not in text


def test_a_missed_error_target_is_marked(tmp_path):
  _run(str(tmp_path / "runs"), "unet_isbi2012", 0, "unet", "isbi2012_em",
       {"eval_pixel_error": 0.2, "eval_dice_membrane": 0.5}, "unet_isbi2012")
  text = report_lib.build_report(str(tmp_path / "runs"), str(tmp_path / "R.md"),
                                 str(tmp_path / "fig"))
  assert _row(text, "unet_isbi2012")[3] == ("0.2000 val pixel error; 0.500 val membrane Dice "
                                            "(n=1) ✗")


def test_the_pixel_confusion_is_drawn_and_linked(report):
  import matplotlib.image
  text, out = report
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
  confusion = [l for l in links if l.endswith("unet_isbi2012_confusion.png")]
  assert len(confusion) == 1
  image = matplotlib.image.imread(str(out / confusion[0]))
  assert image.ndim == 3 and image.std() > 0
  assert not math.isnan(image.mean())
