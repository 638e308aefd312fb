"""Applying a training stage: which parameters train, at which learning rate; LoRA via peft.

`apply_stage` is the one place that changes trainability. It freezes the whole model, optionally
wraps the LLM with peft LoRA, unfreezes the components whose learning rate is > 0 and returns their
optimizer parameter groups (reference §9.21: explicit groups, LoRA 2e-4 and both adapters 2e-5 in
stage 2).

Parameter names after `apply_stage` (what the tests pin down):
    stage 1   geo_adapter.{k}.{0,2}.{weight,bias}
    stage 2   clip_adapter.*, geo_adapter.*, and
              llm.base_model.model.model.layers.{i}.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}
                  .lora_{A,B}.default.weight
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from torch import nn

from spatialgeo_core.adapters import init_normal_
from spatialgeo_core.checkpoint import keymap
from spatialgeo_core.checkpoint.llava import read_stage1_adapter
from spatialgeo_core.errors import CheckpointError, ConfigError, KeyMismatchError
from spatialgeo_core.model import SpatialGeoForCausalLM
from spatialgeo_core.optional import require
from spatialgeo_core.training.config import StageConfig

log = logging.getLogger(__name__)

COMPONENTS = ("clip_adapter", "geo_adapter", "llm", "lora")


def component_parameters(model: SpatialGeoForCausalLM,
                         component: str) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of one component, names as in `model.named_parameters()`."""
    named = list(model.named_parameters())
    if component == "clip_adapter":
        return [(n, p) for n, p in named if n.startswith("clip_adapter.")]
    if component == "geo_adapter":
        return [(n, p) for n, p in named if n.startswith("geo_adapter.")]
    if component == "llm":
        return [(n, p) for n, p in named if n.startswith("llm.") and ".lora_" not in n]
    if component == "lora":
        return [(n, p) for n, p in named if n.startswith("llm.") and ".lora_" in n]
    raise ValueError(f"unknown component {component!r}; known: {COMPONENTS}")


def apply_stage(model: SpatialGeoForCausalLM, stage: StageConfig,
                weight_decay: float = 0.0) -> list[dict]:
    """Make exactly the stage's components trainable; returns AdamW parameter groups, each with a
    `name` ("geo_adapter", "lora", ... and ".../no_decay" for biases and norms when decaying)."""
    lr = stage.lr
    if model.geo_adapter is None and lr.geo_adapter > 0:
        raise ConfigError("stage.lr.geo_adapter: the model has no geometry branch (CLIP-only)")
    model.requires_grad_(False)
    if stage.uses_lora:
        peft = require("peft")
        lcfg = peft.LoraConfig(r=stage.lora.r, lora_alpha=stage.lora.alpha,
                               lora_dropout=stage.lora.dropout,
                               target_modules=list(stage.lora.target_modules), bias="none",
                               task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            # peft reads transformers' deprecated alias `is_gradient_checkpointing` (a
            # FutureWarning per LoRA run that no user of ours can act on)
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            model.llm = peft.get_peft_model(model.llm, lcfg)
        if not component_parameters(model, "lora"):
            raise ConfigError(f"stage.lora.target_modules: {stage.lora.target_modules} match no "
                              "module of the LLM")
    groups = []
    for comp in COMPONENTS:
        rate = getattr(lr, comp)
        params = component_parameters(model, comp)
        for _, p in params:
            p.requires_grad_(rate > 0)
        if rate <= 0:
            continue
        decay = [p for n, p in params if p.ndim >= 2]
        no_decay = [p for n, p in params if p.ndim < 2]
        if weight_decay > 0:
            groups.append({"name": comp, "params": decay, "lr": rate,
                           "weight_decay": weight_decay})
            if no_decay:
                groups.append({"name": f"{comp}/no_decay", "params": no_decay, "lr": rate,
                               "weight_decay": 0.0})
        else:
            groups.append({"name": comp, "params": decay + no_decay, "lr": rate,
                           "weight_decay": 0.0})
    n_train = sum(p.numel() for g in groups for p in g["params"])
    n_all = sum(p.numel() for p in model.parameters())
    log.info("stage %s: %s trainable parameters of %s (%s)", stage.name, f"{n_train:,}",
             f"{n_all:,}", ", ".join(f"{g['name']} lr {g['lr']:g}" for g in groups))
    return groups


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


# ---- initialising the hierarchical adapter ----------------------------------------------------
def init_geo_adapter(model: SpatialGeoForCausalLM, how: str, seed: int) -> None:
    """stage.geo_adapter_init: "checkpoint" (keep), "normal" or a stage-1 adapter file."""
    if how == "checkpoint":
        return
    if model.geo_adapter is None:
        raise ConfigError("stage.geo_adapter_init: the model has no geometry branch (CLIP-only)")
    if how == "normal":
        init_normal_(model.geo_adapter, seed)
        log.info("hierarchical adapter initialised N(0, 0.02), biases 0")
        return
    path = Path(how)
    if not path.is_file():
        raise ConfigError(f"stage.geo_adapter_init: {how!r} is not 'checkpoint', 'normal' or an "
                          "existing moge_mm_projector_list.bin")
    tensors = read_stage1_adapter(path)
    local = {keymap.strip_prefix(k, "geo_adapter."): v for k, v in tensors.items()}
    expected = model.geo_adapter.state_dict()
    missing = set(expected) - set(local)
    mismatched = [f"{k}: {tuple(local[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in set(expected) & set(local) if local[k].shape != expected[k].shape]
    if missing or mismatched:
        raise KeyMismatchError(f"stage-1 adapter file {path}", missing=missing,
                               unexpected=set(local) - set(expected), mismatched=mismatched)
    try:
        model.geo_adapter.load_state_dict(local, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"cannot load {path}: {e}") from e
    log.info("hierarchical adapter loaded from %s", path)
