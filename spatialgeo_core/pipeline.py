"""Serving: load once, answer questions about frames.

    pipe = SpatialGeoPipeline.from_pretrained(LoadOptions("path/to/model", device="cuda",
                                                          quantization="4bit"))
    frame = pipe.encode(image)                  # reusable FrameFeatures
    ans = pipe.answer(frame, "How far is Region [0] from Region [1]?", regions=[...])

`answer_batch` is the one way a question is answered (`answer` asks one): the questions are
checked once, the regions once where they are drawn, the image converted to RGB once, and the
frame's features (visual tokens per set of regions, the KV cache of the prompt up to the end of
the image) kept in the pipeline's one FeatureCache (feature_cache.py), so a further question on
the same frame only runs its own text and the answer. The cached keys/values are plain per-layer
tensors: the KV cache a question decodes with is built from them and only ever grows by
concatenation, so they are never written to and need no copy per question. Callers that name
their frames (the node, the evaluations) go through spatialgeo_core.serving.answer_frame.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import StaticCache

from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.conversation import get_template
from spatialgeo_core.errors import InvalidRequestError
from spatialgeo_core.feature_cache import FeatureCache, FrameFeatures, ImageSource
from spatialgeo_core.generation import decode_batch
from spatialgeo_core.kv_cache import (
    cache_from_tensors,
    cache_tensors,
    returned_cache,
    with_cache,
)
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_core.model import SpatialGeoForCausalLM
from spatialgeo_core.processor import Processor
from spatialgeo_core.regions import draw_regions
from spatialgeo_core.tokenizer import LlamaTokenizer
from spatialgeo_core.types import Answer, GenerationOptions, Region, check_question

STATIC_CACHE_STEP = 256               # static KV cache capacity is a multiple of this many tokens

Frame = Image.Image | np.ndarray | FrameFeatures


class SpatialGeoPipeline:
    """Serves one model as `options` say (load_options.LoadOptions): `static_cache` decodes a
    single question in one preallocated StaticCache (fixed addresses); `compile_decode` (implies
    it) runs the decode step through `torch.compile`, with CUDA graphs on a GPU. Both are off by
    default: they pay off on a GPU, where a 7B decode step is launch-bound, and the first answer
    after a start (or a longer prompt) pays the compilation."""

    def __init__(self, model: SpatialGeoForCausalLM, tokenizer: LlamaTokenizer,
                 options: LoadOptions | None = None):
        options = options or LoadOptions()
        self.model = model.eval()
        self.cfg: SpatialGeoConfig = model.cfg
        self.tokenizer = tokenizer
        self.options = options
        self.processor = Processor(self.cfg, tokenizer)
        self.template = get_template(options.template or self.cfg.chat_template)
        self.cache = FeatureCache(options.max_cached_frames)
        self.static_cache = options.static_cache or options.compile_decode
        self.load_ms = 0.0
        self.model_path: Path | None = Path(options.path) if options.path else None
        self._lock = threading.Lock()          # one forward at a time on this model
        self._static: StaticCache | None = None
        self._static_len = 0
        self._decode_forward = model.llm
        if options.compile_decode:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._decode_forward = torch.compile(model.llm.forward, mode=mode, dynamic=False)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, options: LoadOptions | str | Path) -> SpatialGeoPipeline:
        """Load our format, or a merged upstream SpatialGeo directory (+ options.clip_dir when it
        has no CLIP tensors). A path alone loads with the default options. A path is needed:
        the CLI and the node name the embedded default model
        (default_model.embedded_model_path()) when none is given."""
        from spatialgeo_core.loading import load_model

        if not isinstance(options, LoadOptions):
            options = LoadOptions(path=str(options))
        t0 = time.perf_counter()
        model, tokenizer = load_model(options)
        pipe = cls(model, tokenizer, options)
        pipe.load_ms = (time.perf_counter() - t0) * 1000
        return pipe

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- frames -------------------------------------------------------------------------------
    def frame(self, key: Hashable, load: Callable[[], ImageSource]) -> FrameFeatures:
        """The frame a caller names `key` (a buffered camera frame, a bag frame, an image file),
        from the feature cache, or made of `load()` (decoded and converted once)."""
        return self.cache.frame(key, load)

    def encode(self, image: Frame, regions: list[Region] | None = None) -> FrameFeatures:
        """Visual embeddings of the image (drawn with `regions`), kept in the returned object."""
        frame = self._use(image)
        self._visual(frame, list(regions or []))
        return frame

    def cached_frames(self) -> int:
        """How many frames the feature cache holds."""
        return len(self.cache)

    def _use(self, image: Frame) -> FrameFeatures:
        frame = image if isinstance(image, FrameFeatures) else FrameFeatures.of(image)
        return self.cache.use(frame)

    def _visual(self, frame: FrameFeatures, regions: list[Region]
                ) -> tuple[tuple, torch.Tensor, float]:
        """(region key, visual embeddings [1, V, D], encode ms if encoded now else 0). The regions
        are checked against the image where they are drawn, once per set."""
        key = tuple(r.key() for r in regions)
        if key in frame.visual:
            return key, frame.visual[key], 0.0
        t0 = time.perf_counter()
        shown = draw_regions(frame.image, regions) if regions else frame.image
        px = self.processor.image(shown)[None].to(self.device)               # [1, 3, S, S]
        with self._lock, torch.inference_mode():
            frame.visual[key] = self.model.encode_images(px)                  # [1, V, D]
        frame.encode_ms = (time.perf_counter() - t0) * 1000
        return key, frame.visual[key], frame.encode_ms

    # ---- answering ----------------------------------------------------------------------------
    def answer(self, frame: Frame, question: str, regions: list[Region] | None = None,
               options: GenerationOptions | None = None,
               on_text: Callable[[str], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               history: list[tuple[str, str]] = (), keep_logits: bool = False) -> Answer:
        """One question: `answer_batch` of it alone. `on_text` gets the answer so far."""
        text_cb = None if on_text is None else (lambda _, text: on_text(text))
        return self.answer_batch(frame, [question], regions, options, on_text=text_cb,
                                 should_stop=should_stop, history=history,
                                 keep_logits=keep_logits)[0]

    def answer_batch(self, frame: Frame, questions: list[str],
                     regions: list[Region] | None = None,
                     options: GenerationOptions | None = None, *,
                     on_text: Callable[[int, str], None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     history: list[tuple[str, str]] = (),
                     keep_logits: bool = False) -> list[Answer]:
        """Questions about one frame (one set of regions, one chat history), answered together.

        The image prefix is computed once (or taken from the frame's cache) and the questions
        prefill and decode as one batch; one question without a cached prefix is prefilled in one
        forward, its image prefix kept from it. Each answer is the one this question gets alone,
        up to float rounding. `on_text(i, text)` gets question i's answer so far; `should_stop`
        is polled between tokens (the answers end "cancelled")."""
        t0 = time.perf_counter()
        options = options or GenerationOptions()
        regions = list(regions or [])
        if not questions:
            raise InvalidRequestError("no questions")
        frame = self._use(frame)
        key, visual, encode_ms = self._visual(frame, regions)     # the regions are checked here
        questions = [check_question(q, len(regions)) for q in questions]
        prompts = [self.processor.tokenize(self.template.prompt(q, list(history)))
                   for q in questions]
        start, end = self.processor.image_span(prompts[0])
        lens = [len(ids) for ids in prompts]
        for ids in prompts:
            self._check_length(ids, options)
        shared = 0 < end < min(lens) and all(ids[:end] == prompts[0][:end] for ids in prompts)
        B = len(prompts)
        if B > 1 and not shared:
            raise InvalidRequestError("the prompts do not share the image prefix")
        llm = self.model.llm
        with self._lock, torch.inference_mode():
            t_prefill = time.perf_counter()
            cache_key = (key, self.template.name)
            keep = self.options.cache_prefix and not history and shared
            cached = frame.prefix.get(cache_key) if keep else None
            mask = None
            if cached is None and B == 1:
                emb = self._prompt_embeds(prompts[0], start, end, visual)         # [1, T, D]
                out = llm.model(inputs_embeds=emb, use_cache=True)                # one pass
                cache, hidden = returned_cache(out), out.last_hidden_state        # [1, T, D]
                if keep:
                    frame.prefix[cache_key] = (cache_tensors(cache, end), end)
                last = hidden[:, -1]                                              # [1, D]
            else:
                if cached is None:
                    emb = self._prompt_embeds(prompts[0][:end], start, end, visual)  # [1, end, D]
                    kv = cache_tensors(returned_cache(llm.model(inputs_embeds=emb,
                                                                use_cache=True)), end)
                    if keep:
                        frame.prefix[cache_key] = (kv, end)
                else:
                    kv = cached[0]
                if B > 1:
                    kv = tuple((k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1))
                               for k, v in kv)                        # L x 2 x [B, H, end, Dh]
                cache = cache_from_tensors(kv)
                n_real = torch.tensor([n - end for n in lens], device=self.device)   # [B]
                S = max(lens) - end
                pad = self.tokenizer.pad_id
                suffix = torch.tensor([ids[end:] + [pad] * (S - (len(ids) - end))
                                       for ids in prompts], device=self.device)    # [B, S]
                if min(lens) != max(lens):                            # padded rows: a mask
                    mask = torch.cat([
                        torch.ones(B, end, dtype=torch.long, device=self.device),
                        (torch.arange(S, device=self.device) < n_real[:, None]).long()],
                        dim=1)                                                     # [B, end + S]
                pos = (end + torch.arange(S, device=self.device)).expand(B, S)     # [B, S]
                hidden = llm.model(input_ids=suffix, attention_mask=mask, position_ids=pos,
                                   use_cache=True, **with_cache(cache)).last_hidden_state
                last = hidden[torch.arange(B, device=self.device), n_real - 1]     # [B, D]
            logits = llm.lm_head(last)                                             # [B, vocab]
            step_fn = llm
            if self.static_cache and B == 1:
                cache = self._fill_static(cache, lens[0], options.max_new_tokens)
                step_fn = self._decode_forward
            prefill_ms = (time.perf_counter() - t_prefill) * 1000
            text_cb = None
            if on_text is not None:
                def text_cb(row: int, out_ids: list[int]) -> None:
                    on_text(row, self.tokenizer.decode(out_ids).strip())
            decs = decode_batch(step_fn, logits, cache, options, self.tokenizer.eos_id, t0,
                                positions=torch.tensor(lens, device=self.device),
                                attention_mask=mask, on_token=text_cb,
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
        """Drop the model and the feature cache; frees GPU memory once the caller drops any
        FrameFeatures it holds too."""
        with self._lock:
            dev = self.device
            self.cache.clear()
            self.model = None  # type: ignore[assignment]
            self._decode_forward, self._static = None, None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
