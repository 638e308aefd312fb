"""Two-stage SpatialGeo training (reference §4).

Typed stage configs, LLaVA-format data, a DDP / FSDP2 engine with exact resume, and exports in the
published layouts.

Entry points: `spatialgeo train --config FILE [--set key=value ...]` (cli.py), or in Python
`engine.train(config.load_config(path, overrides))`. Importing this package is cheap; the training
stack is imported by the modules that need it.
"""
