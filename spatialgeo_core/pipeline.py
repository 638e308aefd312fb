"""Serving: load once, encode frames, answer questions about them.

    pipe = SpatialGeoPipeline.from_pretrained("path/to/model", device="cuda", load_4bit=True)
    frame = pipe.encode(image)                  # reusable FrameFeatures
    ans = pipe.answer(frame, "How far is Region [0] from Region [1]?", regions=[...])

A FrameFeatures keeps the visual embeddings of its image for each set of drawn regions and, when
prefix caching is on, the KV cache of the prompt up to the end of the image; a further question on
the same frame only runs its own text and the answer. The cached keys/values are plain per-layer
tensors: the KV cache a question decodes with is built from them and only ever grows by
concatenation, so they are never written to and need no copy per question.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache, StaticCache

from spatialgeo_core.checkpoint.convert import assemble
from spatialgeo_core.checkpoint.ours import build_model, is_ours, read_ours
from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.conversation import get_template
from spatialgeo_core.errors import CheckpointError, InvalidRequestError
from spatialgeo_core.generation import decode, decode_batch
from spatialgeo_core.model import SpatialGeoForCausalLM
from spatialgeo_core.optional import available, require
from spatialgeo_core.processor import Processor, to_pil_rgb
from spatialgeo_core.quantize import quantize_llm
from spatialgeo_core.regions import draw_regions
from spatialgeo_core.tokenizer import LlamaTokenizer
from spatialgeo_core.types import (
    Answer,
    GenerationOptions,
    Region,
    check_region_references,
)

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
ATTENTION_CHOICES = ("sdpa", "eager", "flash_attention_2")
STATIC_CACHE_STEP = 256               # static KV cache capacity is a multiple of this many tokens


@dataclass
class FrameFeatures:
    """One image and what has been computed from it (per set of drawn regions)."""

    image: Image.Image
    visual: dict[tuple, torch.Tensor] = field(default_factory=dict)      # key -> [1, V, D]
    # key -> (per-layer (keys, values), each [1, H_kv, length, D_head]; length)
    prefix: dict[tuple, tuple[tuple[tuple[torch.Tensor, torch.Tensor], ...], int]] = field(
        default_factory=dict)
    encode_ms: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def nbytes(self) -> int:
        """Bytes held by the cached features and prefix caches (each storage counted once)."""
        tensors = list(self.visual.values())
        tensors += [t for kv, _ in self.prefix.values() for pair in kv for t in pair]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class SpatialGeoPipeline:
    """Serves one model. `static_cache` decodes `answer` in one preallocated StaticCache (fixed
    addresses); `compile_decode` (implies it) runs the decode step through `torch.compile`, with
    CUDA graphs on a GPU. Both are off by default: they pay off on a GPU, where a 7B decode step is
    launch-bound, and the first answer after a start (or a longer prompt) pays the compilation."""

    def __init__(self, model: SpatialGeoForCausalLM, tokenizer: LlamaTokenizer,
                 template: str | None = None, cache_prefix: bool = True,
                 static_cache: bool = False, compile_decode: bool = False,
                 max_cached_prefixes: int = 2):
        self.model = model.eval()
        self.cfg: SpatialGeoConfig = model.cfg
        self.tokenizer = tokenizer
        self.processor = Processor(self.cfg, tokenizer)
        self.template = get_template(template or self.cfg.chat_template)
        self.cache_prefix = cache_prefix
        # image-prefix KV caches kept across all frames (least recently used dropped first): at
        # real size one is ~0.6 GB in fp16, so a few cameras' worth would not fit beside the model
        if max_cached_prefixes < 1:
            raise ValueError(f"max_cached_prefixes must be >= 1, got {max_cached_prefixes}")
        self.max_cached_prefixes = max_cached_prefixes
        self._prefix_lru: OrderedDict[tuple, weakref.ref] = OrderedDict()
        self.static_cache = static_cache or compile_decode
        self.load_ms = 0.0
        self.model_path: Path | None = None
        self._lock = threading.Lock()          # one forward at a time on this model
        self._static: StaticCache | None = None
        self._static_len = 0
        self._decode_forward = model.llm
        if compile_decode:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._decode_forward = torch.compile(model.llm.forward, mode=mode, dynamic=False)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_path: str | Path | None = None, device: str = "cpu",
                        dtype: torch.dtype | str | None = None, load_4bit: bool = False,
                        load_8bit: bool = False, attn_implementation: str = "sdpa",
                        template: str | None = None, cache_prefix: bool = True,
                        clip_dir: str | Path | None = None, static_cache: bool = False,
                        compile_decode: bool = False,
                        max_cached_prefixes: int = 2) -> SpatialGeoPipeline:
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
        dev = resolve_device(device)
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
        model = build_model(cfg, tensors, str(path), dtype=dtype, device="cpu" if quant else dev,
                            attn_implementation=attn_implementation)
        del tensors
        if quant:
            n = quantize_llm(model.llm, 4 if load_4bit else 8, dtype, dev)
            model.to(dev)
            log.info("quantised %d LLM linear layers to %d-bit", n, 4 if load_4bit else 8)
        pipe = cls(model, LlamaTokenizer.from_dir(tok_dir), template=template,
                   cache_prefix=cache_prefix, static_cache=static_cache,
                   compile_decode=compile_decode, max_cached_prefixes=max_cached_prefixes)
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
    def _keep_prefix(self, frame: FrameFeatures, cache_key: tuple, kv, end: int) -> None:
        """Store a frame's image-prefix KV; drop the least recently used beyond the limit."""
        frame.prefix[cache_key] = (kv, end)
        self._touch_prefix(frame, cache_key)
        while len(self._prefix_lru) > self.max_cached_prefixes:
            (_, old_key), ref = self._prefix_lru.popitem(last=False)
            old_frame = ref()
            if old_frame is not None:
                old_frame.prefix.pop(old_key, None)

    def _touch_prefix(self, frame: FrameFeatures, cache_key: tuple) -> None:
        lru_key = (id(frame), cache_key)
        self._prefix_lru[lru_key] = weakref.ref(frame)
        self._prefix_lru.move_to_end(lru_key)
        for k in [k for k, ref in self._prefix_lru.items() if ref() is None]:
            del self._prefix_lru[k]                      # frames the caller has dropped

    def _frame_visual(self, frame: Image.Image | np.ndarray | FrameFeatures,
                      regions: list[Region] | None):
        """-> (frame features, region key, visual embeddings [1, V, D], encode ms if encoded
        now)."""
        if not isinstance(frame, FrameFeatures):
            frame = FrameFeatures(to_pil_rgb(frame))
        regions = list(regions or [])
        fresh_encode = tuple(r.key() for r in regions) not in frame.visual
        key, visual = self._visual(frame, regions)
        return frame, key, visual, (frame.encode_ms if fresh_encode else 0.0)

    def answer(self, frame: Image.Image | np.ndarray | FrameFeatures, question: str,
               regions: list[Region] | None = None, options: GenerationOptions | None = None,
               on_text: Callable[[str], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               history: list[tuple[str, str]] = (), keep_logits: bool = False) -> Answer:
        t0 = time.perf_counter()
        options = options or GenerationOptions()
        _check_question(question, regions)
        frame, key, visual, encode_ms = self._frame_visual(frame, regions)
        ids = self.processor.tokenize(self.template.prompt(question.strip(), list(history)))
        start, end = self.processor.image_span(ids)
        self._check_length(ids, options)
        eos = self.tokenizer.eos_id
        llm = self.model.llm
        with self._lock, torch.inference_mode():
            t_prefill = time.perf_counter()
            cache_key = (key, self.template.name)
            use_prefix = self.cache_prefix and not history and 0 < end < len(ids)
            if use_prefix and cache_key in frame.prefix:
                self._touch_prefix(frame, cache_key)
                cache = cache_from_tensors(frame.prefix[cache_key][0])
                suffix = torch.tensor([ids[end:]], device=self.device)            # [1, T - end]
                hidden = llm.model(input_ids=suffix, past_key_values=cache,
                                   use_cache=True).last_hidden_state              # [1, T - end, D]
            else:
                emb = self._prompt_embeds(ids, start, end, visual)                # [1, T, D]
                out = llm.model(inputs_embeds=emb, use_cache=True)                # one pass
                cache, hidden = out.past_key_values, out.last_hidden_state        # [1, T, D]
                if use_prefix:
                    self._keep_prefix(frame, cache_key, cache_tensors(cache, end), end)
            logits = llm.lm_head(hidden[:, -1])                                   # [1, vocab]
            step_fn, prompt_len = llm, None
            if self.static_cache:
                cache = self._fill_static(cache, len(ids), options.max_new_tokens)
                step_fn, prompt_len = self._decode_forward, len(ids)
            prefill_ms = (time.perf_counter() - t_prefill) * 1000
            text_cb = None
            if on_text is not None:
                def text_cb(out_ids: list[int]) -> None:
                    on_text(self.tokenizer.decode(out_ids).strip())
            dec = decode(step_fn, logits[0], cache, options, eos, t0, on_token=text_cb,
                         should_stop=should_stop, keep_logits=keep_logits, prompt_len=prompt_len)
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

    def answer_batch(self, frame: Image.Image | np.ndarray | FrameFeatures, questions: list[str],
                     regions: list[Region] | None = None, options: GenerationOptions | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     keep_logits: bool = False) -> list[Answer]:
        """Several questions about one frame (one set of regions), answered together: the image
        prefix is computed once (or taken from the frame's cache) and the questions prefill and
        decode as one batch. Each answer is the one `answer` gives that question alone, up to float
        rounding."""
        t0 = time.perf_counter()
        options = options or GenerationOptions()
        if not questions:
            raise InvalidRequestError("no questions")
        for q in questions:
            _check_question(q, regions)
        frame, key, visual, encode_ms = self._frame_visual(frame, regions)
        prompts = [self.processor.tokenize(self.template.prompt(q.strip())) for q in questions]
        start, end = self.processor.image_span(prompts[0])
        for ids in prompts:
            self._check_length(ids, options)
            if ids[:end] != prompts[0][:end] or len(ids) <= end:
                raise InvalidRequestError("the prompts do not share the image prefix")
        B, lens = len(prompts), [len(ids) - end for ids in prompts]
        S = max(lens)
        llm = self.model.llm
        with self._lock, torch.inference_mode():
            t_prefill = time.perf_counter()
            cache_key = (key, self.template.name)
            kv = frame.prefix.get(cache_key, (None, 0))[0] if self.cache_prefix else None
            if kv is None:
                emb = self._prompt_embeds(prompts[0][:end], start, end, visual)  # [1, end, D]
                kv = cache_tensors(llm.model(inputs_embeds=emb, use_cache=True).past_key_values,
                                   end)
                if self.cache_prefix:
                    self._keep_prefix(frame, cache_key, kv, end)
            elif self.cache_prefix:
                self._touch_prefix(frame, cache_key)
            cache = cache_from_tensors(tuple((k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1))
                                             for k, v in kv))          # L x 2 x [B, H, end, Dh]
            pad = self.tokenizer.pad_id
            suffix = torch.tensor([ids[end:] + [pad] * (S - n)
                                   for ids, n in zip(prompts, lens, strict=True)],
                                  device=self.device)                          # [B, S]
            n_real = torch.tensor(lens, device=self.device)                    # [B]
            mask = torch.cat([torch.ones(B, end, dtype=torch.long, device=self.device),
                              (torch.arange(S, device=self.device) < n_real[:, None]).long()],
                             dim=1)                                            # [B, end + S]
            pos = (end + torch.arange(S, device=self.device)).expand(B, S)     # [B, S]
            hidden = llm.model(input_ids=suffix, attention_mask=mask, position_ids=pos,
                               past_key_values=cache, use_cache=True).last_hidden_state  # [B,S,D]
            last = hidden[torch.arange(B, device=self.device), n_real - 1]     # [B, D]
            logits = llm.lm_head(last)                                         # [B, vocab]
            prefill_ms = (time.perf_counter() - t_prefill) * 1000
            decs = decode_batch(llm, logits, cache, options, self.tokenizer.eos_id, t0,
                                positions=end + n_real, attention_mask=mask,
                                should_stop=should_stop, keep_logits=keep_logits)
        total_ms = (time.perf_counter() - t0) * 1000
        return [Answer(
            text=self.tokenizer.decode(d.ids).strip(), num_tokens=len(d.ids), input_ids=ids,
            output_ids=d.ids, image_span=(start, end), num_visual_tokens=end - start,
            timings_ms={"encode": encode_ms, "prefill": prefill_ms,
                        "first_token": d.first_token_ms, "decode": d.decode_ms, "total": total_ms,
                        "per_token": d.decode_ms / max(1, len(d.ids) - 1)},
            stopped=d.stopped, step_logits=d.step_logits)
            for ids, d in zip(prompts, decs, strict=True)]

    def _fill_static(self, cache, length: int, max_new_tokens: int) -> StaticCache:
        """The prompt's keys/values copied into the pipeline's one StaticCache, whose capacity
        grows in steps of STATIC_CACHE_STEP tokens (a new capacity is a new shape: a compiled step
        recompiles)."""
        need = -(-(length + max_new_tokens) // STATIC_CACHE_STEP) * STATIC_CACHE_STEP
        if self._static is None or self._static_len < need:
            self._static = StaticCache(config=self.model.llm.config, max_cache_len=need)
            self._static_len = need
        else:
            self._static.reset()
        for i, (k, v) in enumerate(cache_tensors(cache, length)):
            self._static.update(k, v, i)
        return self._static

    def _check_length(self, ids: list[int], options: GenerationOptions) -> None:
        if len(ids) + options.max_new_tokens > self.cfg.llm.max_position_embeddings:
            raise InvalidRequestError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({options.max_new_tokens}) exceed "
                f"the model's {self.cfg.llm.max_position_embeddings} positions")

    def _prompt_embeds(self, ids: list[int], start: int, end: int,
                       visual: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [1, T, D] of a prompt whose one image fills ids[start:end].

        The same numbers as `model.embed` (whose masked scatter trains the model), but the image
        span and the count check come from the host-side ids, so serving never waits on the device
        here.
        """
        if end - start != visual.shape[1]:
            raise ValueError(f"the prompt holds {end - start} image placeholders but the image "
                             f"gives {visual.shape[1]} visual tokens")
        text = torch.tensor([ids[:start] + ids[end:]], device=self.device)          # [1, T - V]
        emb = self.model.llm.get_input_embeddings()(text)                           # [1, T - V, D]
        parts = [emb[:, :start], visual.to(emb.dtype), emb[:, start:]]
        return torch.cat(parts, dim=1)                                              # [1, T, D]

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
            self._decode_forward, self._static = None, None
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def _check_question(question: str, regions: list[Region] | None) -> None:
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequestError(f"the question has {len(question)} characters; "
                                  f"at most {MAX_QUESTION_CHARS}")
    check_region_references(question, len(regions or ()))


def resolve_device(device: str | torch.device) -> torch.device:
    """"cpu", "cuda" or "cuda:N" -> torch.device, after checking that it exists here
    (InvalidRequestError otherwise)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InvalidRequestError(f"device {device!r} is not cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidRequestError(f"device {device!r} was asked for but CUDA is not "
                                      "available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidRequestError(f"device {device!r}: this machine has "
                                      f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def cache_tensors(cache, length: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per-layer (keys, values) of a KV cache up to `length` positions, as views (no copy)."""
    if hasattr(cache, "layers"):                  # transformers >= 4.56: a list of cache layers
        pairs = [(layer.keys, layer.values) for layer in cache.layers]
    else:
        pairs = list(zip(cache.key_cache, cache.value_cache, strict=True))
    return tuple((k[:, :, :length], v[:, :, :length]) for k, v in pairs)  # L x 2 x [B,H,length,Dh]


def cache_from_tensors(kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> DynamicCache:
    """A DynamicCache continuing from per-layer (keys, values). DynamicCache grows by concatenation
    into new tensors, so decoding with it never writes into `kv`."""
    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache
