"""How a model is loaded and served: one frozen value, built once from the CLI's options
(`cli.load_options`) or the node's parameters (`spatialgeo_ros.params`) and passed down to
`loading.load_pipeline`. Plain data: importing this module does not import torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from spatialgeo_core.conversation import TEMPLATES
from spatialgeo_core.dtypes import DTYPE_NAMES
from spatialgeo_core.errors import ConfigError

ATTENTION_CHOICES = ("sdpa", "eager", "flash_attention_2")
QUANTIZATIONS = ("none", "4bit", "8bit")     # of the LLM's linear layers (bitsandbytes)
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class LoadOptions:
    """Where the model is, where and how it runs, and what serving keeps between questions. A bad
    value is a ConfigError (a ValueError) naming the field."""

    path: str | None = None           # the model directory (our format or a merged SpatialGeo);
    #                                   None only for a model built in memory (benchmarks); the
    #                                   CLI and the node resolve "none given" to
    #                                   default_model.embedded_model_path()
    device: str = "cpu"               # auto (cuda when available, else cpu), cpu, cuda, cuda:N
    dtype: str | None = None          # DTYPE_NAMES; None: bfloat16/float16 on CUDA, float32 on CPU
    quantization: str = "none"        # QUANTIZATIONS: the LLM only; towers and adapters stay in
    #                                   dtype, lm_head stays dense
    attn_implementation: str = "sdpa"
    template: str | None = None       # chat template; None: the config's
    clip_dir: str | None = None       # CLIP for a merged upstream directory without its tensors
    cache_prefix: bool = True         # keep each frame's image-prefix KV for further questions
    static_cache: bool = False        # decode in one preallocated StaticCache (GPU)
    compile_decode: bool = False      # torch.compile the decode step (implies static_cache)
    max_cached_frames: int = 2        # frames whose features (visual tokens and image-prefix KV)
    #                                   are kept, across all cameras; least recently used dropped
    #                                   first (~0.6 GB each at 7B in fp16)

    def __post_init__(self):
        if self.path is not None and not str(self.path):
            raise ConfigError("path must name a model directory (or be None for a model built "
                             "in memory)")
        if not DEVICE_RE.match(str(self.device)):
            raise ConfigError(f"device {self.device!r} is not auto, cpu, cuda or cuda:N")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPE_NAMES)} (or None), got "
                             f"{self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got "
                             f"{self.quantization!r}")
        if self.attn_implementation not in ATTENTION_CHOICES:
            raise ConfigError(f"attn_implementation must be one of {', '.join(ATTENTION_CHOICES)}"
                             f", got {self.attn_implementation!r}")
        if self.template is not None and self.template not in TEMPLATES:
            raise ConfigError(f"template must be one of {', '.join(TEMPLATES)} (or None), got "
                             f"{self.template!r}")
        if self.max_cached_frames < 1:
            raise ConfigError(f"max_cached_frames must be >= 1, got {self.max_cached_frames}")

    @property
    def bits(self) -> int | None:
        """4 or 8 for a quantised LLM, else None."""
        return {"4bit": 4, "8bit": 8}.get(self.quantization)
