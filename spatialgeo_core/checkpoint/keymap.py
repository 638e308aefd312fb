"""Names of our modules <-> names in LLaVA / SpatialGeo checkpoints (reference §5).

A table of prefix pairs, most specific first; translation replaces a whole leading prefix, never
slices strings by position. Keys matching none of the prefixes are returned unchanged and reported
by the strict check as unexpected.
"""
from __future__ import annotations

# (ours, LLaVA / merged SpatialGeo)
PREFIXES: tuple[tuple[str, str], ...] = (
    ("clip_tower.vision_model.", "model.vision_tower.vision_tower.vision_model."),
    ("geo_tower.backbone.", "model.moge_tower.backbone."),
    ("geo_adapter.", "model.moge_mm_projector_list."),
    ("clip_adapter.", "model.mm_projector."),
    ("llm.lm_head.", "lm_head."),
    ("llm.model.", "model."),
)

# Present in merged upstream checkpoints, never needed: the MoGe tower's redundant second CLIP
# (§9.19).
IGNORED_LLAVA_PREFIXES: tuple[str, ...] = ("model.moge_tower.clip_vision_tower.",)


def _swap(key: str, pairs) -> str:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src):]
    return key


def to_llava(key: str) -> str:
    return _swap(key, PREFIXES)


def from_llava(key: str) -> str:
    return _swap(key, [(b, a) for a, b in PREFIXES])


def strip_prefix(key: str, prefix: str) -> str:
    """`key` without the leading `prefix`; ValueError when it does not start with it."""
    if not key.startswith(prefix):
        raise ValueError(f"{key!r} does not start with {prefix!r}")
    return key[len(prefix):]
