"""The composite SpatialGeo model: two towers, two adapters, one LLaMA decoder.

    pixel_values [B, 3, S, S]
      -> clip_tower -> [B, N, Dc] -> clip_adapter -> S [B, N, D]
      -> geo_tower  -> L x [B, N, Dg] -> geo_adapter (sum of per-level MLPs) -> G [B, N, D]
      -> token layout: interleave [S0, G0, S1, G1, ...] or concat -> V [B, 2N, D]
    input_ids holds exactly 2N placeholder ids (config.image_token_id) per image; one masked
    scatter puts V there. With `geometry=None` this is LLaVA-1.5 (N visual tokens per image).

Module names map one to one onto LLaVA / SpatialGeo checkpoint names (see checkpoint/keymap.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from spatialgeo_core.adapters import HierarchicalAdapter, mlp2x_gelu
from spatialgeo_core.clip_tower import ClipTower
from spatialgeo_core.config import LLMConfig, SpatialGeoConfig
from spatialgeo_core.geometry_tower import GeometryTower

IGNORE_INDEX = -100


def hf_llama_config(cfg: LLMConfig) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta, hidden_act=cfg.hidden_act,
        tie_word_embeddings=cfg.tie_word_embeddings, bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)


class SpatialGeoForCausalLM(nn.Module):
    def __init__(self, cfg: SpatialGeoConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.cfg = cfg
        d_llm = cfg.llm.hidden_size
        self.clip_tower = ClipTower(cfg.clip, attn_implementation="sdpa")
        self.clip_adapter = mlp2x_gelu(cfg.clip.hidden_size, d_llm)
        if cfg.geometry is not None:
            self.geo_tower: GeometryTower | None = GeometryTower(cfg.geometry)
            self.geo_adapter: HierarchicalAdapter | None = HierarchicalAdapter(
                len(cfg.geometry.layers), cfg.geometry.embed_dim, d_llm)
        else:
            self.geo_tower, self.geo_adapter = None, None
        self.llm = LlamaForCausalLM._from_config(hf_llama_config(cfg.llm),
                                                 attn_implementation=attn_implementation)
        # The towers are never trained in the SpatialGeo recipe.
        self.clip_tower.requires_grad_(False)
        if self.geo_tower is not None:
            self.geo_tower.requires_grad_(False)
        self.register_buffer("visual_is_clip", self.visual_layout(cfg), persistent=False)

    @staticmethod
    def visual_layout(cfg: SpatialGeoConfig) -> torch.Tensor:
        """Which of one image's V visual positions hold CLIP tokens: [V] bool."""
        n = cfg.num_patches
        if cfg.geometry is None:
            return torch.ones(n, dtype=torch.bool)
        if cfg.token_layout == "interleave":
            return torch.arange(2 * n) % 2 == 0
        return torch.arange(2 * n) < n

    # ---- vision -------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> visual embeddings [B, V, D_llm] in the configured token layout."""
        sem = self.clip_adapter(self.clip_tower(pixel_values).to(self.adapter_dtype))   # [B, N, D]
        if self.geo_tower is None:
            return sem
        levels = [f.to(self.adapter_dtype) for f in self.geo_tower(pixel_values)]    # L x [B,N,Dg]
        geo = self.geo_adapter(levels)                                                  # [B, N, D]
        B, N, D = sem.shape
        if self.cfg.token_layout == "interleave":
            return torch.stack([sem, geo], dim=2).reshape(B, 2 * N, D)  # [B, 2N, D]: S0 G0 S1 G1
        return torch.cat([sem, geo], dim=1)                             # [B, 2N, D]: S.. G..

    @property
    def adapter_dtype(self) -> torch.dtype:
        return self.clip_adapter[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.clip_adapter[0].weight.device

    # ---- merge --------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, visual: torch.Tensor | None,
              used: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] with V placeholders per image; visual [I, V, D] -> inputs_embeds
        [B, T, D].

        `used` [I] bool marks the images whose placeholders are in input_ids (text-only samples
        carry a dummy image that is not placed); unused ones still enter the graph with weight
        zero, so every rank in distributed training touches every adapter parameter.
        """
        mask = input_ids == self.cfg.image_token_id                                     # [B, T]
        emb_layer = self.llm.get_input_embeddings()
        emb = emb_layer(input_ids.masked_fill(mask, 0))                                 # [B, T, D]
        n_slots = int(mask.sum())
        if visual is None:
            if n_slots:
                raise ValueError(f"input_ids hold {n_slots} image placeholders but no image given")
            return emb
        placed = visual if used is None else visual[used]                              # [I', V, D]
        n_feats = placed.shape[0] * placed.shape[1]
        if n_slots != n_feats:
            raise ValueError(f"input_ids hold {n_slots} image placeholders but the images give "
                             f"{n_feats} visual tokens ({placed.shape[0]} x {placed.shape[1]})")
        emb = emb.masked_scatter(mask.unsqueeze(-1), placed.to(emb.dtype))
        if used is not None and not bool(used.all()):
            emb = emb + 0.0 * visual[~used].sum().to(emb.dtype)
        return emb

    def drop_clip_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         drop: torch.Tensor) -> torch.Tensor:
        """Random feature dropping (training only): hide the CLIP tokens of images where drop[i].

        The hidden positions get attention mask 0 and the positions after them are renumbered,
        which is exactly the shorter sequence holding only that image's geometry tokens
        (reference §3).
        Returns the new attention mask [B, T].
        """
        mask = input_ids == self.cfg.image_token_id                                     # [B, T]
        V = self.visual_is_clip.numel()
        rank = mask.long().cumsum(dim=1) - 1                                            # [B, T]
        imgs_per_sample = mask.sum(dim=1) // V                                          # [B]
        first_img = imgs_per_sample.cumsum(0) - imgs_per_sample                         # [B]
        img_idx = (first_img[:, None] + rank.clamp(min=0) // V).clamp(max=drop.numel() - 1)
        is_clip = self.visual_is_clip[rank.clamp(min=0) % V]                            # [B, T]
        hide = mask & is_clip & drop[img_idx]
        return attention_mask.masked_fill(hide, 0)

    # ---- training / scoring forward ------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                image_used: torch.Tensor | None = None,
                drop_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """input_ids/attention_mask/labels [B, T]; pixel_values [I, 3, S, S] -> {logits, loss}."""
        visual = None if pixel_values is None else self.encode_images(pixel_values)    # [I, V, D]
        inputs_embeds = self.embed(input_ids, visual, image_used)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        p = self.cfg.feature_drop_prob
        if self.training and p > 0 and self.geo_tower is not None and visual is not None:
            n_img = visual.shape[0] if image_used is None else int(image_used.sum())
            if n_img:
                u = torch.rand(n_img, generator=drop_generator,
                               device=drop_generator.device if drop_generator else "cpu")
                attention_mask = self.drop_clip_tokens(input_ids, attention_mask,
                                                       (u < p).to(input_ids.device))
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)              # [B, T]
        out = self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=False)
        result = {"logits": out.logits}
        if labels is not None:
            result["loss"] = causal_lm_loss(out.logits, labels)
        return result


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy over supervised positions; logits [B, T, V], labels
    [B, T].
    """
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])              # [B*(T-1), V]
    shift_labels = labels[:, 1:].reshape(-1)                                            # [B*(T-1)]
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)


def build_empty(cfg: SpatialGeoConfig, dtype: torch.dtype, device: str | torch.device,
                attn_implementation: str = "sdpa") -> SpatialGeoForCausalLM:
    """A model whose parameters are allocated on `device` in `dtype` but not initialised (fast, and
    no fp32 copy of a 7B model is ever made). Non-persistent buffers are recomputed; load weights
    next.
    """
    with torch.device("meta"):
        model = SpatialGeoForCausalLM(cfg, attn_implementation=attn_implementation)
    model.to(dtype)
    model.to_empty(device=device)
    _reset_nonpersistent_buffers(model, torch.device(device))
    return model


def _reset_nonpersistent_buffers(model: SpatialGeoForCausalLM, device: torch.device) -> None:
    rot = model.llm.model.rotary_emb
    model.llm.model.rotary_emb = type(rot)(config=model.llm.config).to(device)
    emb = model.clip_tower.vision_model.embeddings
    if "position_ids" in dict(emb.named_buffers(recurse=False)):
        emb.position_ids.copy_(torch.arange(emb.position_ids.shape[-1], device=device)[None])
    with torch.device(device):
        fresh_layout = SpatialGeoForCausalLM.visual_layout(model.cfg)
    model.visual_is_clip.copy_(fresh_layout)
    if model.geo_tower is not None:
        model.geo_tower.reset_buffers()
