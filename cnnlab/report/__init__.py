"""The reproduction report (docs/RESULTS.md) from the runs' own files — importable library
code; ``python -m experiments.report`` is its command.

    from cnnlab import report
    report.build_report("runs", "docs/RESULTS.md", "docs/figures")

Modules: expected (what each recipe should give, from the recipes' ``EXPECTED``), runs
(reading workdirs and groups), document (the Markdown and figures).
"""
from cnnlab.report.document import (build_report, config_differences, fmt_duration,  # noqa
                                    fmt_pct, group_row, mean_std)
from cnnlab.report.expected import (DEFAULT_PACKAGE, METRIC_LABELS, Recipe,  # noqa
                                    all_recipes, metric_value, recipe)
from cnnlab.report.runs import RunRecord, find_groups, group_recipe, read_run  # noqa
