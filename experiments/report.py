r"""The reproduction report: ``docs/RESULTS.md`` and its figures, from the runs' own files
(the command; the report itself is ``cnnlab.report``).

    python -m experiments.report --runs=runs --out=docs/RESULTS.md --figures=docs/figures

``--runs`` holds run groups, ``<runs>/<group>/<seed dir>/`` (``experiments/reproduce.py``
makes them; a group directory that is itself a workdir counts as a group of one). From each
workdir it reads ``config.json``, ``metrics.jsonl``, ``final_metrics.json``, ``run_info.json``
(command, hardware, attempt times; optional) and ``eval_<split>.json`` (optional). It writes one
table row per group — model, dataset, our metric as mean ± sample standard deviation over the
finished seeds, the paper's metric and its source, epochs, mean wall time, time to a target
accuracy where the recipe defines one, hardware and the exact command — then a section per
group (per-seed numbers, curves of loss and accuracy against steps and wall time with the seeds
overlaid, a confusion matrix when ``eval_<split>.json`` exists). Every recipe with an
EXPECTED entry that has no runs is listed with its paper target, the command and a
time estimate, as "not yet run".

Our metric is the final evaluation of each run (``final_metrics.json``: the last step, every
example of the eval split), never a best-of checkpoint. Wall time and time-to-accuracy count
from the start of the training process (``run_info.json``), so start-up, data loading and
compilation are included; without ``run_info.json`` they fall back to the training loop's own
time and are marked.
"""
from __future__ import annotations

import os

from absl import flags

from cnnlab.report import build_report
from experiments import cli

if "runs" not in flags.FLAGS:  # shared by experiments/report.py and experiments/reproduce.py
  flags.DEFINE_string("runs", "runs", "Root directory of run groups: <runs>/<group>/<seed>/.")
_OUT = flags.DEFINE_string("out", "docs/RESULTS.md", "Markdown file to write.")
_FIGURES = flags.DEFINE_string("figures", "docs/figures", "Directory for the PNG figures.")


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  if not os.path.isdir(flags.FLAGS.runs):
    cli.usage_error(f"--runs={flags.FLAGS.runs!r} is not a directory")
  build_report(flags.FLAGS.runs, _OUT.value, _FIGURES.value)
  print(f"wrote {_OUT.value} and figures in {_FIGURES.value}")


if __name__ == "__main__":
  cli.run(main, uses_tensorflow=False)
