"""Memory of SpatialGeo against transformers' LLaVA-1.5, each model in its own process.

    python -m bench.bench_memory                                       # tiny config, CPU, float32
    python -m bench.bench_memory --load-4bit --dtype bfloat16          # tiny, NF4 LLM
    python -m bench.bench_memory --device cuda --size real --load-4bit --dtype float16

What is measured:
- CUDA: `torch.cuda.memory_allocated` after loading (the weights), and `max_memory_allocated` (peak
  allocated; `max_memory_reserved` too, which adds the caching allocator's slack), reset before
  each phase;
- CPU: the process's resident set: VmRSS after loading and VmHWM (peak RSS) over each phase, the
  peak being reset through /proc/self/clear_refs. This includes the Python, torch and transformers
  runtime (`rss_runtime_mb`, measured before the model is built), so for the tiny model it is
  mostly runtime; `weights_mb` and `frame_cache_mb` are exact tensor bytes.

Phases: one camera (a frame encoded, a first question and a follow-up on it), then four cameras
(three more frames encoded and asked about while the first stays cached, then a follow-up on the
first). Ours keeps each frame's visual tokens and image-prefix KV cache (`FrameFeatures.nbytes`);
LLaVA keeps nothing between questions (transformers has no frame cache), so it only has the
one-question phase.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration

from bench.common import (
    QUESTIONS,
    SIZES,
    LlavaBaseline,
    Setup,
    build_llava,
    build_ours,
    camera_frames,
    environment,
    llava_config,
    make_tokenizer,
    model_config,
    write_and_print,
)
from spatialgeo_core.conversation import get_template
from spatialgeo_core.dtypes import DTYPE_NAMES
from spatialgeo_core.model import SpatialGeoForCausalLM
from spatialgeo_core.processor import Processor
from spatialgeo_core.types import GenerationOptions

MB = 2**20
RESULT_TAG = "BENCH_MEMORY_RESULT "


class MemoryMeter:
    """Current and peak memory of this process: CUDA allocator counters, or RSS on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.peak_resettable = self.cuda or _reset_rss_peak()

    def current(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return {"allocated_mb": torch.cuda.memory_allocated(self.device) / MB,
                    "reserved_mb": torch.cuda.memory_reserved(self.device) / MB}
        return {"rss_mb": _proc_status_kb("VmRSS") / 1024}

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()

    def peak(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return {"peak_allocated_mb": torch.cuda.max_memory_allocated(self.device) / MB,
                    "peak_reserved_mb": torch.cuda.max_memory_reserved(self.device) / MB}
        return {"peak_rss_mb": _proc_status_kb("VmHWM") / 1024}


def _proc_status_kb(field: str) -> float:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return float(m.group(1))


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tensor_mb(module: torch.nn.Module) -> float:
    """Bytes of a module's parameters and buffers, each storage once; a 4-bit weight counts its
    packed values and its quantisation statistics (absmax, nested absmax, offset, code)."""
    tensors = list(module.parameters()) + list(module.buffers())
    for p in module.parameters():
        qs = getattr(p, "quant_state", None)
        while qs is not None:
            tensors += [t for t in (qs.absmax, getattr(qs, "offset", None), qs.code)
                        if isinstance(t, torch.Tensor)]
            qs = getattr(qs, "state2", None)
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values()) / MB


# NF4 with double quantisation: packed nibbles, an 8-bit absmax per 64 weights, an fp32 absmax
# per 256 blocks
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)


def estimate(setup: Setup) -> dict:
    """Weights and frame-cache bytes computed from the parameter counts (models built on the meta
    device, nothing allocated): what a GPU measurement should find, less activations, the
    allocator's slack and the CUDA context."""
    tokenizer = make_tokenizer()
    cfg = model_config(setup, tokenizer.vocab_size)
    width = torch.empty(0, dtype=setup.torch_dtype).element_size()
    with torch.device("meta"):
        ours = SpatialGeoForCausalLM(cfg)
        llava = LlavaForConditionalGeneration._from_config(llava_config(cfg))

    def llm_mb(llm: torch.nn.Module, head: torch.nn.Module) -> float:
        quantised = sum(m.weight.numel() for m in llm.modules()
                        if isinstance(m, torch.nn.Linear)) if setup.load_4bit else 0
        dense = sum(p.numel() for p in llm.parameters()) - quantised
        return (quantised * NF4_BYTES_PER_WEIGHT + (dense + head.weight.numel()) * width) / MB

    def mb(*modules: torch.nn.Module) -> float:
        return sum(p.numel() for m in modules for p in m.parameters()) * width / MB

    ours_weights = {"llm": llm_mb(ours.llm.model, ours.llm.lm_head),
                    "clip_tower": mb(ours.clip_tower), "geometry_tower": mb(ours.geo_tower),
                    "adapters": mb(ours.clip_adapter, ours.geo_adapter)}
    lv = llava.model
    llava_weights = {"llm": llm_mb(lv.language_model, llava.lm_head),
                     "clip_tower": mb(lv.vision_tower), "adapters": mb(lv.multi_modal_projector)}
    ids = Processor(cfg, tokenizer).tokenize(get_template(cfg.chat_template).prompt(QUESTIONS[0]))
    llm = cfg.llm
    kv_per_token = (2 * llm.num_hidden_layers * llm.num_key_value_heads
                    * (llm.hidden_size // llm.num_attention_heads) * width)
    # a frame keeps its visual tokens and views of its first question's prompt KV (whole prompt)
    frame = (cfg.num_visual_tokens * llm.hidden_size * width + len(ids) * kv_per_token) / MB
    return {"ours_weights_mb": ours_weights, "llava_weights_mb": llava_weights,
            "ours_frame_cache_mb": frame, "prompt_tokens": len(ids),
            "kv_mb_per_token": kv_per_token / MB}


def run_child(which: str, setup: Setup) -> dict:
    """Load one model, measure the phases, return the numbers (run in its own process)."""
    dev = setup.torch_device
    meter = MemoryMeter(dev)
    runtime = meter.current()
    n = setup.answer_tokens
    opts = GenerationOptions(max_new_tokens=n, min_new_tokens=n)
    frames = camera_frames(4, seed=setup.seed)
    tokenizer = make_tokenizer()
    out: dict = {"model": which, "runtime": runtime, "peak_resettable": meter.peak_resettable}
    if which == "ours":
        pipe = build_ours(setup, tokenizer)
        out["weights_mb"] = tensor_mb(pipe.model)
        out["after_load"] = meter.current()
        meter.reset_peak()
        cams = [pipe.encode(frames[0])]
        pipe.answer(cams[0], QUESTIONS[0], options=opts)
        pipe.answer(cams[0], QUESTIONS[1], options=opts)
        out["one_camera"] = {**meter.current(), **meter.peak(),
                             "frame_cache_mb": cams[0].nbytes() / MB}
        meter.reset_peak()
        for i in range(1, 4):
            cams.append(pipe.encode(frames[i]))
            pipe.answer(cams[i], QUESTIONS[i], options=opts)
        pipe.answer(cams[0], QUESTIONS[4], options=opts)
        out["four_cameras"] = {**meter.current(), **meter.peak(),
                               "frame_cache_mb": sum(c.nbytes() for c in cams) / MB}
        out["visual_tokens"] = pipe.cfg.num_visual_tokens
    elif which == "llava":
        cfg = model_config(setup, tokenizer.vocab_size)
        llava = LlavaBaseline(build_llava(setup, cfg), cfg, tokenizer)
        out["weights_mb"] = tensor_mb(llava.model)
        out["after_load"] = meter.current()
        meter.reset_peak()
        llava.answer(frames[0], QUESTIONS[0], n)
        llava.answer(frames[0], QUESTIONS[1], n)
        out["one_camera"] = {**meter.current(), **meter.peak(), "frame_cache_mb": 0.0}
        out["visual_tokens"] = llava.cfg.num_visual_tokens
    else:
        raise ValueError(f"unknown model {which!r}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None)
    p.add_argument("--load-4bit", action="store_true", help="NF4 LLM for both models")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--answer-tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="ours,llava")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process, one model after the other (tests; CPU peaks are "
                        "then not isolated)")
    p.add_argument("--estimate", action="store_true",
                   help="only compute weights and frame-cache bytes from the parameter counts "
                        "(nothing is allocated; works for --size real on any machine)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _setup(args: argparse.Namespace) -> Setup:
    return Setup(size=args.size, device=args.device, dtype=args.dtype, load_4bit=args.load_4bit,
                 image_size=args.image_size, answer_tokens=args.answer_tokens, seed=args.seed)


def _spawn(which: str, argv: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_memory", *argv, "--child", which]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"memory child {which!r} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-4000:]}")


def table(result: dict) -> str:
    s, r = result["setup"], result["models"]
    cuda = s["device"].startswith("cuda")
    key = "peak_allocated_mb" if cuda else "peak_rss_mb"
    now = "allocated_mb" if cuda else "rss_mb"
    what = "peak allocated (CUDA)" if cuda else "peak RSS (whole process)"
    quant = " / 4-bit LLM" if s["load_4bit"] else ""
    lines = [f"| {s['size']} / {s['device']} / {s['dtype']}{quant} | SpatialGeo (ours) | "
             "LLaVA-1.5 (transformers) |", "|---|---|---|"]
    o, lv = r.get("ours"), r.get("llava")

    def g(d, *path, fmt="{:.0f}"):
        for p in path:
            if d is None or p not in d:
                return "-"
            d = d[p]
        return fmt.format(d)

    lines.append(f"| weights (parameters + buffers), MB | {g(o, 'weights_mb', fmt='{:.1f}')} | "
                 f"{g(lv, 'weights_mb', fmt='{:.1f}')} |")
    if not cuda:
        lines.append(f"| runtime before the model (Python, torch), RSS MB | "
                     f"{g(o, 'runtime', 'rss_mb')} | {g(lv, 'runtime', 'rss_mb')} |")
    lines.append(f"| after loading, {'allocated' if cuda else 'RSS'} MB | "
                 f"{g(o, 'after_load', now)} | "
                 f"{g(lv, 'after_load', now)} |")
    lines.append(f"| **one camera: {what}, MB** | {g(o, 'one_camera', key)} | "
                 f"{g(lv, 'one_camera', key)} |")
    lines.append(f"| **four cameras cached: {what}, MB** | {g(o, 'four_cameras', key)} | "
                 "(no frame cache) |")
    lines.append(f"| frame cache (visual tokens + image-prefix KV), MB per camera | "
                 f"{g(o, 'one_camera', 'frame_cache_mb', fmt='{:.2f}')} | 0 |")
    return "\n".join(lines)


def estimate_table(est: dict) -> str:
    s, o, lv = est["setup"], est["ours_weights_mb"], est["llava_weights_mb"]
    quant = " / 4-bit LLM" if s["load_4bit"] else ""
    frame = est["ours_frame_cache_mb"]
    lines = [f"| estimate: {s['size']} / {s['dtype']}{quant} | SpatialGeo (ours) | LLaVA-1.5 |",
             "|---|---|---|"]
    def f(x: float) -> str:
        return f"{x:.0f}" if x >= 100 else f"{x:.2f}"

    for part in ("llm", "clip_tower", "geometry_tower", "adapters"):
        theirs = f(lv[part]) if part in lv else "-"
        lines.append(f"| {part.replace('_', ' ')}, MB | {f(o[part])} | {theirs} |")
    w_o, w_l = sum(o.values()), sum(lv.values())
    lines += [f"| **weights, MB** | **{f(w_o)}** | **{f(w_l)}** |",
              f"| frame cache per camera ({est['prompt_tokens']}-token prompt), MB | "
              f"{f(frame)} | 0 |",
              f"| **weights + 1 camera cached, MB** | **{f(w_o + frame)}** | {f(w_l)} |",
              f"| **weights + 4 cameras cached, MB** | **{f(w_o + 4 * frame)}** | {f(w_l)} |"]
    return "\n".join(lines)


def measure(argv: list[str]) -> dict:
    """Measure each model (in its own process unless --in-process); the results as one dict."""
    args = parse_args(argv)
    setup = _setup(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    child_argv = [a for a in argv if a != "--in-process"]
    if "--out" in child_argv:
        i = child_argv.index("--out")
        del child_argv[i:i + 2]
    results = {m: run_child(m, setup) if args.in_process else _spawn(m, child_argv)
               for m in models}
    return {"benchmark": "memory",
            "setup": {**setup.__dict__, "dtype": str(setup.torch_dtype).replace("torch.", ""),
                      "isolated_processes": not args.in_process},
            "environment": environment(setup.torch_device), "models": results}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    setup = _setup(args)
    if args.child:
        print(RESULT_TAG + json.dumps(run_child(args.child, setup)), flush=True)
        return 0
    if args.estimate:
        dtype = str(setup.torch_dtype).replace("torch.", "")
        est = {"benchmark": "memory_estimate", "setup": {**setup.__dict__, "dtype": dtype},
               **estimate(setup)}
        write_and_print(est, args.out, estimate_table(est))
        return 0
    result = measure(raw)
    write_and_print(result, args.out, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
