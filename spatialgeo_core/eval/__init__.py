"""Judge-free evaluation: answer parsing, SpatialRGPT-Bench metrics, file format and report.

Only the pure-Python answer parsers are re-exported here, so that importing this package (as the
ROS layer does for `parse_metric_value`) does not pull in pycocotools or matplotlib.
"""
from spatialgeo_core.eval.answer_parsing import (
    parse_choice,
    parse_clock_hours,
    parse_distance_m,
    parse_metric_value,
    parse_predicate,
)

__all__ = [
    "parse_choice",
    "parse_clock_hours",
    "parse_distance_m",
    "parse_metric_value",
    "parse_predicate",
]
