"""What both benchmarks share: the two models at one size, the prompts and frames, clocks,
statistics and a description of the machine.

The two models are built with the same sizes and random weights (speed does not depend on the
values):

- ours: `SpatialGeoForCausalLM` (CLIP + geometry tower, 2N visual tokens) served by
  `SpatialGeoPipeline`;
- LLaVA-1.5: transformers' `LlavaForConditionalGeneration` with the same CLIP tower, the same LLaMA
  decoder (plus llava-hf's 64 padding rows of vocabulary) and N visual tokens, answering through
  `generate()`.

Both read the same image through the same preprocessing (`Processor.image`, the PIL path of
`CLIPImageProcessor` after LLaVA's pad-to-square) and the same prompt text (`llava_v1` template,
the tokenizer of `spatialgeo_core.tiny`: no real tokenizer is needed and the text is identical for
both), and both answer with exactly `answer_tokens` greedy tokens (EOS masked as transformers'
`min_new_tokens`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LlavaConfig, LlavaForConditionalGeneration
from transformers.generation.streamers import BaseStreamer

from spatialgeo_core.clip_tower import hf_clip_config
from spatialgeo_core.config import SpatialGeoConfig, real_size, tiny
from spatialgeo_core.conversation import get_template
from spatialgeo_core.dtypes import DTYPE_NAMES, default_dtype, torch_dtype
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_core.loading import build_served_model
from spatialgeo_core.model import SpatialGeoForCausalLM, hf_llama_config
from spatialgeo_core.pipeline import SpatialGeoPipeline
from spatialgeo_core.processor import Processor
from spatialgeo_core.quantize import quantize_llm
from spatialgeo_core.tiny import build_tokenizer
from spatialgeo_core.tokenizer import LlamaTokenizer

SIZES = ("tiny", "real")
LLAVA_VOCAB_PAD = 64          # llava-hf/llava-1.5-7b-hf: 32000 + 64 rows (the image token is one)
QUESTIONS = (
    "How far is the chair from the table?",
    "Is the red box to the left of the blue cylinder?",
    "Which one is closer to the camera, the robot or the cone?",
    "What is the height of the green cube in meters?",
    "Is the sphere bigger than the box on the floor?",
    "At what o'clock direction is the yellow cone from the robot?",
)


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """One benchmark configuration: model size, where it runs, and how the answer is produced."""

    size: str = "tiny"                 # "tiny": config.tiny(); "real": 7B (config.real_size())
    device: str = "cpu"
    dtype: str | None = None           # None: the pipeline's (fp32 on CPU, bf16/fp16 on CUDA)
    load_4bit: bool = False            # NF4 LLM (bitsandbytes) for both; towers stay in `dtype`
    image_size: int | None = None      # tiny only: image side (56 by default; 336: 576 patches)
    answer_tokens: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.image_size is not None and self.size != "tiny":
            raise ValueError("image_size is for the tiny size only (real size is 336 px)")
        if self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {self.answer_tokens}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype) if self.dtype else default_dtype(self.torch_device)

    def load_options(self, attn_implementation: str = "sdpa", static_cache: bool = False,
                     compile_decode: bool = False) -> LoadOptions:
        """How our model is built and served here: the LoadOptions the CLI and the node build
        from their options. Four cameras' frames are kept, so that the memory bench measures all
        four cached."""
        return LoadOptions(device=self.device, dtype=self.dtype,
                           quantization="4bit" if self.load_4bit else "none",
                           attn_implementation=attn_implementation, static_cache=static_cache,
                           compile_decode=compile_decode, max_cached_frames=4)


def model_config(setup: Setup, vocab_size: int) -> SpatialGeoConfig:
    """tiny() (with room for the longer prompt of a larger image), or the real SpatialGeo-7B."""
    if setup.size == "real":
        return real_size()
    cfg = tiny(vocab_size=vocab_size)
    if setup.image_size is None:
        return cfg
    room = (setup.image_size // cfg.clip.patch_size) ** 2 * 2 + 512   # 2N visual tokens + text
    return dataclasses.replace(
        cfg, clip=dataclasses.replace(cfg.clip, image_size=setup.image_size),
        llm=dataclasses.replace(cfg.llm, max_position_embeddings=max(room, 1024)),
        max_length=max(room, cfg.max_length))


def llava_config(cfg: SpatialGeoConfig) -> LlavaConfig:
    """transformers' LLaVA-1.5 with our CLIP tower and LLaMA decoder (vocabulary padded as
    llava-hf)."""
    llm = dataclasses.replace(cfg.llm, vocab_size=cfg.llm.vocab_size + LLAVA_VOCAB_PAD)
    return LlavaConfig(vision_config=hf_clip_config(cfg.clip), text_config=hf_llama_config(llm),
                       image_token_index=cfg.image_token_id, projector_hidden_act="gelu",
                       vision_feature_layer=cfg.clip.select_layer,
                       vision_feature_select_strategy="default")


# ---- models -------------------------------------------------------------------------------------
def init_random_(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Cheap deterministic random weights: matrices ~ N(0, std), biases 0, other vectors (norms,
    layer scales) 1. Runs where the parameters are (fast on a GPU)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def make_tokenizer(directory: str | Path | None = None) -> LlamaTokenizer:
    """The tiny LLaMA-layout SentencePiece tokenizer (built locally, no download)."""
    d = Path(directory or tempfile.mkdtemp(prefix="spatialgeo-bench-tok-"))
    build_tokenizer(d)
    return LlamaTokenizer.from_dir(d)


def random_model(setup: Setup, vocab_size: int,
                 attn_implementation: str = "sdpa") -> SpatialGeoForCausalLM:
    """SpatialGeo at `setup.size` with random weights on `setup.device`, built, quantised (NF4
    with `load_4bit`) and moved by the function that makes every served model
    (spatialgeo_core.loading.build_served_model): random weights are drawn on the device (fast
    on a GPU) and quantised there."""
    cfg = model_config(setup, vocab_size)
    return build_served_model(cfg, setup.load_options(attn_implementation),
                              init=lambda model: init_random_(model, setup.seed),
                              what="random weights")


def build_ours(setup: Setup, tokenizer: LlamaTokenizer, attn_implementation: str = "sdpa",
               static_cache: bool = False, compile_decode: bool = False) -> SpatialGeoPipeline:
    """SpatialGeo at `setup.size` with random weights (`random_model`), served by the
    pipeline."""
    options = setup.load_options(attn_implementation, static_cache, compile_decode)
    model = random_model(setup, tokenizer.vocab_size, attn_implementation)
    return SpatialGeoPipeline(model, tokenizer, options)


def build_llava(setup: Setup, cfg: SpatialGeoConfig,
                attn_implementation: str = "sdpa") -> LlavaForConditionalGeneration:
    """transformers' LlavaForConditionalGeneration at the same size, allocated in `dtype` without
    an fp32 copy (meta device, then the buffers that are not in the state dict are recomputed);
    with `load_4bit` its LLM is quantised where it is, as in `random_model`."""
    dev, dtype = setup.torch_device, setup.torch_dtype
    with torch.device("meta"):
        model = LlavaForConditionalGeneration._from_config(
            llava_config(cfg), attn_implementation=attn_implementation)
    model.to(dtype)
    model.to_empty(device=dev)
    _reset_llava_buffers(model, dev)
    init_random_(model, setup.seed)
    if setup.load_4bit:
        quantize_llm(model.model.language_model, 4, dtype, dev)
        release_cached(dev)
    return model.eval()


def release_cached(device: torch.device) -> None:
    """Give the caching allocator's free blocks back (the fp16 weights replaced by NF4 ones), so
    that reserved memory measured next is not the build's."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_llava_buffers(model: LlavaForConditionalGeneration, device: torch.device) -> None:
    lm = model.model.language_model
    lm.rotary_emb = type(lm.rotary_emb)(config=lm.config).to(device)
    vt = model.model.vision_tower
    emb = (vt.vision_model if hasattr(vt, "vision_model") else vt).embeddings
    if "position_ids" in dict(emb.named_buffers(recurse=False)):
        emb.position_ids.copy_(torch.arange(emb.position_ids.shape[-1], device=device)[None])


class _TokenClock(BaseStreamer):
    """Times the tokens that `generate()` streams: the first `put` is the prompt, the rest new
    tokens."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@dataclass
class BaselineAnswer:
    output_ids: list[int]
    text: str
    timings_ms: dict[str, float]


class LlavaBaseline:
    """LLaVA-1.5 served the plain transformers way: preprocess, tokenize, `generate()`, decode."""

    def __init__(self, model: LlavaForConditionalGeneration, cfg: SpatialGeoConfig,
                 tokenizer: LlamaTokenizer, template: str = "llava_v1",
                 cache_implementation: str | None = None):
        self.model = model
        self.cache_implementation = cache_implementation      # None: generate()'s DynamicCache
        self.cfg = dataclasses.replace(cfg, geometry=None)     # N visual tokens per image
        self.processor = Processor(self.cfg, tokenizer)
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.device = next(model.parameters()).device
        self.dtype = model.model.multi_modal_projector.linear_1.weight.dtype

    def prompt_ids(self, question: str) -> list[int]:
        return self.processor.tokenize(self.template.prompt(question))

    def pixels(self, image) -> torch.Tensor:
        return self.processor.image(image)[None].to(self.device, self.dtype)      # [1, 3, S, S]

    def answer(self, image, question: str, answer_tokens: int,
               pixel_values: torch.Tensor | None = None) -> BaselineAnswer:
        sync = synchronizer(self.device)
        t0 = time.perf_counter()
        px = self.pixels(image) if pixel_values is None else pixel_values
        ids = torch.tensor([self.prompt_ids(question)], device=self.device)          # [1, T]
        clock = _TokenClock(sync)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=px,
                max_new_tokens=answer_tokens, min_new_tokens=answer_tokens, do_sample=False,
                num_beams=1, use_cache=True, streamer=clock, **self._generate_kwargs())
        new = out[0, ids.shape[1]:].tolist()
        vocab = self.tokenizer.vocab_size         # random weights may pick llava-hf's padding rows
        text = self.tokenizer.decode([i for i in new if i < vocab]).strip()
        sync()
        t_end = time.perf_counter()
        first = (clock.times[0] - t0) * 1000 if clock.times else float("nan")
        decode = (clock.times[-1] - clock.times[0]) * 1000 if clock.times else float("nan")
        return BaselineAnswer(new, text, {"first_token": first, "decode": decode,
                                          "total": (t_end - t0) * 1000})

    def answer_batch(self, questions: Sequence[str], answer_tokens: int,
                     pixel_values: torch.Tensor) -> list[list[int]]:
        """Several questions about one (preprocessed) frame in one `generate()` call: prompts
        padded on the left, the frame repeated per prompt (transformers runs the tower once per
        prompt)."""
        prompts = [self.prompt_ids(q) for q in questions]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts],
                           device=self.device)                                 # [B, T]
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                            device=self.device)                                # [B, T]
        px = pixel_values.expand(len(prompts), -1, -1, -1)                     # [B, 3, S, S]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, pixel_values=px,
                max_new_tokens=answer_tokens, min_new_tokens=answer_tokens, do_sample=False,
                num_beams=1, use_cache=True, **self._generate_kwargs())
        return out[:, width:].tolist()

    def _generate_kwargs(self) -> dict:
        kw = {"eos_token_id": self.tokenizer.eos_id, "pad_token_id": self.tokenizer.pad_id}
        if self.cache_implementation:
            kw["cache_implementation"] = self.cache_implementation
        return kw

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision part alone (CLIP + projector): [1, N, D]."""
        with torch.inference_mode():
            out = self.model.model.get_image_features(pixel_values=pixel_values)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return feats[0] if isinstance(feats, (list, tuple)) else feats


# ---- inputs -------------------------------------------------------------------------------------
def camera_frames(n: int, seed: int = 0, height: int = 480, width: int = 640) -> list[np.ndarray]:
    """n distinct synthetic 640x480 RGB camera frames (smooth gradients plus noise, uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for _ in range(n):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        base = np.stack([a * xx / width, b * yy / height, c * (xx + yy) / (width + height)], -1)
        noise = rng.normal(0.0, 0.08, (height, width, 3))
        frames.append((np.clip(base + noise, 0, 1) * 255).astype(np.uint8))
    return frames


# ---- clocks and statistics ----------------------------------------------------------------------
def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean / min / max / n of a list of milliseconds (linear-interpolated
    percentiles)."""
    a = np.asarray([v for v in values if v == v], dtype=np.float64)        # drop NaN
    if a.size == 0:
        return {"n": 0}
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "n": int(a.size)}


# ---- the machine --------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.machine()


def environment(device: torch.device) -> dict[str, object]:
    """The machine and the versions, as they go into the results."""
    env: dict[str, object] = {
        "cpu": _cpu_name(), "cpu_cores_visible": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]}
    try:
        import bitsandbytes
        env["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        env["bitsandbytes"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    else:
        env["gpu"] = None
    return env


def write_json(path: str | Path, data: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2) + "\n")
    return p


def write_and_print(result: dict, out: str | Path | None, table: str) -> None:
    """A benchmark's end: its results as JSON to `out` (when given), its table to stdout."""
    if out:
        write_json(out, result)
    print(table)
