"""cnnlab.report (and its command, experiments/report.py) on small synthetic workdirs whose numbers are known, and the
run_info.json that cnnlab.reproduce records (no training here)."""
import json
import os
import re

import numpy as np
import pytest

RECIPES = "experiments.configs"

T0 = 1_700_000_000.0
PER_EPOCH = 60_000 // 128          # steps per epoch of MNIST at batch 128
FINAL_ACC = (0.99, 0.991, 0.992)   # -> 99.10 ± 0.10 % (sample std)
REACHED_AT = (50.0, 60.0, 70.0)    # seconds after the start: mean time to 99 % is 60 s
HARDWARE = {"cpu": "Test CPU 9000", "cpu_count": 4, "usable_cpus": 2, "memory_gb": 8.0,
            "gpus": [], "hostname": "testhost"}


def _write(path, name, data):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, name), "w") as f:
    if name.endswith(".jsonl"):
      f.writelines(json.dumps(r) + "\n" for r in data)
    else:
      json.dump(data, f)


def _config(model, dataset, seed):
  return {"model": {"name": model, "kwargs": {}}, "dataset": {"name": dataset},
          "batch_size": 128, "num_epochs": 2.0, "seed": seed}


def _rows(start, final_acc, reached_at):
  """Train rows every 100 steps; evals after epoch 1 (98.5 %) and epoch 2 (final_acc, logged
  ``reached_at`` seconds after ``start``)."""
  rows = []
  for step in range(100, 2 * PER_EPOCH + 1, 100):
    rows.append({"step": step, "time": start + 10 + step * (reached_at - 15) / (2 * PER_EPOCH),
                 "train_loss": 1.0 / step, "train_accuracy": 1 - 1.0 / step})
  rows.append({"step": PER_EPOCH, "time": start + 30, "eval_loss": 0.06,
               "eval_accuracy": 0.985})
  rows.append({"step": 2 * PER_EPOCH, "time": start + reached_at, "eval_loss": 0.03,
               "eval_accuracy": final_acc, "eval_count": 10_000.0})
  return rows


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  for seed, (acc, reached) in enumerate(zip(FINAL_ACC, REACHED_AT)):
    wd = os.path.join(root, "lenet5_mnist", f"seed{seed}")
    start = T0 + 1000 * seed
    _write(wd, "config.json", _config("lenet5", "mnist", seed))
    _write(wd, "metrics.jsonl", _rows(start, acc, reached))
    _write(wd, "final_metrics.json", {"eval_accuracy": acc, "eval_loss": 0.03,
                                      "eval_count": 10_000.0, "step": 2 * PER_EPOCH,
                                      "wall_time_sec": 55.0})
    _write(wd, "run_info.json", {
        "recipe": "lenet5_mnist", "config_arg": None, "group": "lenet5_mnist", "seed": seed,
        "command": f"python -m experiments.train --config=experiments/configs/lenet5_mnist.py "
                   f"--workdir=runs/lenet5_mnist/seed{seed} --config.seed={seed}",
        "group_command": "python -m experiments.reproduce --recipe=lenet5_mnist --seeds=3",
        "hardware": HARDWARE, "software": {"python": "3.11", "jax": "0.10.2"},
        "attempts": [{"start_time": start, "end_time": start + 80, "wall_time_sec": 80.0,
                      "exit_code": 0}],
        "start_time": start, "wall_time_sec": 80.0, "exit_code": 0})
  cm = (np.eye(10) * 990 + 1).astype(int).tolist()
  _write(os.path.join(root, "lenet5_mnist", "seed0"), "eval_test.json",
         {"eval_accuracy": 0.99, "confusion_matrix": cm, "per_class_accuracy": [0.99] * 10})
  # A seed that has not finished: counted as unfinished, not in the mean.
  wd = os.path.join(root, "lenet5_mnist", "seed3")
  _write(wd, "config.json", _config("lenet5", "mnist", 3))
  _write(wd, "metrics.jsonl", _rows(T0 + 5000, 0.5, 40.0)[:3])
  # A workdir trained by hand (no run_info.json): one run, matched by model and dataset.
  wd = os.path.join(root, "fmnist_by_hand")
  _write(wd, "config.json", _config("lenet5", "fashion_mnist", 0))
  _write(wd, "metrics.jsonl", _rows(T0, 0.905, 60.0))
  _write(wd, "final_metrics.json", {"eval_accuracy": 0.905, "eval_loss": 0.3, "step": 936,
                                    "eval_count": 10_000.0, "wall_time_sec": 42.0})
  os.makedirs(os.path.join(root, ".jax_cache", "xyz"))   # ignored
  return str(root)


@pytest.fixture(scope="module")
def report(runs_dir, tmp_path_factory):
  from cnnlab import report as report_lib
  out = tmp_path_factory.mktemp("docs")
  text = report_lib.build_report(runs_dir, str(out / "RESULTS.md"), str(out / "figures"),
                                 package=RECIPES)
  assert (out / "RESULTS.md").read_text() == text
  return text, out


def _row(text, first_cell):
  rows = [l for l in text.splitlines() if l.startswith(f"| {first_cell} ")]
  assert len(rows) == 1, (first_cell, rows)
  return [c.strip() for c in re.split(r"(?<!\\)\|", rows[0])[1:-1]]


def test_table_has_mean_std_from_the_files(report):
  text, _ = report
  cells = _row(text, "lenet5_mnist")
  assert cells[1:3] == ["lenet5", "mnist"]
  assert "99.10 ± 0.10 % test accuracy (n=3) ✓; 1 unfinished" == cells[3]
  assert cells[4].startswith("≥ 99.0 %")
  assert cells[6] == "2"                      # 936 steps at 468 steps per epoch
  assert cells[7] == "80 s"                   # run_info wall time (process), not the loop's 55
  assert cells[8] == "99 %: 60 s"             # mean of 50, 60, 70 s from the process start
  assert cells[9] == "Test CPU 9000 (2 cores)"
  assert cells[10] == "`python -m experiments.reproduce --recipe=lenet5_mnist --seeds=3`"
  # Per-seed section: each seed's own command and numbers.
  assert "--workdir=runs/lenet5_mnist/seed1 --config.seed=1" in text
  assert "| seed2 | 936 | 2.00 | 99.20 % | 0.0300 | 10000 | 80 s | 70 s (step 936) |" in text
  assert "| seed3 | 300 | 0.64 | unfinished |" in text
  assert "differ beyond the seed" not in text


def test_run_without_run_info_falls_back_and_says_so(report):
  text, _ = report
  cells = _row(text, "fmnist_by_hand (lenet5_fashion_mnist)")
  assert cells[3] == "90.50 % test accuracy (n=1)"
  assert cells[7] == "42 s ‡" and cells[9] == "—" and cells[10] == "—"
  assert "‡ training loop only" in text
  assert ".jax_cache" not in text


def test_recipes_without_runs_are_listed_as_not_yet_run(report):
  text, _ = report
  for name in ("lenet5_1998_mnist", "resnet20_cifar10", "alexnet_imagenet", "vgg16_imagenet",
               "googlenet_imagenet", "resnet50_imagenet"):
    cells = _row(text, name)
    assert cells[3] == "**not yet run**", name
    assert f"python -m experiments.reproduce --recipe={name} " in cells[10]
    assert cells[7].startswith("estimate: ") and cells[4] != "—"
  assert "8.75 % test error" in _row(text, "resnet20_cifar10")[4]
  # lenet5_fashion_mnist has a run (fmnist_by_hand), so it is not listed as pending.
  assert not [l for l in text.splitlines() if l.startswith("| lenet5_fashion_mnist |")]


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_figures_are_valid_pngs_linked_from_the_report(report):
  import matplotlib.image
  text, out = report
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
  assert sorted(os.path.basename(l) for l in links) == [
      "fmnist_by_hand_curves.png", "lenet5_mnist_confusion.png", "lenet5_mnist_curves.png"]
  for link in links:
    path = out / link
    assert path.stat().st_size > 1000
    assert _png_size(path) in ((1200, 800), (700, 700))
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.std() > 0   # decodes, and is not blank


def test_mean_std_and_formatting():
  from cnnlab import report as report_lib
  assert report_lib.config_differences([_config("lenet5", "mnist", 0),
                                        _config("lenet5", "mnist", 1)]) == []
  assert report_lib.config_differences([_config("lenet5", "mnist", 0),
                                        _config("lenet5_1998", "mnist", 1)]) == ["model.name"]
  assert report_lib.fmt_pct([0.99, 0.991, 0.992]) == "99.10 ± 0.10 %"
  assert report_lib.fmt_pct([0.5]) == "50.00 %"
  assert report_lib.fmt_duration(59.6) == "60 s"
  assert report_lib.fmt_duration(600) == "10.0 min"
  assert report_lib.fmt_duration(3 * 3600) == "3.0 h"


def test_time_to_accuracy_skips_gaps_between_attempts():
  from cnnlab import report as report_lib
  run = report_lib.RunRecord(
      name="s", path="", config={}, final=None, evals={},
      rows=[{"step": 1, "time": 105.0, "eval_accuracy": 0.5},
            {"step": 2, "time": 230.0, "eval_accuracy": 0.995}],
      info={"attempts": [{"start_time": 100.0, "end_time": 150.0},
                         {"start_time": 200.0, "end_time": 260.0}]})
  assert run.time_to_accuracy(0.99) == (80.0, 2)     # 50 s of attempt 1 + 30 s of attempt 2
  assert run.time_to_accuracy(0.999) is None


def test_reproduce_records_the_command_hardware_and_attempts(tmp_path):
  from cnnlab import reproduce
  from experiments.reproduce import HERE
  argv = reproduce.train_argv(HERE, "lenet5_mnist", None, "runs/g/seed1", 1, ["num_epochs=1"])
  assert argv[-2:] == ["--config.seed=1", "--config.num_epochs=1"]
  command = reproduce.shell_command(argv, env={"CNNLAB_RAW_DATA_DIR": "../shared/datasets"})
  assert command.startswith("CNNLAB_RAW_DATA_DIR=../shared/datasets python -m experiments.train")
  with pytest.raises(ValueError, match="valid: .*lenet5_mnist"):
    reproduce.parse_recipe("no_such_recipe", HERE)
  with pytest.raises(ValueError, match="valid: "):
    reproduce.parse_recipe("base", HERE)                  # the shared base is not a recipe
  assert reproduce.parse_recipe("resnet20_cifar10:56", HERE) == ("resnet20_cifar10", "56")
  wd = str(tmp_path / "seed0")
  for code in (3, 0):   # a failed attempt, then a successful one
    got = reproduce.run_seed(["-c", f"print('hello'); raise SystemExit({code})"], wd,
                             {"seed": 0, "command": "x", "hardware": reproduce.hardware()},
                             echo=False)
    assert got == code
  info = json.load(open(os.path.join(wd, "run_info.json")))
  assert [a["exit_code"] for a in info["attempts"]] == [3, 0]
  assert info["start_time"] == info["attempts"][0]["start_time"]
  assert info["wall_time_sec"] == pytest.approx(sum(a["wall_time_sec"]
                                                    for a in info["attempts"]))
  assert info["hardware"]["cpu"] and info["hardware"]["usable_cpus"] >= 1
  assert open(os.path.join(wd, "train.log")).read() == "hello\nhello\n"


def test_main_writes_the_report_and_rejects_a_missing_runs_dir(runs_dir, tmp_path):
  from absl import flags
  from absl.testing import flagsaver
  from experiments import report as report_lib
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  out = tmp_path / "RESULTS.md"
  with flagsaver.flagsaver(runs=runs_dir, out=str(out), figures=str(tmp_path / "fig")):
    report_lib.main(["report"])
  assert "99.10 ± 0.10 %" in out.read_text()
  assert (tmp_path / "fig" / "lenet5_mnist_curves.png").exists()
  with flagsaver.flagsaver(runs=str(tmp_path / "missing")):
    with pytest.raises(SystemExit) as e:
      report_lib.main(["report"])
  assert e.value.code == 2


def test_a_configs_expected_dict_overrides_the_table(monkeypatch):
  from cnnlab import report as report_lib
  from experiments.configs import lenet5_fashion_mnist
  monkeypatch.setattr(lenet5_fashion_mnist, "EXPECTED", raising=False, value=dict(
      paper="≥ 90.0 % test accuracy", target=["accuracy", ">=", 0.9], unknown_key=1))
  rec = report_lib.recipe("lenet5_fashion_mnist", RECIPES)
  assert rec.paper == "≥ 90.0 % test accuracy" and rec.target == ("accuracy", ">=", 0.9)
  assert rec.model == "lenet5" and rec.dataset == "fashion_mnist"   # kept from the table
  assert report_lib.recipe("no_such_recipe", RECIPES) is None


def test_code_identity_is_recorded_and_marked(tmp_path):
  """Each start records the commit and whether the tree was dirty; the report marks runs made
  by a dirty tree or another commit than its own."""
  from cnnlab import provenance
  from cnnlab.report import document
  from cnnlab.report.runs import read_run
  entry = provenance.record(str(tmp_path / "wd"), 0)
  assert entry["commit"] is None or len(entry["commit"]) == 40
  assert provenance.read(str(tmp_path / "wd"))[0]["start_step"] == 0
  clean = [{"commit": "a" * 40, "dirty": False}]
  assert provenance.summarize(clean, "a" * 40) is None
  assert provenance.summarize([{"commit": "a" * 40, "dirty": True}], "a" * 40) == "dirty tree"
  assert provenance.summarize(clean, "b" * 40) == "other commit aaaaaaa"
  assert provenance.summarize([], "a" * 40) == "unknown code"
  wd = tmp_path / "runs" / "g" / "seed0"
  _write(str(wd), "config.json", _config("lenet5", "mnist", 0))
  _write(str(wd), "final_metrics.json", {"eval_accuracy": 0.99, "step": 10})
  _write(str(wd), "code_version.jsonl", [{"commit": "c" * 40, "dirty": True}])
  row, notes = document.group_row("g", [read_run(str(wd))], None, "c" * 40)
  assert row.startswith("| g § |") and any("dirty tree" in n for n in notes)
  row, notes = document.group_row("g", [read_run(str(wd))], None, "d" * 40)
  assert any("other commit ccccccc" in n for n in notes)


def test_a_group_filled_by_two_invocations_lists_both_commands(tmp_path):
  """Seeds 0-1 from one reproduce call and seed 2 from a later --first_seed=2 call: the row
  names both commands (once each), not only the first seed's."""
  from cnnlab.report import document
  from cnnlab.report.runs import read_run
  first = "python -m experiments.reproduce --recipe=r --seeds=2"
  second = "python -m experiments.reproduce --recipe=r --seeds=1 --first_seed=2"
  runs = []
  for seed, command in enumerate((first, first, second)):
    wd = tmp_path / "runs" / "g" / f"seed{seed}"
    _write(str(wd), "config.json", _config("lenet5", "mnist", seed))
    _write(str(wd), "final_metrics.json", {"eval_accuracy": 0.99, "step": 10})
    _write(str(wd), "run_info.json", {"seed": seed, "group_command": command})
    runs.append(read_run(str(wd)))
  row, _ = document.group_row("g", runs, None)
  assert row.split(" | ")[-1] == f"`{first}; {second}` |"


def test_ucr_recipes_have_one_row_per_dataset_with_its_paper_number(tmp_path):
  """A recipe whose dataset comes from the command line (fcn1d_ucr) gets one row per archive
  dataset: each run group is judged against its own dataset's published accuracy (target:
  within TARGET_MARGIN of it), and datasets not run yet are pending with the command that runs
  them."""
  from cnnlab import report as report_lib
  from experiments.configs import fcn1d_ucr
  paper = fcn1d_ucr.PAPER_TEST_ACCURACY
  for group, dataset, accs in (("fcn1d_ucr_ItalyPowerDemand", "ucr/ItalyPowerDemand",
                                (0.955, 0.951)),
                               ("fcn1d_ucr_ArrowHead", "ucr/ArrowHead", (0.80, 0.81))):
    for seed, acc in enumerate(accs):
      wd = tmp_path / "runs" / group / f"seed{seed}"
      _write(wd, "config.json", {**_config("fcn1d", dataset, seed), "batch_size": 4})
      _write(wd, "final_metrics.json", {"eval_accuracy": acc, "eval_loss": 0.1, "step": 10,
                                        "eval_count": 100.0, "wall_time_sec": 5.0})
      _write(wd, "run_info.json", {"recipe": "fcn1d_ucr", "config_arg": None, "seed": seed,
                                   "command": "c", "wall_time_sec": 6.0})
  text = report_lib.build_report(str(tmp_path / "runs"), str(tmp_path / "R.md"),
                                 str(tmp_path / "fig"), package=RECIPES)
  italy = _row(text, "fcn1d_ucr_ItalyPowerDemand (fcn1d_ucr)")
  # 95.3 % is within 1.5 points of 96.3 %: met; 80.5 % is 3.8 points under 84.3 %: missed.
  assert italy[2] == "ucr/ItalyPowerDemand" and italy[3].endswith("(n=2) ✓"), italy
  assert f"{paper['ucr/ItalyPowerDemand']:.3f} test accuracy on ItalyPowerDemand" in italy[4]
  arrow = _row(text, "fcn1d_ucr_ArrowHead (fcn1d_ucr)")
  assert arrow[3].endswith("(n=2) ✗") and f"{paper['ucr/ArrowHead']:.3f}" in arrow[4]
  vowels = _row(text, "fcn1d_ucr_JapaneseVowels")
  assert vowels[3] == "**not yet run**"
  assert ("--override=dataset.name=ucr/JapaneseVowels --group=fcn1d_ucr_JapaneseVowels"
          in vowels[10])
  assert _row(text, "fcn1d_ucr")[3] == "**not yet run**"        # GunPoint, the default
  assert not [l for l in text.splitlines() if l.startswith("| fcn1d_ucr_ItalyPowerDemand |")]


def test_report_writes_into_the_runs_folder_unless_out_names_another_file(runs_dir, tmp_path):
  """`experiments.report --runs=R` writes R/RESULTS.md and R/figures; the repository's
  docs/RESULTS.md changes only when --out names it."""
  import hashlib
  import shutil
  from absl import flags
  from absl.testing import flagsaver
  from experiments import report as report_cmd
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  tracked = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                         "RESULTS.md")
  digest = lambda: hashlib.sha256(open(tracked, "rb").read()).hexdigest()   # noqa: E731
  before = digest()
  runs = str(tmp_path / "runs")
  shutil.copytree(runs_dir, runs)
  with flagsaver.flagsaver(runs=runs, out=None, figures=None):
    report_cmd.main(["report"])
  text = open(os.path.join(runs, "RESULTS.md")).read()
  assert f"Generated by `python -m experiments.report --runs={runs}` on " in text
  assert os.path.getsize(os.path.join(runs, "figures", "lenet5_mnist_curves.png")) > 1000
  assert "](figures/lenet5_mnist_curves.png)" in text
  assert digest() == before
  with flagsaver.flagsaver(runs=runs, out=str(tmp_path / "elsewhere" / "R.md"), figures=None):
    report_cmd.main(["report"])
  assert (tmp_path / "elsewhere" / "figures" / "lenet5_mnist_curves.png").exists()
  assert "--out=" in (tmp_path / "elsewhere" / "R.md").read_text()
  assert digest() == before
  # A second report over the same folder still finds the same groups (RESULTS.md and figures/
  # are not runs).
  from cnnlab.report import find_groups
  assert sorted(find_groups(runs)) == ["fmnist_by_hand", "lenet5_mnist"]


def test_a_selected_checkpoint_is_reported_as_such(tmp_path):
  """A run that reports the checkpoint it selected by train loss (final_metrics.json's
  selected_step / selected_by, the UCR recipes) is marked †, with the step, the criterion and
  the last evaluation's value; the legend does not call it the last step's."""
  from cnnlab import report as report_lib
  wd = tmp_path / "runs" / "fcn1d_ucr_ArrowHead" / "seed0"
  _write(wd, "config.json", {**_config("fcn1d", "ucr/ArrowHead", 0), "batch_size": 4})
  _write(wd, "final_metrics.json", {
      "eval_accuracy": 0.4667, "eval_loss": 1.0, "eval_count": 175.0, "step": 300,
      "last_eval_accuracy": 0.5, "last_eval_loss": 0.9, "selected_step": 260,
      "selected_by": "train_loss (min)", "wall_time_sec": 5.0})
  text = report_lib.build_report(str(tmp_path / "runs"), str(tmp_path / "R.md"),
                                 str(tmp_path / "fig"), package=RECIPES)
  row = _row(text, "fcn1d_ucr_ArrowHead (fcn1d_ucr)")
  assert row[3].startswith("46.67 % test accuracy † (n=1)"), row[3]
  assert ("† fcn1d_ucr_ArrowHead: the value of each run's selected checkpoint, chosen by "
          "train_loss (min) (never by the eval split), not of its last evaluation (seed0: step "
          "260 of 300, last 50.00 %).") in text
  assert "| seed0 | 300 |" in text
  assert "46.67 % † (step 260, chosen by train_loss (min); last step 50.00 %)" in text
  assert "(last step, every example" not in text and "marked †, the checkpoint" in text


def _training_config(module, arg=None, seed=0, **changes):
  """config.json as experiments.train writes it for a recipe (completed with the defaults)."""
  from cnnlab import config as config_lib
  c = module.get_config() if arg is None else module.get_config(arg)
  c.seed = seed
  for key, value in changes.items():
    setattr(c, key, value)
  return json.loads(json.dumps(config_lib.complete(c).to_dict(), default=list))


def test_fine_tuning_runs_are_labelled_by_their_recipe(tmp_path):
  """Runs of lenet5_fashion_finetune (LeNet-5 on Fashion-MNIST, like lenet5_fashion_mnist)
  are labelled by their own recipe arm, whether reproduce recorded it or they were trained by
  hand; a fine-tuning run that matches no recipe says what it was fine-tuned from; none is
  judged against lenet5_fashion_mnist's target, which stays "not yet run"."""
  from cnnlab import report as report_lib
  from experiments.configs import lenet5_fashion_finetune as recipe
  final = {"eval_accuracy": 0.8, "eval_loss": 0.5, "step": 600, "eval_count": 10_000.0,
           "wall_time_sec": 60.0}
  runs = tmp_path / "runs"
  for group, arg, changes in (("fmnist1k_finetune", "finetune", {}),
                              ("fmnist1k_scratch", "scratch", {}),
                              ("ft_longer", "finetune", {"num_epochs": 50.0})):
    _write(runs / group, "config.json", _training_config(recipe, arg, **changes))
    _write(runs / group, "final_metrics.json", final)
  wd = runs / "ft_reproduced" / "seed0"
  _write(wd, "config.json", _training_config(recipe, "finetune"))
  _write(wd, "final_metrics.json", final)
  _write(wd, "run_info.json", {"recipe": "lenet5_fashion_finetune", "config_arg": "finetune",
                               "seed": 0, "command": "c"})
  text = report_lib.build_report(str(runs), str(tmp_path / "R.md"), str(tmp_path / "fig"),
                                 package=RECIPES)
  for first_cell in ("fmnist1k_finetune (lenet5_fashion_finetune:finetune)",
                     "fmnist1k_scratch (lenet5_fashion_finetune:scratch)",
                     "ft_longer (fine-tuned from runs/lenet5_mnist)",
                     "ft_reproduced (lenet5_fashion_finetune:finetune)"):
    cells = _row(text, first_cell)
    assert cells[3] == "80.00 % test accuracy (n=1)" and cells[4] == "—", cells
  assert "(lenet5_fashion_mnist)" not in text
  assert _row(text, "lenet5_fashion_mnist")[3] == "**not yet run**"
  assert "Runs of `experiments/configs/lenet5_fashion_finetune.py:finetune`; no target." in text
