"""The README as a new user reads it (issue 28 item 1): every ```python block runs as written,
in order, from a folder outside the repository, with nothing but a torchvision-format weights
file beside it (the test writes seeded ResNet-18 weights with cnnlab's own exporter)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def python_blocks() -> list[str]:
  text = open(os.path.join(ROOT, "README.md")).read()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_blocks():
  blocks = python_blocks()
  assert len(blocks) >= 3 and any("train_and_evaluate" in b for b in blocks)


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs_outside_the_repo(tmp_path):
  import jax
  from cnnlab import models
  from cnnlab.interop import torchvision as tv
  net = models.create("resnet18")
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0),
                                              jax.numpy.ones((1, 64, 64, 3)), train=False))
  variables = jax.tree.map(lambda s: jax.numpy.full(s.shape, 0.01, s.dtype), variables)
  tv.save(variables, "resnet18", str(tmp_path / "resnet18.safetensors"))
  script = tmp_path / "readme_blocks.py"
  script.write_text("\n\n".join(python_blocks()))
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                        text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert (tmp_path / "resnet18_from_cnnlab.safetensors").is_file()
  assert (tmp_path / "runs" / "tour" / "final_metrics.json").is_file()
