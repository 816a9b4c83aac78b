r"""The reproduction report of a runs folder: ``<runs>/RESULTS.md`` and its figures beside it,
from the runs' own files (the command; the report itself is ``cnnlab.report``).

    python -m experiments.report --runs=runs                  # runs/RESULTS.md, runs/figures/
    python -m experiments.report --runs=runs --out=docs/RESULTS.md   # the repository's page

The repository's tracked ``docs/RESULTS.md`` (and ``docs/figures``) is regenerated only on
purpose, by naming it with ``--out``; by default the report stays inside the runs folder it
describes. ``--figures`` defaults to ``figures/`` beside the Markdown file.

``--runs`` holds run groups, ``<runs>/<group>/<seed dir>/`` (``experiments/reproduce.py``
makes them; a group directory that is itself a workdir counts as a group of one). From each
workdir it reads ``config.json``, ``metrics.jsonl``, ``final_metrics.json``, ``run_info.json``
(command, hardware, attempt times; optional) and ``eval_<split>.json`` (optional). It writes one
table row per group — the recipe that made it (``name:argument``), model, dataset, our metric as
mean ± sample standard deviation over the finished seeds, the paper's metric and its source,
epochs, mean wall time, time to a target accuracy where the recipe defines one, hardware and the
exact command — then a section per group (per-seed numbers, curves of loss and accuracy against
steps and wall time with the seeds overlaid, a confusion matrix when ``eval_<split>.json``
exists). Every recipe with an EXPECTED entry that has no runs is listed with its paper target,
the command and a time estimate, as "not yet run".

Our metric is the final evaluation of each run (``final_metrics.json``, every example of the
eval split), never a best-of checkpoint chosen on the eval split: the last step's, or, marked †
with its step and criterion, the checkpoint a run selected without the eval split (the UCR
recipes: lowest train loss). Wall time and time-to-accuracy count from the start of the
training process (``run_info.json``), so start-up, data loading and compilation are included;
without ``run_info.json`` they fall back to the training loop's own time and are marked.
"""
from __future__ import annotations

import os

from absl import flags

from experiments import cli
from experiments.configs import RECIPES

# Shared helpers: tests import this module beside experiments/reproduce.py (--runs) and
# experiments/predict.py (--out); the flags mean the same in each.
_RUNS = cli.shared_string_flag("runs", "runs", "Root directory of run groups: "
                               "<runs>/<group>/<seed>/.")
_OUT = cli.shared_string_flag("out", None, "Markdown file to write (default: <runs>/RESULTS.md; "
                              "the repository's page: --out=docs/RESULTS.md).")
_FIGURES = cli.shared_string_flag("figures", None, "Directory for the PNG figures (default: "
                                  "figures/ beside --out).")


def outputs(runs: str, out: str | None, figures: str | None) -> tuple[str, str]:
  """(Markdown path, figures directory): ``<runs>/RESULTS.md`` unless ``out`` names another
  file; the figures beside the Markdown unless ``figures`` names a directory."""
  out = out or os.path.join(runs, "RESULTS.md")
  return out, figures or os.path.join(os.path.dirname(out) or ".", "figures")


def main(argv):
  from cnnlab.report import build_report
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments {argv[1:]!r}")
  runs = _RUNS.value
  if not os.path.isdir(runs):
    cli.usage_error(f"--runs={runs!r} is not a directory")
  out, figures = outputs(runs, _OUT.value, _FIGURES.value)
  if os.path.isdir(out):
    cli.usage_error(f"--out={out!r} is a directory; name the Markdown file to write")
  command = f"python -m experiments.report --runs={runs}" + (
      f" --out={_OUT.value}" if _OUT.value else "") + (
      f" --figures={_FIGURES.value}" if _FIGURES.value else "")
  build_report(runs, out, figures, package=RECIPES, command=command)
  print(f"wrote {out} and figures in {figures}")


if __name__ == "__main__":
  cli.run(main, uses_tensorflow=False)
