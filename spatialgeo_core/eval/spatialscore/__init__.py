"""SpatialScore (v0, arXiv 2505.17012): the second benchmark of the SpatialGeo README, answered
by the pipeline and scored without a judge.

- scoring.py: upstream's v0 rules (quirks included) and a strict variant; accuracy blocks.
- data.py: the v0 data format, subsets (all, VGBench, Hard), the per-source instruction, boxes
  written in questions as set-of-marks regions (--draw-boxes).
- runner.py: `spatialgeo eval-spatialscore` (answer, or --score-only saved predictions).
- report.py: report.md with both modes side by side.

Only scoring.py and data.py are imported by this package's users without the [eval] extra;
the runner needs it (matplotlib, and the eval-bench machinery).
"""
