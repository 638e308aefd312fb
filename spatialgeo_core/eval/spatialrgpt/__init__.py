"""SpatialRGPT-Bench (`spatialgeo eval-bench`): its annotation format (format.py) and the run
that answers, scores and reports it (runner.py). Not the speed benchmarks: those are bench/."""
