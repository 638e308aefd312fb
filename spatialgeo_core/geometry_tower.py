"""Geometry tower: the DINOv2 ViT encoder of MoGe v1, returning the final-normed outputs of chosen
blocks.

State-dict names equal the DINOv2 / MoGe `backbone.*` names (reference §5.1), so `vit_model.pt` and
MoGe v1's `model.pt` load key for key. Numerics follow the upstream DINOv2 code that the released
weights ran with: LayerNorm eps 1e-6, LayerScale, exact GELU, softmax attention scaled by
1/sqrt(head_dim), and the positional embedding resized by bicubic interpolation given a *scale
factor* (n + 0.1) / M in float32, without antialias, skipped when the grid already matches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spatialgeo_core.config import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    GeometryTowerConfig,
)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                                   # [B, D, h, w]
        return x.flatten(2).transpose(1, 2)                # [B, h*w, D]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)  # [B, N, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                          # 3 x [B, H, N, Dh]
        x = F.scaled_dot_product_attention(q, k, v)                             # [B, H, N, Dh]
        x = x.transpose(1, 2).reshape(B, N, D)                                  # [B, N, D]
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT without registers; parameter names as in `vit_model.pt` (343 tensors at
    ViT-L).
    """

    def __init__(self, cfg: GeometryTowerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_grid ** 2 + 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # unused at inference; kept for the keys
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.layer_norm_eps) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def interpolate_pos_encoding(self, h0: int, w0: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding for an h0 x w0 patch grid: [1, 1 + h0*w0, D] (upstream DINOv2
        rule).
        """
        M = self.cfg.pos_embed_grid
        if h0 == M and w0 == M:
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]                          # [1,1,D], [1,M*M,D]
        D = pos.shape[-1]
        grid = patch_pos.reshape(1, M, M, D).permute(0, 3, 1, 2)             # [1, D, M, M]
        if self.cfg.interpolate_offset > 0:
            scale = ((h0 + self.cfg.interpolate_offset) / M,
                     (w0 + self.cfg.interpolate_offset) / M)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic",
                                 antialias=self.cfg.interpolate_antialias)
        else:
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic",
                                 antialias=self.cfg.interpolate_antialias)
        if grid.shape[-2:] != (h0, w0):
            raise RuntimeError(f"pos-embed resize gave {tuple(grid.shape[-2:])}, need {(h0, w0)}")
        patch_pos = grid.permute(0, 2, 3, 1).flatten(1, 2)                   # [1, h0*w0, D]
        return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)              # [1, 1+h0*w0, D]

    def intermediate_features(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """x: [B, 3, H, W] -> one [B, N, D] per block in `layers`: final norm applied, CLS
        dropped.
        """
        B, _, H, W = x.shape
        p = self.cfg.patch_size
        tokens = self.patch_embed(x)                                          # [B, N, D]
        tokens = torch.cat([self.cls_token.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(H // p, W // p, tokens.dtype)  # [B,1+N,D]
        wanted = set(layers)
        out: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks[: max(layers) + 1]):
            tokens = blk(tokens)
            if i in wanted:
                out[i] = self.norm(tokens)[:, 1:]                             # [B, N, D]
        return [out[i] for i in layers]


class GeometryTower(nn.Module):
    """Frozen DINOv2 encoder fed the same preprocessed tensor as CLIP (reference §6.2)."""

    def __init__(self, cfg: GeometryTowerConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = DinoVisionTransformer(cfg)
        # clip-normalised -> imagenet-normalised: x' = x * a + b, per channel (non-persistent)
        self.register_buffer("renorm_scale", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        dev = self.renorm_scale.device
        clip_mean, clip_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        net_mean, net_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if dev.type == "meta":
            return
        self.renorm_scale = (clip_std / net_std).view(1, 3, 1, 1).to(dev)
        self.renorm_shift = ((clip_mean - net_mean) / net_std).view(1, 3, 1, 1).to(dev)

    @property
    def num_levels(self) -> int:
        return len(self.cfg.layers)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """pixel_values: [B, 3, S, S] CLIP-normalised -> num_levels x [B, N, D_geo]."""
        x = pixel_values.to(self.backbone.patch_embed.proj.weight.dtype)
        if self.cfg.input_norm == "imagenet":
            x = x * self.renorm_scale.to(x.dtype) + self.renorm_shift.to(x.dtype)
        return self.backbone.intermediate_features(x, self.cfg.layers)


