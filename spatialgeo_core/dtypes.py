"""The one map from dtype names to torch dtypes (CLI options, node parameters, configs, export).

Importing this module does not import torch; the functions that return torch dtypes do.
"""
from __future__ import annotations

DTYPE_NAMES = ("float32", "float16", "bfloat16")
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def dtype_name(name: str) -> str:
    """'bf16' -> 'bfloat16'; ValueError for a name that is not one of DTYPE_NAMES (or alias)."""
    full = _ALIASES.get(name, name)
    if full not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return full


def torch_dtype(name: str):
    """'float16' (or 'fp16') -> torch.float16."""
    import torch

    return getattr(torch, dtype_name(name))


def default_dtype(device):
    """What a model is served in when no dtype is asked for: bfloat16 on a CUDA device that
    supports it, else float16; float32 on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
