"""Semantic tower: transformers' CLIPVisionModel, hidden state `select_layer` (-2), CLS dropped.

transformers 4.x nests the vision transformer under `vision_model.`; 5.x flattens it. This wrapper registers
the vision transformer itself as `self.vision_model`, so our state-dict names are `vision_model.*` under every
version, matching the `vision_model.*` keys of openai/clip-vit-large-patch14-336 and of LLaVA checkpoints.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from spatialgeo_core.config import ClipTowerConfig


def hf_clip_config(cfg: ClipTowerConfig) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps, num_channels=3)


class ClipTower(nn.Module):
    def __init__(self, cfg: ClipTowerConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.cfg = cfg
        model = CLIPVisionModel._from_config(hf_clip_config(cfg),
                                             attn_implementation=attn_implementation)
        # 4.x: CLIPVisionModel.vision_model is the transformer; 5.x: the model is the transformer
        self.vision_model = model.vision_model if hasattr(model, "vision_model") else model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> patch features [B, N, D_clip] from hidden state `select_layer`."""
        dtype = self.vision_model.embeddings.patch_embedding.weight.dtype
        out = self.vision_model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        return out.hidden_states[self.cfg.select_layer][:, 1:]                # [B, N, D_clip]
