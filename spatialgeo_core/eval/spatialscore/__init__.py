"""SpatialScore (v0, arXiv 2505.17012): the second benchmark of the SpatialGeo README, answered
by the pipeline and scored without a judge.

- scoring.py: upstream's v0 rules (quirks included) and a strict variant; accuracy blocks.
- data.py: the v0 data format, subsets (all, VGBench, Hard), the per-source instruction, boxes
  written in questions as set-of-marks regions (--draw-boxes).
- runner.py: `spatialgeo eval-spatialscore` (answer, or --score-only saved predictions).
- report.py: report.md with both modes side by side.

scoring.py and data.py need numpy only; runner.py and report.py need the [eval] extra (they reuse
eval-bench's runner, report helpers and plots).
"""
