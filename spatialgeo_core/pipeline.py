"""Serving: load once, encode frames, answer questions about them.

    pipe = SpatialGeoPipeline.from_pretrained("path/to/model", device="cuda", load_4bit=True)
    frame = pipe.encode(image)                  # reusable FrameFeatures
    ans = pipe.answer(frame, "How far is Region [0] from Region [1]?", regions=[...])

A FrameFeatures keeps the visual embeddings of its image for each set of drawn regions and, when prefix
caching is on, the KV cache of the prompt up to the end of the image; a further question on the same frame
only runs its own text and the answer.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spatialgeo_core.checkpoint.convert import assemble
from spatialgeo_core.checkpoint.ours import build_model, is_ours, read_ours
from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.conversation import get_template
from spatialgeo_core.errors import CheckpointError, InvalidRequestError
from spatialgeo_core.generation import decode
from spatialgeo_core.model import SpatialGeoForCausalLM
from spatialgeo_core.optional import available, require
from spatialgeo_core.processor import Processor, to_pil_rgb
from spatialgeo_core.quantize import quantize_llm
from spatialgeo_core.regions import draw_regions
from spatialgeo_core.tokenizer import LlamaTokenizer
from spatialgeo_core.types import Answer, GenerationOptions, Region

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
ATTENTION_CHOICES = ("sdpa", "eager", "flash_attention_2")


@dataclass
class FrameFeatures:
    """One image and what has been computed from it (per set of drawn regions)."""

    image: Image.Image
    visual: dict[tuple, torch.Tensor] = field(default_factory=dict)      # key -> [1, V, D]
    prefix: dict[tuple, tuple[object, int]] = field(default_factory=dict)  # key -> (cache, length)
    encode_ms: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class SpatialGeoPipeline:
    def __init__(self, model: SpatialGeoForCausalLM, tokenizer: LlamaTokenizer,
                 template: str | None = None, cache_prefix: bool = True):
        self.model = model.eval()
        self.cfg: SpatialGeoConfig = model.cfg
        self.tokenizer = tokenizer
        self.processor = Processor(self.cfg, tokenizer)
        self.template = get_template(template or self.cfg.chat_template)
        self.cache_prefix = cache_prefix
        self.load_ms = 0.0
        self.model_path: Path | None = None
        self._lock = threading.Lock()          # one forward at a time on this model

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_path: str | Path | None = None, device: str = "cpu",
                        dtype: torch.dtype | str | None = None, load_4bit: bool = False,
                        load_8bit: bool = False, attn_implementation: str = "sdpa",
                        template: str | None = None, cache_prefix: bool = True,
                        clip_dir: str | Path | None = None) -> SpatialGeoPipeline:
        """Load our format, or a merged upstream SpatialGeo directory (+ clip_dir when it has no
        CLIP tensors). `model_path` None or "" is the embedded default model."""
        t0 = time.perf_counter()
        if not model_path:
            from spatialgeo_core.default_model import default_model_path
            model_path = default_model_path()
        path = Path(model_path)
        if not path.is_dir():
            raise CheckpointError(f"model path {path} is not a directory")
        if attn_implementation not in ATTENTION_CHOICES:
            raise ValueError(f"attn_implementation must be one of {ATTENTION_CHOICES}")
        if attn_implementation == "flash_attention_2":
            require("flash_attn")
        if load_4bit and load_8bit:
            raise ValueError("choose one of load_4bit and load_8bit")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError("device 'cuda' was asked for but CUDA is not available")
        if isinstance(dtype, str):
            dtype = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                     "fp16": torch.float16, "bfloat16": torch.bfloat16,
                     "bf16": torch.bfloat16}[dtype]
        dtype = dtype or default_dtype(dev)
        if (load_4bit or load_8bit) and not available("bitsandbytes"):
            require("bitsandbytes")
        if is_ours(path):
            cfg, tensors = read_ours(path)
            tok_dir = path
        else:
            asm = assemble(path, clip_dir=clip_dir)
            cfg, tensors, tok_dir = asm.config, asm.tensors, asm.tokenizer_dir
        quant = load_4bit or load_8bit
        model = build_model(cfg, tensors, str(path), dtype=dtype,
                            device="cpu" if quant else dev, attn_implementation=attn_implementation)
        del tensors
        if quant:
            n = quantize_llm(model.llm, 4 if load_4bit else 8, dtype, dev)
            model.to(dev)
            log.info("quantised %d LLM linear layers to %d-bit", n, 4 if load_4bit else 8)
        pipe = cls(model, LlamaTokenizer.from_dir(tok_dir), template=template,
                   cache_prefix=cache_prefix)
        pipe.model_path = path
        pipe.load_ms = (time.perf_counter() - t0) * 1000
        return pipe

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- encoding -----------------------------------------------------------------------------
    def encode(self, image: Image.Image | np.ndarray | FrameFeatures,
               regions: list[Region] | None = None) -> FrameFeatures:
        """Visual embeddings of the image (drawn with `regions`), kept in the returned object."""
        frame = image if isinstance(image, FrameFeatures) else FrameFeatures(to_pil_rgb(image))
        self._visual(frame, regions or [])
        return frame

    def _visual(self, frame: FrameFeatures, regions: list[Region]) -> tuple[tuple, torch.Tensor]:
        key = tuple(r.key() for r in regions)
        if key not in frame.visual:
            t0 = time.perf_counter()
            shown = draw_regions(frame.image, regions) if regions else frame.image
            px = self.processor.image(shown)[None].to(self.device)           # [1, 3, S, S]
            with self._lock, torch.inference_mode():
                frame.visual[key] = self.model.encode_images(px)              # [1, V, D]
            frame.encode_ms = (time.perf_counter() - t0) * 1000
        return key, frame.visual[key]

    # ---- answering ----------------------------------------------------------------------------
    def answer(self, frame: Image.Image | np.ndarray | FrameFeatures, question: str,
               regions: list[Region] | None = None, options: GenerationOptions | None = None,
               on_text: Callable[[str], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               history: list[tuple[str, str]] = (), keep_logits: bool = False) -> Answer:
        t0 = time.perf_counter()
        options = options or GenerationOptions()
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequestError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidRequestError(f"the question has {len(question)} characters; "
                                      f"at most {MAX_QUESTION_CHARS}")
        if not isinstance(frame, FrameFeatures):
            frame = FrameFeatures(to_pil_rgb(frame))
        regions = list(regions or [])
        fresh_encode = tuple(r.key() for r in regions) not in frame.visual
        key, visual = self._visual(frame, regions)
        encode_ms = frame.encode_ms if fresh_encode else 0.0
        ids = self.processor.tokenize(self.template.prompt(question.strip(), list(history)))
        start, end = self.processor.image_span(ids)
        if len(ids) + options.max_new_tokens > self.cfg.llm.max_position_embeddings:
            raise InvalidRequestError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({options.max_new_tokens}) exceed "
                f"the model's {self.cfg.llm.max_position_embeddings} positions")
        eos = self.tokenizer.eos_id
        llm = self.model.llm
        with self._lock, torch.inference_mode():
            t_prefill = time.perf_counter()
            cache_key = (key, self.template.name)
            if self.cache_prefix and not history and cache_key in frame.prefix:
                cache = copy.deepcopy(frame.prefix[cache_key][0])
                suffix = torch.tensor([ids[end:]], device=self.device)
                logits = llm(input_ids=suffix, past_key_values=cache, use_cache=True).logits
            else:
                prefix = torch.tensor([ids[:end]], device=self.device)
                emb = self.model.embed(prefix, visual)                            # [1, end, D]
                out = llm(inputs_embeds=emb, use_cache=True)
                cache = out.past_key_values
                if self.cache_prefix and not history:
                    frame.prefix[cache_key] = (copy.deepcopy(cache), end)
                suffix = torch.tensor([ids[end:]], device=self.device)
                logits = llm(input_ids=suffix, past_key_values=cache, use_cache=True).logits
            prefill_ms = (time.perf_counter() - t_prefill) * 1000
            text_cb = None
            if on_text is not None:
                def text_cb(out_ids: list[int]) -> None:
                    on_text(self.tokenizer.decode(out_ids).strip())
            dec = decode(llm, logits[0, -1], cache, options, eos, t0, on_token=text_cb,
                         should_stop=should_stop, keep_logits=keep_logits)
        text = self.tokenizer.decode(dec.ids).strip()
        total_ms = (time.perf_counter() - t0) * 1000
        answer = Answer(
            text=text, num_tokens=len(dec.ids), input_ids=ids, output_ids=dec.ids,
            image_span=(start, end), num_visual_tokens=end - start,
            timings_ms={"encode": encode_ms, "prefill": prefill_ms,
                        "first_token": dec.first_token_ms, "decode": dec.decode_ms,
                        "total": total_ms,
                        "per_token": dec.decode_ms / max(1, len(dec.ids) - 1)},
            stopped=dec.stopped, step_logits=dec.step_logits)
        return answer

    # ---- resources ----------------------------------------------------------------------------
    def memory_stats(self) -> dict[str, float]:
        if self.device.type != "cuda":
            return {}
        return {"gpu_allocated_mb": torch.cuda.memory_allocated(self.device) / 2**20,
                "gpu_reserved_mb": torch.cuda.memory_reserved(self.device) / 2**20,
                "gpu_peak_allocated_mb": torch.cuda.max_memory_allocated(self.device) / 2**20}

    def release(self) -> None:
        """Drop the model; frees GPU memory once the caller drops its FrameFeatures too."""
        with self._lock:
            dev = self.device
            self.model = None  # type: ignore[assignment]
            if dev.type == "cuda":
                torch.cuda.empty_cache()
