"""The pipeline's one feature cache: a frame is loaded and converted once while it stays cached,
at most `max_frames` frames are kept (least recently used dropped first, with their image-prefix
KV cache), a failed load is tried again."""
from __future__ import annotations

import numpy as np
import pytest

from spatialgeo_core.feature_cache import FeatureCache, FrameFeatures

S = 1_000_000_000


def _image(value: int) -> np.ndarray:
    return np.full((6, 8, 3), value, np.uint8)                # [H, W, 3]


def test_a_frame_is_loaded_once_and_reused():
    cache = FeatureCache(4)
    calls = []

    def load():
        calls.append(2 * S)
        return _image(2)

    first = cache.frame(2 * S, load)
    assert cache.frame(2 * S, load) is first
    assert calls == [2 * S] and len(cache) == 1
    assert first.size == (8, 6) and first.image.mode == "RGB"   # converted once, on load


def test_at_most_max_frames_are_kept_least_recently_used_first():
    cache = FeatureCache(2)
    calls = []

    def load(stamp):
        return lambda: calls.append(stamp) or _image(stamp // S)

    f1 = cache.frame(1 * S, load(1 * S))
    f2 = cache.frame(2 * S, load(2 * S))
    for frame in (f1, f2):
        frame.prefix[("regions", "llava_v1")] = ((), 0)       # an image-prefix KV cache
    cache.frame(1 * S, load(1 * S))        # f1 used again: f2 is now the least recently used
    f3 = cache.frame(3 * S, load(3 * S))
    assert len(cache) == 2
    assert f1.prefix and not f2.prefix and f3 is not f2      # f2 left, without its prefix KV
    cache.frame(2 * S, load(2 * S))        # loaded again after it was dropped
    assert calls == [1 * S, 2 * S, 3 * S, 2 * S]
    with pytest.raises(ValueError, match="max_cached_frames"):
        FeatureCache(0)


def test_a_frame_held_by_its_caller_keeps_its_visual_tokens_when_dropped():
    cache = FeatureCache(1)
    held = cache.use(FrameFeatures.of(_image(1)))
    held.visual[()] = "visual tokens"
    held.prefix[((), "llava_v1")] = ((), 0)
    cache.frame("other", lambda: _image(2))
    assert len(cache) == 1 and held.visual and not held.prefix


def test_a_failed_load_is_tried_again():
    cache = FeatureCache(2)

    def broken():
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        cache.frame("frame", broken)
    assert len(cache) == 0
    assert cache.frame("frame", lambda: _image(3)).size == (8, 6)
