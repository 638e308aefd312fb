"""What serving keeps of a frame between questions, and the one cache that bounds it.

A FrameFeatures is one image as the model reads it (converted to RGB once), its visual tokens for
each set of regions drawn on it, and the KV cache of the prompt up to the end of the image (the
image prefix) for each set of regions and chat template. The pipeline keeps the FrameFeatures of
at most `max_frames` frames in one FeatureCache, least recently used dropped first, whoever asks:
the node (a key per buffered camera frame), eval-bag (per bag frame), eval-bench and
eval-spatialscore (per image file), or a caller that holds the FrameFeatures itself
(`pipe.encode(image)`). A frame that leaves the cache drops its image-prefix KV (the large part:
~0.6 GB at 7B in fp16); a caller that still holds it keeps its visual tokens and recomputes only
the prefill.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from spatialgeo_core.processor import to_pil_rgb

ImageSource = Image.Image | np.ndarray


@dataclass(eq=False)
class FrameFeatures:
    """One image and what has been computed from it (per set of drawn regions)."""

    image: Image.Image                                                    # RGB
    visual: dict[tuple, torch.Tensor] = field(default_factory=dict)      # key -> [1, V, D]
    # (key, template) -> (per-layer (keys, values), each [1, H_kv, length, D_head]; length)
    prefix: dict[tuple, tuple[tuple[tuple[torch.Tensor, torch.Tensor], ...], int]] = field(
        default_factory=dict)
    encode_ms: float = 0.0
    key: Hashable | None = None          # the caller's name for the frame in the cache, if any

    @classmethod
    def of(cls, image: ImageSource, key: Hashable | None = None) -> FrameFeatures:
        """The frame of an image (a PIL image or a uint8 [H, W, 3|4] / [H, W] array), converted
        to RGB here, once. Raises InvalidImageError."""
        return cls(to_pil_rgb(image), key=key)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.size

    def nbytes(self) -> int:
        """Bytes held by the cached features and prefix caches (each storage counted once)."""
        tensors = list(self.visual.values())
        tensors += [t for kv, _ in self.prefix.values() for pair in kv for t in pair]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())


class FeatureCache:
    """The FrameFeatures of at most `max_frames` frames, least recently used dropped first;
    thread-safe."""

    def __init__(self, max_frames: int):
        if max_frames < 1:
            raise ValueError(f"max_cached_frames must be >= 1, got {max_frames}")
        self.max_frames = max_frames
        self._frames: OrderedDict[Hashable, FrameFeatures] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def frame(self, key: Hashable, load: Callable[[], ImageSource]) -> FrameFeatures:
        """The cached frame under `key`, or a new one of the image `load()` gives (called only
        then: a frame is decoded and converted once while it stays cached). An exception from
        `load` propagates and nothing is cached."""
        with self._lock:
            frame = self._frames.get(key)
        if frame is None:
            frame = FrameFeatures.of(load(), key=key)
        return self.use(frame)

    def use(self, frame: FrameFeatures) -> FrameFeatures:
        """`frame` was used: it becomes the most recent (entering the cache if it was not in it);
        the least recently used frames beyond the bound drop their image-prefix KV and leave.
        Returns the cached frame of its key (another thread's, when two made it at once)."""
        name = frame if frame.key is None else frame.key
        with self._lock:
            frame = self._frames.setdefault(name, frame)
            self._frames.move_to_end(name)
            while len(self._frames) > self.max_frames:
                _, old = self._frames.popitem(last=False)
                old.prefix.clear()
        return frame

    def clear(self) -> None:
        with self._lock:
            for frame in self._frames.values():
                frame.prefix.clear()
            self._frames.clear()
