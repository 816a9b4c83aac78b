"""``--help`` of the entry points a user runs on a trained workdir lists every flag the module
reads, whichever way the flag was defined (directly, or through experiments/cli.py's shared
helpers, which define a flag once for all entry points of a process), and prints no TensorFlow
start-up lines."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("evaluate", "predict", "visualize")
DISTRIBUTED = ("coordinator_address", "num_processes", "process_id")
# Ways a module names a flag it defines or reads.
PATTERNS = (r"DEFINE_\w+\(\s*\"(\w+)\"", r"shared_\w*flag\(\s*(?:flags\.DEFINE_\w+,\s*)?\"(\w+)\"",
            r"FLAGS\.(\w+)", r"FLAGS\[\"(\w+)\"\]")


def used_flags(module: str) -> set[str]:
  """The flags ``experiments/<module>.py`` defines or reads, from its source text."""
  with open(os.path.join(ROOT, "experiments", f"{module}.py")) as f:
    source = f.read()
  names = {m for p in PATTERNS for m in re.findall(p, source)}
  if "shared_config_flag(" in source:
    names.add("config")
  if "define_distributed_flags()" in source:
    names.update(DISTRIBUTED)
  return names - {"is_parsed", "mark_as_parsed"}


def test_used_flags_reads_the_sources():
  assert {"workdir", "inputs", "top_k", "out", "explain", "layer"} <= used_flags("predict")
  assert {"config", "torchvision_weights", *DISTRIBUTED} <= used_flags("evaluate")


@pytest.mark.slow   # three interpreters importing TensorFlow: ~15 s on an idle 2-core machine
def test_help_lists_every_flag_of_evaluate_predict_and_visualize():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  procs = {m: subprocess.Popen([sys.executable, "-m", f"experiments.{m}", "--help"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for m in ENTRY_POINTS}   # in parallel: ~10 s each
  for module, proc in procs.items():
    out, err = proc.communicate(timeout=240)
    assert proc.returncode in (0, 1) and "flags:" in out, (module, err)   # absl's --help: 1
    shown = set(re.findall(r"^\s+--(?:\[no\])?(\w+)", out, re.M))
    missing = used_flags(module) - shown
    assert not missing, f"{module} --help lacks {sorted(missing)}"
    assert "oneDNN" not in out + err and "absl::InitializeLog" not in out + err, module
    if module == "visualize":   # its example names the main job's workdir (README)
      assert "--workdir=runs/lenet5_mnist " in out and "seed0" not in out
