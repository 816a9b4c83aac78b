"""The reproduction report (``<runs>/RESULTS.md``, or the repository's docs/RESULTS.md when
regenerated on purpose) from the runs' own files — importable library code; ``python -m
experiments.report`` is its command.

    from cnnlab import report
    report.build_report("runs", "runs/RESULTS.md", "runs/figures")

Modules: expected (what each recipe should give, from the recipes' ``EXPECTED``, and each
recipe arm's settings), runs (reading workdirs and groups, and which recipe made them),
document (the Markdown and figures).
"""
from cnnlab.report.document import (build_report, config_differences, fmt_duration,  # noqa
                                    fmt_metric, fmt_pct, group_row, mean_std)
from cnnlab.report.expected import (DEFAULT_PACKAGE, METRIC_LABELS, Arm, Recipe,  # noqa
                                    all_recipes, metric_label, metric_value, recipe,
                                    recipe_arms)
from cnnlab.report.runs import (Identity, RunRecord, find_groups, group_recipe,  # noqa
                                identify, read_run)
