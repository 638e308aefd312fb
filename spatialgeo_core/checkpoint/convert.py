"""Assemble a complete SpatialGeo model from published pieces, ready to save in our format.

    llava_dir    LLaVA-layout directory: `llava-v1.5-7b` (route a) or a merged SpatialGeo model
                 (route b)
    release_dir  SpatialGeo release: adapter_config.json + adapter_model.* +
                 non_lora_trainables.bin
    vit_path     `vit_model.pt` (plain DINOv2), or
    moge_path    MoGe v1 `model.pt` (route c)
    clip_dir     local `clip-vit-large-patch14-336` (route d); optional when llava_dir holds CLIP
                 tensors

Geometry from vit_path / moge_path replaces geometry tensors of llava_dir, as upstream's loader
does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from spatialgeo_core.adapters import HierarchicalAdapter, init_normal_
from spatialgeo_core.checkpoint.keymap import strip_prefix
from spatialgeo_core.checkpoint.llava import (
    llava_config,
    merge_lora,
    read_llava_json,
    read_llava_weights,
    read_lora,
    read_non_lora_trainables,
)
from spatialgeo_core.checkpoint.ours import check_keys, save_ours
from spatialgeo_core.checkpoint.towers import (
    CLIP_PREFIX,
    GEO_PREFIX,
    clip_config_from_dir,
    clip_config_named_by,
    geometry_config_from_tensors,
    read_clip_dir,
    read_moge_v1,
    read_vit_model,
)
from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.dtypes import torch_dtype
from spatialgeo_core.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class Assembled:
    config: SpatialGeoConfig
    tensors: dict[str, torch.Tensor]
    tokenizer_dir: Path


def assemble(llava_dir: str | Path, release_dir: str | Path | None = None,
             vit_path: str | Path | None = None, moge_path: str | Path | None = None,
             clip_dir: str | Path | None = None, geo_layers: list[int] | None = None,
             geo_input_norm: str = "clip", new_geo_adapter: bool = False,
             seed: int = 0) -> Assembled:
    """`new_geo_adapter`: the stage-1 starting point (reference §4.1): geometry weights and no
    hierarchical adapter yet; one is made, initialised N(0, 0.02) with zero biases as upstream's
    missing keys were. Without it, geometry without an adapter is an error."""
    if vit_path and moge_path:
        raise CheckpointError("give the geometry weights once: vit_path or moge_path, not both")
    read_llava_json(llava_dir)                    # a config we cannot use fails before the weights
    tensors = read_llava_weights(llava_dir)
    if release_dir is not None:
        lora, scale = read_lora(release_dir)
        merge_lora(tensors, lora, scale)
        log.info("merged %d LoRA deltas (scale %.3g) from %s", len(lora), scale, release_dir)
        tensors.update(read_non_lora_trainables(release_dir))
    if vit_path or moge_path:
        geo = read_vit_model(vit_path) if vit_path else read_moge_v1(moge_path)
        tensors = {k: v for k, v in tensors.items() if not k.startswith(GEO_PREFIX)}
        tensors.update(geo)
    if clip_dir is not None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(CLIP_PREFIX)}
        tensors.update(read_clip_dir(clip_dir))
        clip_cfg = clip_config_from_dir(clip_dir)
    else:
        if not any(k.startswith(CLIP_PREFIX) for k in tensors):
            raise CheckpointError(f"{llava_dir} holds no CLIP tensors: give the local "
                                  "clip-vit-large-patch14-336 directory (--clip)")
        clip_cfg = clip_config_named_by(llava_dir)    # shapes are checked strictly later

    geo_plain = {strip_prefix(k, GEO_PREFIX): v for k, v in tensors.items()
                 if k.startswith(GEO_PREFIX)}
    has_adapter = any(k.startswith("geo_adapter.") for k in tensors)
    if geo_plain:
        geo_cfg = geometry_config_from_tensors(geo_plain, geo_layers, geo_input_norm)
        if new_geo_adapter:
            if has_adapter:
                raise CheckpointError(f"{llava_dir} already has a hierarchical adapter: "
                                      "convert it without asking for a new one")
            d_llm = tensors["llm.model.embed_tokens.weight"].shape[1]
            adapter = HierarchicalAdapter(len(geo_cfg.layers), geo_cfg.embed_dim, d_llm)
            init_normal_(adapter, seed)
            tensors.update({"geo_adapter." + k: v for k, v in adapter.state_dict().items()})
        elif not has_adapter:
            raise CheckpointError("geometry tower weights but no hierarchical adapter "
                                  "(moge_mm_projector_list): give the SpatialGeo release "
                                  "directory")
    elif has_adapter:
        raise CheckpointError("the checkpoint has a hierarchical adapter but no geometry tower: "
                              "give vit_model.pt (--vit) or MoGe v1 model.pt (--moge)")
    else:
        geo_cfg = None
        log.warning("no geometry tower or adapter: assembling a CLIP-only LLaVA-1.5 model")
    cfg = llava_config(llava_dir, clip_cfg, geo_cfg)
    tok_dir = Path(llava_dir)
    if not (tok_dir / "tokenizer.model").is_file() and release_dir is not None:
        tok_dir = Path(release_dir)
    if not (tok_dir / "tokenizer.model").is_file():
        raise CheckpointError(f"no tokenizer.model in {llava_dir}"
                              + (f" or {release_dir}" if release_dir else ""))
    return Assembled(cfg, tensors, tok_dir)


def save_assembled(asm: Assembled, out_dir: str | Path, dtype: str = "float16") -> Path:
    """Cast, check strictly against the model the config describes, and save in our format."""
    from spatialgeo_core.model import SpatialGeoForCausalLM

    dt = torch_dtype(dtype)
    tensors = {k: v.to(dt) if v.is_floating_point() else v for k, v in asm.tensors.items()}
    with torch.device("meta"):
        check_keys(SpatialGeoForCausalLM(asm.config), tensors, "the converted model")
    return save_ours(out_dir, asm.config, tensors, tokenizer_dir=asm.tokenizer_dir)
