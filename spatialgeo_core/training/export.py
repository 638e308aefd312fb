"""Exports in the layouts the loaders read (reference §5.1), from `init` + the trained tensors.

    stage1_adapter  moge_mm_projector_list.bin:
                    `model.moge_mm_projector_list.{k}.{0,2}.{weight,bias}`
    lora            lora/: adapter_config.json + adapter_model.safetensors
                    (`base_model.model.model.layers.{i}.<proj>.lora_{A,B}.weight`)
                    + non_lora_trainables.bin
                    (`base_model.model.model.{mm_projector,moge_mm_projector_list}.*`)
    merged          merged/: our own format (config.json + model.safetensors + tokenizer), LoRA
                    merged in float32 (W + alpha / r * B @ A) by the core `merge_lora`

An export is a pure function of the `init` checkpoint, the trainable tensors of a training
checkpoint and the stage; `spatialgeo export` runs it on any saved checkpoint. Every file or
directory is written atomically.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from spatialgeo_core.checkpoint import keymap
from spatialgeo_core.checkpoint.llava import merge_lora
from spatialgeo_core.checkpoint.ours import read_ours, save_ours
from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.dtypes import torch_dtype
from spatialgeo_core.errors import CheckpointError
from spatialgeo_core.optional import require
from spatialgeo_core.training.checkpointing import atomic_dir, atomic_file
from spatialgeo_core.training.config import LoraSettings, StageConfig

log = logging.getLogger(__name__)

STAGE1_FILE = "moge_mm_projector_list.bin"
LORA_DIR = "lora"
MERGED_DIR = "merged"
_LORA_NAME = re.compile(
    r"^llm\.base_model\.model\.(?P<target>.+)\.lora_(?P<ab>[AB])\.default\.weight$")


def _adapters(trainable: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in trainable.items() if k.startswith(("clip_adapter.", "geo_adapter."))}


def lora_pairs(trainable: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{LLaVA weight name `model.layers.{i}.<proj>.weight`: (A [r, in], B [out, r])}."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in trainable.items():
        m = _LORA_NAME.match(k)
        if m:
            pairs.setdefault(m["target"] + ".weight", {})[m["ab"]] = v
    half = [t for t, ab in pairs.items() if len(ab) != 2]
    if half:
        raise CheckpointError(f"LoRA tensors without their A or B: {half[:5]}")
    return {t: (ab["A"], ab["B"]) for t, ab in pairs.items()}


def write_stage1_adapter(path: str | Path, trainable: dict[str, torch.Tensor]) -> Path:
    """Upstream stage-1 file: a torch pickle of the 4 MLPs under their LLaVA names."""
    geo = {keymap.to_llava(k): v.detach().cpu().contiguous()
           for k, v in trainable.items() if k.startswith("geo_adapter.")}
    if not geo:
        raise CheckpointError("no hierarchical adapter tensors among the trained ones")
    with atomic_file(path) as tmp:
        torch.save(geo, tmp)
    return Path(path)


def write_lora_dir(directory: str | Path, trainable: dict[str, torch.Tensor], lora: LoraSettings,
                   base_model: str = "") -> Path:
    """PEFT LoRA directory + non_lora_trainables.bin, as in the SpatialGeo release (§5.1 B)."""
    peft = require("peft")
    pairs = lora_pairs(trainable)
    if not pairs:
        raise CheckpointError("no LoRA tensors among the trained ones")
    tensors = {}
    for target, (a, b) in pairs.items():
        stem = "base_model.model." + target.removesuffix(".weight")
        tensors[f"{stem}.lora_A.weight"] = a.detach().cpu().contiguous()
        tensors[f"{stem}.lora_B.weight"] = b.detach().cpu().contiguous()
    non_lora = {"base_model.model." + keymap.to_llava(k): v.detach().cpu().contiguous()
                for k, v in _adapters(trainable).items()}
    cfg = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=sorted(lora.target_modules), bias="none",
                          task_type="CAUSAL_LM", base_model_name_or_path=base_model or None)
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(str(tmp))
        torch.save(non_lora, tmp / "non_lora_trainables.bin")
    return Path(directory)


def merged_tensors(init_tensors: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor],
                   stage: StageConfig) -> dict[str, torch.Tensor]:
    """The full model under our names: init, adapters and LLM weights replaced, LoRA merged."""
    out = dict(init_tensors)
    for k, v in trainable.items():
        if _LORA_NAME.match(k):
            continue
        if k not in out:
            raise CheckpointError(f"trained tensor {k} is not a tensor of the init model")
        out[k] = v
    if stage.uses_lora:
        pairs = lora_pairs(trainable)
        merge_lora(out, {t: (a.float(), b.float()) for t, (a, b) in pairs.items()},
                   stage.lora.scale)
    return out


def export_run(formats: list[str], out_dir: str | Path, init_dir: str | Path,
               trainable: dict[str, torch.Tensor], stage: StageConfig,
               dtype: str = "float16") -> dict[str, Path]:
    """Write each asked format under out_dir; returns {format: path}."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "stage1_adapter" in formats:
        written["stage1_adapter"] = write_stage1_adapter(out_dir / STAGE1_FILE, trainable)
    if "lora" in formats:
        if stage.lora is None:
            raise CheckpointError("a LoRA export needs a stage with LoRA")
        written["lora"] = write_lora_dir(out_dir / LORA_DIR, trainable, stage.lora,
                                         base_model=Path(init_dir).name)   # a name, not a path
    if "merged" in formats:
        cfg, init_tensors = read_ours(init_dir)
        cfg = dataclasses.replace(cfg, feature_drop_prob=stage.feature_drop_prob)
        written["merged"] = write_merged(out_dir / MERGED_DIR, cfg,
                                         merged_tensors(init_tensors, trainable, stage),
                                         tokenizer_dir=init_dir, dtype=dtype)
    for f, p in written.items():
        log.info("exported %s: %s", f, p)
    return written


def write_merged(directory: str | Path, cfg: SpatialGeoConfig, tensors: dict[str, torch.Tensor],
                 tokenizer_dir: str | Path, dtype: str = "float16") -> Path:
    dt = torch_dtype(dtype)
    cast = {k: v.to(dt) if v.is_floating_point() else v for k, v in tensors.items()}
    return save_ours(directory, cfg, cast, tokenizer_dir=tokenizer_dir)
