"""Semantic tower: transformers' CLIPVisionModel, hidden state `select_layer` (-2), CLS dropped.

transformers 4.x nests the vision transformer under `vision_model.`; 5.x flattens it. This wrapper
registers the vision transformer itself as `self.vision_model`, so our state-dict names are
`vision_model.*` under every version, matching the `vision_model.*` keys of
openai/clip-vit-large-patch14-336 and of LLaVA checkpoints.

Only the encoder layers up to `select_layer` run (LLaVA's layer -2 leaves the last layer and the
post-LN unused); they are all kept, so the state dict is the full CLIP tower's, and the features
are those of the full forward.
"""
from __future__ import annotations

import inspect

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
        # hidden_states[i] is the output of encoder layer i (0: the embeddings after pre-LN)
        self.layers_run = cfg.select_layer % (cfg.num_hidden_layers + 1)
        layer_args = inspect.signature(self.vision_model.encoder.layers[0].forward).parameters
        self._layer_masks = 2 if "causal_attention_mask" in layer_args else 1   # 4.x takes two

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> patch features [B, N, D_clip] from hidden state `select_layer`."""
        vm = self.vision_model
        dtype = vm.embeddings.patch_embedding.weight.dtype
        h = vm.pre_layrnorm(vm.embeddings(pixel_values.to(dtype)))           # [B, 1 + N, D_clip]
        no_masks = (None,) * self._layer_masks
        for layer in vm.encoder.layers[: self.layers_run]:
            out = layer(h, *no_masks)
            h = out[0] if isinstance(out, tuple) else out                    # 4.x returns a tuple
        return h[:, 1:]                                                      # [B, N, D_clip]
