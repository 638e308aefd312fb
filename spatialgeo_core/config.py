"""Typed configuration of a SpatialGeo model, saved as JSON next to the weights.

Every field is declared here; nothing is read back with getattr defaults. `real_size()` is the
published SpatialGeo (CLIP ViT-L/14-336 + MoGe-v1 DINOv2 ViT-L/14 + Vicuna/LLaMA-7B); `tiny()` is a
CPU-sized model with the same structure for tests and demos.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialgeo_core.errors import ConfigError

FORMAT_NAME = "spatialgeo"
FORMAT_VERSION = 1

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_field(cond: bool, field_name: str, msg: str) -> None:
    """Raise ConfigError naming the field unless `cond`."""
    if not cond:
        raise ConfigError(f"{field_name}: {msg}")


def check_types(cfg: Any, section: str) -> None:
    """ConfigError naming the field unless every field of the config dataclass `cfg` holds a value
    of its declared type (run first in `__post_init__`, so the checks after it compare numbers).
    An int is taken where a float is declared, a list where a tuple is; floats must be finite."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        name = f"{section}.{f.name}" if section else f.name
        ok, value = _typed(hints[f.name], getattr(cfg, f.name))
        check_field(ok, name, f"expected {_type_name(hints[f.name])}, got "
                              f"{getattr(cfg, f.name)!r}")
        setattr(cfg, f.name, value)


def _typed(tp: Any, v: Any) -> tuple[bool, Any]:
    """(whether v is of type tp, v as that type)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            return type(None) in args, v
        return _typed(next(a for a in args if a is not type(None)), v)
    if dataclasses.is_dataclass(tp):
        return isinstance(v, tp), v
    if origin in (list, tuple):
        if not isinstance(v, list | tuple):
            return False, v
        kinds = args[:1] * len(v) if origin is list or args[-1:] == (Ellipsis,) else args
        if len(kinds) != len(v):
            return False, v
        items = [_typed(k, x) for k, x in zip(kinds, v, strict=True)]
        return all(ok for ok, _ in items), origin(x for _, x in items)
    if tp is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        return ok, float(v) if ok else v
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool), v
    return isinstance(v, tp), v


_TYPE_NAMES = {float: "a finite number", int: "an integer", bool: "true or false",
               str: "a string"}


def _type_name(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if isinstance(tp, type):
        return f"a {tp.__name__}"
    return str(tp).replace("typing.", "")


def check_positive(cfg: Any, section: str, names: tuple[str, ...]) -> None:
    """ConfigError naming the first of the fields `names` that is not > 0."""
    for n in names:
        value = getattr(cfg, n)
        check_field(value > 0, f"{section}.{n}", f"must be positive, got {value!r}")


@dataclass
class ClipTowerConfig:
    """CLIP ViT vision tower (transformers CLIPVisionModel). Real size: ViT-L/14 at 336 px."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 336
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    select_layer: int = -2             # index into hidden_states (0 = embeddings);
                                       # -2 = output of layer N-1

    def __post_init__(self):
        check_types(self, "clip")
        check_positive(self, "clip", ("hidden_size", "intermediate_size", "num_hidden_layers",
                                      "num_attention_heads", "image_size", "patch_size",
                                      "layer_norm_eps"))
        check_field(self.image_size % self.patch_size == 0, "clip.image_size",
               f"{self.image_size} is not a multiple of patch_size {self.patch_size}")
        check_field(self.hidden_size % self.num_attention_heads == 0, "clip.hidden_size",
               "must be divisible by num_attention_heads")
        n = self.num_hidden_layers + 1
        check_field(-n <= self.select_layer < n, "clip.select_layer",
               f"{self.select_layer} is outside the {n} hidden states")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class GeometryTowerConfig:
    """DINOv2 ViT encoder of MoGe v1 (the geometry tower).

    Real size: ViT-L/14, pos-embed grid 37x37.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    pos_embed_grid: int = 37           # grid of the stored positional embedding (518 px / 14)
    layer_norm_eps: float = 1e-6
    interpolate_offset: float = 0.1    # DINOv2's scale-factor offset when resizing the pos-embed
    interpolate_antialias: bool = False
    # adapter index k <-> layers[k]
    layers: list[int] = field(default_factory=lambda: [20, 21, 22, 23])
    input_norm: str = "clip"           # "clip": the CLIP-normalised tensor as is
                                       # (released weights);
                                       # "imagenet": re-normalised with ImageNet statistics

    def __post_init__(self):
        check_types(self, "geometry")
        check_positive(self, "geometry", ("embed_dim", "depth", "num_heads", "mlp_ratio",
                                          "patch_size", "pos_embed_grid", "layer_norm_eps"))
        check_field(self.embed_dim % self.num_heads == 0, "geometry.embed_dim",
               "must be divisible by num_heads")
        check_field(len(self.layers) > 0, "geometry.layers", "needs at least one block")
        check_field(len(set(self.layers)) == len(self.layers), "geometry.layers", "has duplicates")
        check_field(all(0 <= i < self.depth for i in self.layers), "geometry.layers",
               f"{self.layers} must be block indices in [0, {self.depth})")
        check_field(self.input_norm in ("clip", "imagenet"), "geometry.input_norm",
               f"{self.input_norm!r} is not 'clip' or 'imagenet'")


@dataclass
class LLMConfig:
    """LLaMA decoder (transformers LlamaForCausalLM).

    Real size: Vicuna-7B v1.5 as in llava-v1.5-7b.
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0

    def __post_init__(self):
        check_types(self, "llm")
        check_positive(self, "llm", ("vocab_size", "hidden_size", "intermediate_size",
                                     "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "max_position_embeddings",
                                     "rms_norm_eps", "rope_theta"))
        check_field(self.hidden_size % self.num_attention_heads == 0, "llm.hidden_size",
               "must be divisible by num_attention_heads")
        check_field(self.num_attention_heads % self.num_key_value_heads == 0,
               "llm.num_key_value_heads", "must divide num_attention_heads")


@dataclass
class SpatialGeoConfig:
    """The whole model.

    `geometry=None` is the CLIP-only LLaVA-1.5 arrangement (the ablation baseline).
    """

    clip: ClipTowerConfig = field(default_factory=ClipTowerConfig)
    geometry: GeometryTowerConfig | None = field(default_factory=GeometryTowerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    projector_type: str = "mlp2x_gelu"     # both adapters: Linear, GELU, Linear
    token_layout: str = "interleave"       # "interleave": C0 G0 C1 G1 ...; "concat": C0..Cn G0..Gn
    feature_drop_prob: float = 0.3         # training only: drop an image's CLIP tokens
                                           # with this prob.
    image_token_id: int = 32000            # placeholder id of a visual token in input_ids
    image_aspect_ratio: str = "pad"        # "pad": expand to square with the mean colour;
                                           # "square": crop
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    chat_template: str = "llava_v1"        # default template when serving
    max_length: int = 2048                 # tokens after visual-token expansion
                                           # (training truncation)

    def __post_init__(self):
        check_types(self, "")
        check_positive(self, "", ("max_length",))
        check_field(self.image_token_id >= 0, "image_token_id", "must be >= 0")
        check_field(all(v > 0 for v in self.image_std), "image_std", "must be positive")
        check_field(self.projector_type == "mlp2x_gelu", "projector_type",
               f"only 'mlp2x_gelu' is implemented, got {self.projector_type!r}")
        check_field(self.token_layout in ("interleave", "concat"), "token_layout",
               f"{self.token_layout!r} is not 'interleave' or 'concat'")
        check_field(0.0 <= self.feature_drop_prob < 1.0, "feature_drop_prob", "must be in [0, 1)")
        check_field(self.image_aspect_ratio in ("pad", "square"), "image_aspect_ratio",
               f"{self.image_aspect_ratio!r} is not 'pad' or 'square'")
        if self.geometry is not None:
            check_field(self.geometry.patch_size == self.clip.patch_size, "geometry.patch_size",
                   "must equal clip.patch_size so both towers see the same patch grid")
        check_field(self.max_length > self.num_visual_tokens, "max_length",
               f"{self.max_length} leaves no room for text after {self.num_visual_tokens} "
               "visual tokens")

    @property
    def num_patches(self) -> int:
        return self.clip.grid ** 2

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image in the LLM sequence (1152 at real size, 576 CLIP-only)."""
        return self.num_patches * (1 if self.geometry is None else 2)

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpatialGeoConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a JSON object, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", FORMAT_NAME)
        version = d.pop("format_version", FORMAT_VERSION)
        if fmt != FORMAT_NAME:
            raise ConfigError(f"format: expected {FORMAT_NAME!r}, got {fmt!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"format_version: expected a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ConfigError(f"format_version: {version} is newer than this library's "
                              f"{FORMAT_VERSION}; upgrade spatialgeo")
        sub = {"clip": ClipTowerConfig, "geometry": GeometryTowerConfig, "llm": LLMConfig}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config field(s): {sorted(map(str, unknown))}")
        for k, v in d.items():
            if k in sub and v is not None:
                if not isinstance(v, dict):
                    raise ConfigError(f"{k}: expected an object, got {v!r}")
                sub_known = {f.name for f in dataclasses.fields(sub[k])}
                bad = set(v) - sub_known
                if bad:
                    raise ConfigError(f"{k}: unknown field(s) {sorted(map(str, bad))}")
                v = sub[k](**v)
            kwargs[k] = v
        return cls(**kwargs)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SpatialGeoConfig:
        path = Path(directory) / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"no config.json in {directory}") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e


def real_size(geometry: bool = True) -> SpatialGeoConfig:
    """The published SpatialGeo-7B layout (reference §1.4)."""
    return SpatialGeoConfig(geometry=GeometryTowerConfig() if geometry else None)


def tiny(geometry: bool = True, vocab_size: int = 512, image_size: int = 56) -> SpatialGeoConfig:
    """A few-MB model with the real structure: 4x4 patches, 4 geometry levels, 2 LLM layers."""
    clip = ClipTowerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, image_size=image_size, patch_size=14)
    geo = GeometryTowerConfig(embed_dim=64, depth=6, num_heads=1, patch_size=14, pos_embed_grid=5,
                              layers=[2, 3, 4, 5]) if geometry else None   # head dim 64 as DINOv2
    llm = LLMConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                    max_position_embeddings=1024)
    return SpatialGeoConfig(clip=clip, geometry=geo, llm=llm, image_token_id=vocab_size,
                            max_length=512)
