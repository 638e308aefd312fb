"""bitsandbytes quantisation of the LLM only (reference §9.23).

The towers and both adapters stay in fp16/bf16; `lm_head` stays dense, as transformers' bnb
integration leaves it. 4-bit is NF4 with double quantisation; 8-bit is LLM.int8().
"""
from __future__ import annotations

import torch
from torch import nn

from spatialgeo_core.optional import require


def _replace_linears(root: nn.Module, make, skip: tuple[str, ...]) -> int:
    n = 0
    for name, child in list(root.named_children()):
        if name in skip:
            continue
        if isinstance(child, nn.Linear):
            setattr(root, name, make(child))
            n += 1
        else:
            n += _replace_linears(child, make, ())
    return n


def quantize_llm(llm: nn.Module, bits: int, compute_dtype: torch.dtype,
                 device: str | torch.device) -> int:
    """Replace every nn.Linear of `llm` except lm_head; returns how many were replaced."""
    bnb = require("bitsandbytes")

    def make4(lin: nn.Linear) -> nn.Module:
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=True,
                              quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(lin.weight.data.to(compute_dtype), requires_grad=False,
                                     compress_statistics=True, quant_type="nf4")
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.data.to(compute_dtype), requires_grad=False)
        return q.to(device)

    def make8(lin: nn.Linear) -> nn.Module:
        q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                has_fp16_weights=False, threshold=6.0, device="meta")
        q.weight = bnb.nn.Int8Params(lin.weight.data.to(compute_dtype), requires_grad=False,
                                     has_fp16_weights=False)
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.data.to(compute_dtype), requires_grad=False)
        return q.to(device)

    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    return _replace_linears(llm, make4 if bits == 4 else make8, skip=("lm_head",))

