"""The KV cache as transformers names it, and the per-layer tensors the pipeline keeps of it.

transformers 5 renamed the language model's `past_key_values` argument and output field to
`cache` and removes the old name in 5.40; 4.x (4.56 and later: setup.py) knows only
`past_key_values`. The name is read once from `LlamaModel.forward`'s signature (a feature, not a
version number), so serving passes and reads the cache under the name the installed transformers
keeps, and never warns.
"""
from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, LlamaModel

CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters \
    else "past_key_values"


def with_cache(cache) -> dict:
    """The keyword argument that hands `cache` to a LLaMA forward: {CACHE_ARG: cache}."""
    return {CACHE_ARG: cache}


def returned_cache(output):
    """The KV cache a LLaMA forward returned (use_cache=True)."""
    return getattr(output, CACHE_ARG)


def cache_tensors(cache, length: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per-layer (keys, values) of a KV cache up to `length` positions, as views (no copy)."""
    return tuple((layer.keys[:, :, :length], layer.values[:, :, :length])
                 for layer in cache.layers)                           # L x 2 x [B, H, length, Dh]


def cache_from_tensors(kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> DynamicCache:
    """A DynamicCache continuing from per-layer (keys, values). DynamicCache grows by concatenation
    into new tensors, so decoding with it never writes into `kv`."""
    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache
