"""Command-line mistakes on a recipe are one clean line (issue 28 item 2): a typo in a recipe's
arm names the recipe's own error, a missing file says so, a key typo names the whole key and
the near miss, a value of the wrong type keeps its quotes — no escaped quotes, no literal \\n."""
import subprocess
import sys

import pytest

from conftest import ROOT

CASES = [
    (["--config=experiments/configs/lenet5_fashion_finetune.py:finetun"],
     "--config=experiments/configs/lenet5_fashion_finetune.py:finetun: ValueError: "
     "arm='finetun' is not one of finetune, scratch"),
    (["--config=experiments/configs/no_such_recipe.py"],
     "--config=experiments/configs/no_such_recipe.py: no such file"),
    (["--config=experiments/configs/lenet5_mnist.py", "--config.num_epoch=3"],
     "--config.num_epoch: no such config key; did you mean num_epochs?"),
    (["--config=experiments/configs/lenet5_mnist.py", "--config.optimizer.momentun=0.5"],
     "--config.optimizer.momentun: no such config key; did you mean momentum?"),
    (["--config=experiments/configs/lenet5_mnist.py", "--config.batch_size=abc"],
     "--config.batch_size=abc: invalid literal for int() with base 10: 'abc'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,expected", CASES, ids=["arm", "missing", "key", "nested", "type"])
def test_command_line_mistakes_are_one_clean_line(args, expected, tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.train", *args,
                         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
  assert "\\n" not in lines[0] and "\\'" not in lines[0]
