"""The stage-1 starting point (reference §4.1): llava-v1.5-7b + the MoGe v1 backbone + a new
hierarchical adapter initialised N(0, 0.02) with zero biases, as upstream's missing keys were;
saved in our format.

The same as `spatialgeo convert --new-geo-adapter` (checkpoint.convert.assemble with
new_geo_adapter=True), kept as `spatialgeo train-init` for the training commands.
"""
from __future__ import annotations

import logging
from pathlib import Path

from spatialgeo_core.checkpoint.convert import assemble, save_assembled

log = logging.getLogger(__name__)


def build_stage1_init(llava_dir: str | Path, out_dir: str | Path,
                      vit_path: str | Path | None = None,
                      moge_path: str | Path | None = None, clip_dir: str | Path | None = None,
                      geo_layers: list[int] | None = None, geo_input_norm: str = "clip",
                      seed: int = 0, dtype: str = "float16") -> Path:
    """Same as `spatialgeo convert --new-geo-adapter`."""
    asm = assemble(llava_dir, vit_path=vit_path, moge_path=moge_path, clip_dir=clip_dir,
                   geo_layers=geo_layers, geo_input_norm=geo_input_norm, new_geo_adapter=True,
                   seed=seed)
    out = save_assembled(asm, out_dir, dtype)
    log.info("stage-1 init model written to %s", out)
    return out
