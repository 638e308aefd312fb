"""Builders of tiny checkpoints laid out exactly as the published files (reference §5).

The key names here are written from the reference, independently of
spatialgeo_core.checkpoint.keymap, so that a wrong mapping in the library fails the tests instead
of agreeing with itself.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.model import SpatialGeoForCausalLM
from spatialgeo_core.tiny import build_tokenizer

# our module prefix -> the name the published files use (reference §5.1 C)
REFERENCE_NAMES = {
    "clip_tower.vision_model.": "model.vision_tower.vision_tower.vision_model.",
    "geo_tower.backbone.": "model.moge_tower.backbone.",
    "geo_adapter.": "model.moge_mm_projector_list.",
    "clip_adapter.": "model.mm_projector.",
    "llm.lm_head.": "lm_head.",
    "llm.model.": "model.",
}
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def reference_name(ours: str) -> str:
    for a, b in REFERENCE_NAMES.items():
        if ours.startswith(a):
            return b + ours[len(a):]
    raise KeyError(ours)


def source_model(cfg: SpatialGeoConfig, seed: int = 0) -> SpatialGeoForCausalLM:
    torch.manual_seed(seed)
    m = SpatialGeoForCausalLM(cfg).eval()
    with torch.no_grad():               # make every tensor non-trivial (LayerScale, biases, ...)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def _llava_config(cfg: SpatialGeoConfig, model_type: str) -> dict:
    llm = cfg.llm
    d = {
        "model_type": model_type, "architectures": ["LlavaLlamaForCausalLM"],
        "vocab_size": llm.vocab_size, "hidden_size": llm.hidden_size,
        "intermediate_size": llm.intermediate_size, "num_hidden_layers": llm.num_hidden_layers,
        "num_attention_heads": llm.num_attention_heads,
        "num_key_value_heads": llm.num_key_value_heads,
        "max_position_embeddings": llm.max_position_embeddings, "rms_norm_eps": llm.rms_norm_eps,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False, "torch_dtype": "float16",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": cfg.clip.hidden_size,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
    }
    if model_type == "llava_llama":  # SpatialGeo's own configs carry the later keys (§1.3, §5.5)
        d.update({"mm_patch_merge_type": "flat", "tokenizer_model_max_length": cfg.max_length,
                  "tokenizer_padding_side": "right", "mm_projector_lr": 2e-5,
                  "moge_mm_projector_list_lr": 2e-5, "use_mm_proj": True,
                  "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False})
    return d


def _save_sharded(d: Path, tensors: dict[str, torch.Tensor], n_shards: int = 2) -> None:
    names = sorted(tensors)
    per = math.ceil(len(names) / n_shards)
    weight_map = {}
    for i in range(n_shards):
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in names[i * per:(i + 1) * per]}
        save_file(part, str(d / fname))
        weight_map.update({k: fname for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))


def write_clip_dir(d: Path, model: SpatialGeoForCausalLM) -> Path:
    """A local `clip-vit-large-patch14-336`-style directory: a full CLIPModel checkpoint (vision
    and text halves, projections, logit_scale) with `vision_model.*` keys, as the openai repo
    stores it."""
    d.mkdir(parents=True, exist_ok=True)
    c = model.cfg.clip
    sd = {"vision_model." + k: v.clone()
          for k, v in model.clip_tower.vision_model.state_dict().items()}
    sd["text_model.embeddings.token_embedding.weight"] = torch.randn(49408 // 64, 16)
    sd["text_model.final_layer_norm.weight"] = torch.ones(16)
    sd["visual_projection.weight"] = torch.randn(8, c.hidden_size)
    sd["text_projection.weight"] = torch.randn(8, 16)
    sd["logit_scale"] = torch.tensor(4.6)
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({
        "model_type": "clip", "projection_dim": 8,
        "text_config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
        "vision_config": {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                          "num_hidden_layers": c.num_hidden_layers,
                          "num_attention_heads": c.num_attention_heads,
                          "image_size": c.image_size, "patch_size": c.patch_size,
                          "hidden_act": c.hidden_act, "layer_norm_eps": c.layer_norm_eps}}))
    return d


def dinov2_plain(model: SpatialGeoForCausalLM) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.geo_tower.backbone.state_dict().items()}


def write_vit_model(path: Path, model: SpatialGeoForCausalLM) -> Path:
    torch.save(dinov2_plain(model), path)
    return path


def write_moge(path: Path, model: SpatialGeoForCausalLM, version: int = 1) -> Path:
    """MoGe `model.pt`: {model_config, model}; v1 keys `backbone.*` + head, v2
    `encoder.backbone.*`.
    """
    plain = dinov2_plain(model)
    if version == 1:
        sd = {"backbone." + k: v for k, v in plain.items()}
        sd["head.projects.0.weight"] = torch.randn(4, 4)
        sd["image_mean"] = torch.tensor([0.485, 0.456, 0.406])
        sd["image_std"] = torch.tensor([0.229, 0.224, 0.225])
        conf = {"encoder": "dinov2_vitl14", "intermediate_layers": 4}
    else:
        sd = {"encoder.backbone." + k: v for k, v in plain.items()}
        sd["encoder.output_projections.0.weight"] = torch.randn(4, 4)
        sd["points_head.0.weight"] = torch.randn(4, 4)
        conf = {"encoder": {"backbone": "dinov2_vitl14", "intermediate_layers": [5, 11, 17, 23]}}
    torch.save({"model_config": conf, "model": sd}, path)
    return path


def write_llava_base(d: Path, base_llm: dict[str, torch.Tensor], clip_adapter: dict,
                     cfg: SpatialGeoConfig) -> Path:
    """`llava-v1.5-7b` layout: model_type "llava", sharded weights with an index, LLaMA keys and
    `model.mm_projector.*`, no vision tower tensors, tokenizer.model."""
    d.mkdir(parents=True, exist_ok=True)
    tensors = dict(base_llm)
    tensors.update({"model.mm_projector." + k: v for k, v in clip_adapter.items()})
    _save_sharded(d, tensors)
    (d / "config.json").write_text(json.dumps(_llava_config(cfg, "llava")))
    build_tokenizer(d)
    return d


def llm_llava_names(model: SpatialGeoForCausalLM) -> dict[str, torch.Tensor]:
    return {reference_name("llm." + k): v.clone() for k, v in model.llm.state_dict().items()}


def write_release(d: Path, model: SpatialGeoForCausalLM, r: int = 4, alpha: float = 8.0,
                  seed: int = 1) -> tuple[Path, dict[str, torch.Tensor]]:
    """SpatialGeo release dir (PEFT LoRA + non_lora_trainables.bin). Returns the base LLaMA weights
    W0 = W - scale * B @ A so that base + LoRA gives the source model's weights."""
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    base = llm_llava_names(model)
    lora = {}
    scale = alpha / r
    for i in range(model.cfg.llm.num_hidden_layers):
        for t in LORA_TARGETS:
            w_name = f"model.layers.{i}.{t}.weight"
            w = base[w_name]
            a = torch.randn(r, w.shape[1], generator=g) * 0.1
            b = torch.randn(w.shape[0], r, generator=g) * 0.1
            lora[f"base_model.model.model.layers.{i}.{t}.lora_A.weight"] = a
            lora[f"base_model.model.model.layers.{i}.{t}.lora_B.weight"] = b
            base[w_name] = (w.double() - scale * (b.double() @ a.double())).float()
    save_file(lora, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "lora_dropout": 0.05, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "use_dora": False, "target_modules": [t.split(".")[1] for t in LORA_TARGETS],
        "base_model_name_or_path": "liuhaotian/llava-v1.5-7b", "modules_to_save": None}))
    non_lora = {"base_model.model.model.mm_projector." + k: v.clone()
                for k, v in model.clip_adapter.state_dict().items()}
    non_lora.update({"base_model.model.model.moge_mm_projector_list." + k: v.clone()
                     for k, v in model.geo_adapter.state_dict().items()})
    torch.save(non_lora, d / "non_lora_trainables.bin")
    (d / "config.json").write_text(json.dumps(_llava_config(model.cfg, "llava_llama")))
    return d, base


def write_merged(d: Path, model: SpatialGeoForCausalLM, with_second_clip: bool = True) -> Path:
    """A merged SpatialGeo directory (§5.1 C): every tensor under its LLaVA name, plus the MoGe
    tower's redundant second CLIP copy."""
    d.mkdir(parents=True, exist_ok=True)
    tensors = {reference_name(k): v.clone() for k, v in model.state_dict().items()}
    if with_second_clip:
        for k, v in model.clip_tower.vision_model.state_dict().items():
            tensors["model.moge_tower.clip_vision_tower.vision_model." + k] = v.clone()
    _save_sharded(d, tensors, n_shards=3)
    (d / "config.json").write_text(json.dumps(_llava_config(model.cfg, "llava_llama")))
    build_tokenizer(d)
    return d
