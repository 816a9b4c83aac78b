"""What each recipe is expected to give: each recipe's ``EXPECTED`` dict in
experiments/configs/<recipe>.py, read by ``cnnlab.report.expected`` (kept importable here)."""
from cnnlab.report.expected import (METRIC_LABELS, Recipe, all_recipes,  # noqa: F401
                                    metric_value, recipe)
