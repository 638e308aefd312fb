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


def _moge_version(sd: dict) -> int | None:
    """1 or 2 for a MoGe state dict (its DINOv2 under `backbone.*` / `encoder.backbone.*`), None
    for anything else (a plain DINOv2 state dict has no prefix)."""
    if any(isinstance(k, str) and k.startswith("encoder.backbone.") for k in sd):
        return 2
    if any(isinstance(k, str) and k.startswith("backbone.") for k in sd):
        return 1
    return None


def _refuse_moge_v2(path: str | Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a MoGe v2 checkpoint (keys 'encoder.backbone.*'). SpatialGeo was trained on "
        "the MoGe v1 backbone (Ruicheng/moge-vitl): v2 uses blocks [5, 11, 17, 23] and different "
        "weights, so it cannot stand in for it; give MoGe v1's model.pt (--moge) or "
        "vit_model.pt (--vit).")


def read_vit_model(path: str | Path) -> dict[str, torch.Tensor]:
    """`vit_model.pt` (SpatialGeo release): a plain DINOv2 state dict, no prefix -> our names."""
    sd = read_state_dict(path)
    version = _moge_version(sd)
    if version == 2:
        raise _refuse_moge_v2(path)
    if version == 1:
        raise CheckpointError(
            f"{path} holds a MoGe v1 model (keys 'backbone.*'), not the plain DINOv2 of "
            "vit_model.pt: pass it as --moge instead")
    return {GEO_PREFIX + k: v for k, v in sd.items()}


# MoGe v1's `model_config`: `encoder` names its DINOv2 (`dinov2_vitl14`), `intermediate_layers`
# the blocks its head reads (an int n: the last n)
MOGE_V1_LAYERS = 4


def read_moge_v1(path: str | Path) -> dict[str, torch.Tensor]:
    """MoGe v1 `model.pt` ({model_config, model}, or its bare state dict) -> its DINOv2 backbone
    under our names.

    MoGe v2 checkpoints are refused: their encoder takes blocks [5, 11, 17, 23] and has other
    weights, so they would silently give a different model than the released SpatialGeo
    (reference §5.3). So is a v1-style checkpoint whose `model_config` declares another encoder
    kind or other layers than MoGe v1's last 4 blocks (intermediate_layers 4).
    """
    ckpt = read_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a MoGe checkpoint (expected a dict with 'model')")
    wrapped = "model" in ckpt and isinstance(ckpt["model"], dict)
    sd = ckpt["model"] if wrapped else ckpt
    version = _moge_version(sd)
    if version == 2:
        raise _refuse_moge_v2(path)
    if version is None:
        raise CheckpointError(
            f"{path} has no 'backbone.*' tensors: not a MoGe v1 checkpoint (a plain DINOv2 "
            "state dict is vit_model.pt: pass it as --vit)")
    backbone = {strip_prefix(k, "backbone."): v
                for k, v in sd.items() if k.startswith("backbone.")}
    if not all(isinstance(v, torch.Tensor) for v in backbone.values()):
        raise CheckpointError(f"{path}: 'backbone.*' entries that are not tensors")
    if wrapped:
        _check_moge_v1_config(path, ckpt.get("model_config"), backbone)
    others = sorted({k.split(".")[0] for k in sd if not k.startswith("backbone.")})
    log.info("MoGe v1 %s: took %d backbone tensors, left the %s parts",
             path, len(backbone), others)
    return {GEO_PREFIX + k: v for k, v in backbone.items()}


def _check_moge_v1_config(path: str | Path, conf, backbone: dict) -> None:
    """CheckpointError unless `model_config` (when there is one) is MoGe v1's: a DINOv2 encoder
    name and intermediate_layers 4, or the same last four block indices as a list."""
    if conf is None:
        return
    if not isinstance(conf, dict):
        raise CheckpointError(f"{path}: model_config is a {type(conf).__name__}, not a dict")
    encoder = conf.get("encoder", "dinov2_vitb14")
    if not (isinstance(encoder, str) and encoder.startswith("dinov2_")):
        raise CheckpointError(
            f"{path}: model_config declares encoder {encoder!r}, not a MoGe v1 DINOv2 name "
            "(such as 'dinov2_vitl14'); SpatialGeo was trained on the MoGe v1 backbone")
    layers = conf.get("intermediate_layers", MOGE_V1_LAYERS)
    depth = sum(1 for k in backbone if _BLOCK.match(k))
    last = list(range(depth - MOGE_V1_LAYERS, depth))
    if layers != MOGE_V1_LAYERS and layers != last:
        raise CheckpointError(
            f"{path}: model_config declares intermediate_layers {layers!r}; SpatialGeo was "
            f"trained on MoGe v1's last {MOGE_V1_LAYERS} blocks (intermediate_layers "
            f"{MOGE_V1_LAYERS}, here blocks {last}), so this checkpoint cannot stand in for it")


_CLIP_MODEL_EXTRAS = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")
_CLIP_BUFFERS = ("vision_model.embeddings.position_ids",)


def clip_config_from_dir(directory: str | Path, select_layer: int = -2) -> ClipTowerConfig:
    """ClipTowerConfig from a local CLIP directory's config.json (CLIPModel or CLIPVisionModel)."""
    raw = read_json(Path(directory) / "config.json")
    try:
        vc = CLIPVisionConfig(**raw.get("vision_config", raw))
        return ClipTowerConfig(
            hidden_size=vc.hidden_size, intermediate_size=vc.intermediate_size,
            num_hidden_layers=vc.num_hidden_layers, num_attention_heads=vc.num_attention_heads,
            image_size=vc.image_size, patch_size=vc.patch_size, hidden_act=vc.hidden_act,
            layer_norm_eps=vc.layer_norm_eps, select_layer=select_layer)
    except (TypeError, ValueError) as e:          # ConfigError is a ValueError
        raise CheckpointError(f"{directory}/config.json is not a CLIP config: {e}") from e


PUBLISHED_CLIP = "openai/clip-vit-large-patch14-336"


def clip_config_named_by(llava_dir: str | Path) -> ClipTowerConfig:
    """The CLIP config of a merged model without `--clip`, found as upstream LLaVA finds its
    tower: `mm_vision_tower` (or `vision_tower`) of its config.json. A local directory gives its
    own config.json; the published ViT-L/14-336 name gives the built-in real-size config; any
    other name is a CheckpointError asking for --clip (nothing is downloaded)."""
    path = Path(llava_dir) / "config.json"
    raw = read_json(path)
    name = raw.get("mm_vision_tower") or raw.get("vision_tower")
    if isinstance(name, str) and name and Path(name).is_dir():
        return clip_config_from_dir(name)
    if name == PUBLISHED_CLIP:
        return ClipTowerConfig()
    where = (f"names the CLIP tower {name!r}, which is not a local directory"
             if name else "names no CLIP tower (mm_vision_tower)")
    raise CheckpointError(f"{path} {where}: give the CLIP tower's local directory with --clip")


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
