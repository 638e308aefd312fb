"""Tower checkpoints: DINOv2 `vit_model.pt`, MoGe v1 `model.pt`, and a local CLIP directory.

Each reader returns tensors under our module names (`geo_tower.backbone.*`,
`clip_tower.vision_model.*`) together with the tower config that the tensors imply.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch
from transformers import CLIPVisionConfig

from spatialgeo_core.checkpoint.io import find_weights, read_file, read_json, read_state_dict
from spatialgeo_core.checkpoint.keymap import strip_prefix
from spatialgeo_core.config import ClipTowerConfig, GeometryTowerConfig
from spatialgeo_core.errors import CheckpointError, KeyMismatchError

log = logging.getLogger(__name__)

GEO_PREFIX = "geo_tower.backbone."
CLIP_PREFIX = "clip_tower.vision_model."
_BLOCK = re.compile(r"^blocks\.(\d+)\.norm1\.weight$")


def geometry_config_from_tensors(sd: dict[str, torch.Tensor], layers: list[int] | None = None,
                                 input_norm: str = "clip") -> GeometryTowerConfig:
    """The DINOv2 size implied by plain DINOv2 keys.

    Heads are embed_dim / 64 (all DINOv2 sizes).
    """
    for k in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if k not in sd:
            raise KeyMismatchError("DINOv2 backbone", missing=[k])
    depth = sum(1 for k in sd if _BLOCK.match(k))
    dim = sd["cls_token"].shape[-1]
    n_pos = sd["pos_embed"].shape[1] - 1
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise CheckpointError(f"pos_embed holds {n_pos} patch positions, not a square grid")
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in sd else 4 * dim
    return GeometryTowerConfig(
        embed_dim=dim, depth=depth, num_heads=dim // 64, mlp_ratio=hidden / dim,
        patch_size=sd["patch_embed.proj.weight"].shape[-1], pos_embed_grid=grid,
        layers=list(layers) if layers is not None else list(range(depth - 4, depth)),
        input_norm=input_norm)


def read_vit_model(path: str | Path) -> dict[str, torch.Tensor]:
    """`vit_model.pt` (SpatialGeo release): a plain DINOv2 state dict, no prefix -> our names."""
    sd = read_state_dict(path)
    prefixed = [k for k in sd if k.startswith(("backbone.", "encoder.backbone."))]
    if prefixed:
        raise CheckpointError(
            f"{path} has prefixed keys such as {prefixed[0]!r}: this is a full MoGe checkpoint, "
            "not vit_model.pt; pass it as --moge instead")
    return {GEO_PREFIX + k: v for k, v in sd.items()}


def read_moge_v1(path: str | Path) -> dict[str, torch.Tensor]:
    """MoGe v1 `model.pt` ({model_config, model}) -> its DINOv2 backbone under our names.

    MoGe v2 checkpoints are refused: their encoder takes blocks [5, 11, 17, 23] and has other
    weights, so they would silently give a different model than the released SpatialGeo
    (reference §5.3).
    """
    ckpt = read_file(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a MoGe checkpoint (expected a dict with 'model')")
    sd = ckpt["model"]
    if any(k.startswith("encoder.backbone.") for k in sd):
        raise CheckpointError(
            f"{path} is a MoGe v2 checkpoint (keys 'encoder.backbone.*'). SpatialGeo was trained "
            "on the MoGe v1 backbone (Ruicheng/moge-vitl): v2 uses blocks [5, 11, 17, 23] and "
            "different weights, so it cannot stand in for it.")
    backbone = {strip_prefix(k, "backbone."): v
                for k, v in sd.items() if k.startswith("backbone.")}
    if not backbone:
        raise CheckpointError(f"{path} has no 'backbone.*' tensors: not a MoGe v1 checkpoint")
    others = sorted({k.split(".")[0] for k in sd if not k.startswith("backbone.")})
    log.info("MoGe v1 %s: took %d backbone tensors, left the %s parts",
             path, len(backbone), others)
    return {GEO_PREFIX + k: v for k, v in backbone.items()}


_CLIP_MODEL_EXTRAS = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")
_CLIP_BUFFERS = ("vision_model.embeddings.position_ids",)


def clip_config_from_dir(directory: str | Path, select_layer: int = -2) -> ClipTowerConfig:
    """ClipTowerConfig from a local CLIP directory's config.json (CLIPModel or CLIPVisionModel)."""
    raw = read_json(Path(directory) / "config.json")
    vc = CLIPVisionConfig(**raw.get("vision_config", raw))
    return ClipTowerConfig(
        hidden_size=vc.hidden_size, intermediate_size=vc.intermediate_size,
        num_hidden_layers=vc.num_hidden_layers, num_attention_heads=vc.num_attention_heads,
        image_size=vc.image_size, patch_size=vc.patch_size, hidden_act=vc.hidden_act,
        layer_norm_eps=vc.layer_norm_eps, select_layer=select_layer)


def read_clip_dir(directory: str | Path) -> dict[str, torch.Tensor]:
    """A local `clip-vit-large-patch14-336` directory -> the vision tensors under our names.

    The text half of a CLIPModel checkpoint is left out on purpose; any other key is an error.
    """
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for f in find_weights(directory):
        for k, v in read_state_dict(f).items():
            if k in _CLIP_BUFFERS or k.startswith(_CLIP_MODEL_EXTRAS):
                continue
            if k.startswith("vision_model."):
                out[CLIP_PREFIX + strip_prefix(k, "vision_model.")] = v
            else:
                unexpected.append(k)
    if unexpected:
        raise KeyMismatchError(f"CLIP directory {directory}", unexpected=unexpected)
    if not out:
        raise CheckpointError(f"{directory} holds no 'vision_model.*' tensors")
    return out
