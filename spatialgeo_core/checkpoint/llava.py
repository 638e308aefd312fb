"""LLaVA-layout checkpoints: the `llava-v1.5-7b` base, the SpatialGeo LoRA release, merged models.

Routes (reference §5.4): (a) base + release (LoRA + `non_lora_trainables.bin`) + geometry + CLIP;
(b) a merged SpatialGeo directory. The route is chosen by the caller from the files given, never
from substrings of directory names. All tensors come back under our module names (see keymap.py).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import torch

from spatialgeo_core.checkpoint import keymap
from spatialgeo_core.checkpoint.io import read_directory, read_json, read_state_dict
from spatialgeo_core.config import (
    ClipTowerConfig,
    GeometryTowerConfig,
    LLMConfig,
    SpatialGeoConfig,
)
from spatialgeo_core.errors import CheckpointError, ConfigError, KeyMismatchError

log = logging.getLogger(__name__)

# v1.5 base says "llava"; SpatialGeo says "llava_llama"
LLAVA_MODEL_TYPES = ("llava", "llava_llama")


def read_llava_json(directory: str | Path) -> dict:
    """A LLaVA / SpatialGeo `config.json`, after checking it describes a model we can load."""
    raw = read_json(Path(directory) / "config.json")
    mt = raw.get("model_type")
    if mt not in LLAVA_MODEL_TYPES:
        raise CheckpointError(f"{directory}/config.json has model_type {mt!r}; expected one of "
                              f"{LLAVA_MODEL_TYPES} (a LLaVA-1.5 / SpatialGeo checkpoint)")
    if raw.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise CheckpointError(f"mm_projector_type {raw['mm_projector_type']!r} is not supported")
    if raw.get("mm_use_im_start_end") or raw.get("mm_use_im_patch_token"):
        raise CheckpointError("checkpoints with image start/end or patch tokens are not "
                              "SpatialGeo")
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError("only mm_vision_select_feature 'patch' (CLS dropped) is supported")
    if raw.get("rope_scaling"):
        raise CheckpointError(f"rope_scaling {raw['rope_scaling']} is not supported")
    return raw


def llava_config(directory: str | Path, clip: ClipTowerConfig,
                 geometry: GeometryTowerConfig | None) -> SpatialGeoConfig:
    """Our config from a LLaVA / SpatialGeo `config.json` plus the tower configs."""
    raw = read_llava_json(directory)
    if "mm_hidden_size" in raw and raw["mm_hidden_size"] != clip.hidden_size:
        raise CheckpointError(f"mm_hidden_size {raw['mm_hidden_size']} != CLIP width "
                              f"{clip.hidden_size}")
    try:
        clip = dataclasses.replace(
            clip, select_layer=raw.get("mm_vision_select_layer", clip.select_layer))
        heads = raw["num_attention_heads"]
        llm = LLMConfig(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"], num_attention_heads=heads,
            num_key_value_heads=raw.get("num_key_value_heads") or heads,
            max_position_embeddings=raw.get("max_position_embeddings", 4096),
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6), rope_theta=raw.get("rope_theta", 10000.0),
            hidden_act=raw.get("hidden_act", "silu"),
            tie_word_embeddings=raw.get("tie_word_embeddings", False),
            bos_token_id=raw.get("bos_token_id", 1), eos_token_id=raw.get("eos_token_id", 2),
            pad_token_id=raw.get("pad_token_id") or 0)
        return SpatialGeoConfig(clip=clip, geometry=geometry, llm=llm,
                                image_token_id=llm.vocab_size, image_aspect_ratio="pad",
                                max_length=raw.get("tokenizer_model_max_length", 2048))
    except KeyError as e:
        raise CheckpointError(f"{directory}/config.json has no {e.args[0]!r}") from None
    except ConfigError as e:
        raise CheckpointError(f"{directory}/config.json: {e}") from e


def _from_llava_keys(sd: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    out, ignored = {}, []
    for k, v in sd.items():
        if k.startswith(keymap.IGNORED_LLAVA_PREFIXES):
            ignored.append(k)
            continue
        out[keymap.from_llava(k)] = v
    if ignored:
        log.warning("%s: ignored %d tensors of the MoGe tower's redundant second CLIP copy "
                    "(model.moge_tower.clip_vision_tower.*); CLIP comes from the vision tower "
                    "keys",
                    what, len(ignored))
    return out


def read_llava_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a (sharded) LLaVA-layout directory under our names."""
    return _from_llava_keys(read_directory(directory), str(directory))


# ---- LoRA ---------------------------------------------------------------------------------------
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<target>.+)\.lora_(?P<ab>[AB])\.weight$")


def read_lora(
    release_dir: str | Path,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """PEFT LoRA directory -> ({llava weight name: (A [r, in], B [out, r])}, scale)."""
    d = Path(release_dir)
    cfg = read_json(d / "adapter_config.json")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{d}: peft_type {cfg.get('peft_type')!r} is not LORA")
    for flag in ("use_dora", "fan_in_fan_out"):
        if cfg.get(flag):
            raise CheckpointError(f"{d}: LoRA with {flag}=true is not supported")
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save"):
        if cfg.get(key):
            raise CheckpointError(f"{d}: LoRA with a non-empty {key} is not supported")
    if cfg.get("bias", "none") != "none":
        raise CheckpointError(f"{d}: LoRA bias {cfg['bias']!r} is not supported (expected 'none')")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (d / name).is_file():
            sd = read_state_dict(d / name)
            break
    else:
        raise CheckpointError(f"{d} has no adapter_model.safetensors or adapter_model.bin")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    unexpected = []
    for k, v in sd.items():
        m = _LORA_KEY.match(k)
        if m is None:
            unexpected.append(k)
            continue
        pairs.setdefault(m["target"] + ".weight", {})[m["ab"]] = v
    if unexpected:
        raise KeyMismatchError(f"LoRA adapter in {d}", unexpected=unexpected)
    half = [t for t, ab in pairs.items() if len(ab) != 2]
    if half:
        raise KeyMismatchError(f"LoRA adapter in {d} (A or B missing)", missing=half)
    bad_rank = [t for t, ab in pairs.items() if ab["A"].shape[0] != r or ab["B"].shape[1] != r]
    if bad_rank:
        raise CheckpointError(f"{d}: LoRA tensors of {bad_rank[:3]} do not have rank r={r}")
    return {t: (ab["A"], ab["B"]) for t, ab in pairs.items()}, scale


def merge_lora(weights: dict[str, torch.Tensor],
               lora: dict[str, tuple[torch.Tensor, torch.Tensor]],
               scale: float) -> None:
    """W += scale * B @ A in float32, in place, for LLaVA-named targets mapped to our names."""
    missing = [t for t in lora if keymap.from_llava(t) not in weights]
    if missing:
        raise KeyMismatchError("LoRA targets in the base model", missing=missing)
    for target, (a, b) in lora.items():
        key = keymap.from_llava(target)
        w = weights[key]
        delta = b.float() @ a.float()                         # [out, r] @ [r, in] = [out, in]
        if delta.shape != w.shape:
            raise CheckpointError(f"LoRA delta {tuple(delta.shape)} does not fit {key} "
                                  f"{tuple(w.shape)}")
        weights[key] = (w.float() + scale * delta).to(w.dtype)


def read_non_lora_trainables(release_dir: str | Path) -> dict[str, torch.Tensor]:
    """`non_lora_trainables.bin`:
    `base_model.model.model.{mm_projector,moge_mm_projector_list}.*`.
    """
    path = Path(release_dir) / "non_lora_trainables.bin"
    sd = read_state_dict(path)
    out, unexpected = {}, []
    for k, v in sd.items():
        if not k.startswith("base_model.model."):
            unexpected.append(k)
            continue
        llava_key = keymap.strip_prefix(k, "base_model.model.")
        ours = keymap.from_llava(llava_key)
        if not ours.startswith(("clip_adapter.", "geo_adapter.")):
            unexpected.append(k)
            continue
        out[ours] = v
    if unexpected:
        raise KeyMismatchError(str(path), unexpected=unexpected)
    return out


_STAGE1_KEY = re.compile(r"^model\.moge_mm_projector_list\.\d+\.[02]\.(weight|bias)$")


def read_stage1_adapter(path: str | Path) -> dict[str, torch.Tensor]:
    """A stage-1 `moge_mm_projector_list.bin` (`model.moge_mm_projector_list.{k}.{0,2}.*`) ->
    hierarchical adapter tensors under our names (`geo_adapter.{k}.{0,2}.*`)."""
    sd = read_state_dict(path)
    bad = [k for k in sd if not _STAGE1_KEY.match(k)]
    if bad:
        raise KeyMismatchError(f"stage-1 adapter file {path}", unexpected=bad)
    return {keymap.from_llava(k): v for k, v in sd.items()}
