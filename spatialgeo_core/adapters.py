"""Adapters from vision features to the LLM width.

`mlp2x_gelu` is LLaVA-1.5's projector: Linear(d_in, d_llm), exact GELU, Linear(d_llm, d_llm);
state-dict names `0.*` and `2.*` as in LLaVA checkpoints. The hierarchical adapter has one such MLP
per geometry level (index k <-> the k-th configured block) and sums their outputs.
"""
from __future__ import annotations

import torch
from torch import nn


def mlp2x_gelu(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class HierarchicalAdapter(nn.ModuleList):
    """Sum over levels k of MLP_k(F_k).

    A ModuleList, so keys are `{k}.0.weight` ... as upstream.
    """

    def __init__(self, num_levels: int, d_in: int, d_out: int):
        super().__init__(mlp2x_gelu(d_in, d_out) for _ in range(num_levels))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """levels: num_levels x [B, N, d_in] -> [B, N, d_out]."""
        if len(levels) != len(self):
            raise ValueError(
                f"hierarchical adapter has {len(self)} MLPs, got {len(levels)} levels"
            )
        per_level = [mlp(f) for mlp, f in zip(self, levels, strict=True)]
        out = torch.stack(per_level, dim=1)                                   # [B, L, N, d_out]
        return out.sum(dim=1)                                                 # [B, N, d_out]


def init_normal_(module: nn.Module, seed: int, std: float = 0.02) -> None:
    """Upstream init of new adapters (HF LLaMA `_init_weights`): weights N(0, std), biases 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
