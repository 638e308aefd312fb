"""Judge-free evaluation: SpatialRGPT-Bench metrics, the file formats, the runners and the report.

The answer parser these scores rest on is spatialgeo_core.answer_parsing (the node reads answers
with it too).
"""
