"""Latency of SpatialGeo against transformers' LLaVA-1.5, in one run, on the same prompts and
frames.

    python -m bench.bench_latency                                    # tiny config, CPU
    python -m bench.bench_latency --device cuda --size real          # 7B, random weights, bf16
    python -m bench.bench_latency --device cuda --size real --load-4bit

For each repetition a new camera frame is asked two questions. Measured, for both models:
- vision: the towers + adapters on a preprocessed frame (ours: CLIP + geometry tower; LLaVA: CLIP);
- first: a first question on a new frame, from the uint8 frame to the answer text (preprocessing,
  towers, prefill, a fixed `--answer-tokens` greedy answer, detokenisation); its time to first
  token and its decode rate;
- follow-up: a second question on the same frame. Ours reuses the frame's features and the KV cache
  of its image prefix; plain transformers LLaVA reuses only the preprocessed pixels and runs
  `generate()` again (it has no frame cache).
The models alternate within each repetition (and which goes first alternates too), so a change of
the machine's load hits both. Warm-up repetitions are not counted. On CUDA every clock reading
follows a `torch.cuda.synchronize()`. Peak memory is measured by `bench.bench_memory`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch

from bench.common import (
    QUESTIONS,
    SIZES,
    LlavaBaseline,
    Setup,
    build_llava,
    build_ours,
    camera_frames,
    environment,
    make_tokenizer,
    summary,
    synchronizer,
    write_and_print,
)
from spatialgeo_core.dtypes import DTYPE_NAMES
from spatialgeo_core.feature_cache import FrameFeatures
from spatialgeo_core.load_options import ATTENTION_CHOICES
from spatialgeo_core.processor import to_pil_rgb
from spatialgeo_core.types import GenerationOptions

log = logging.getLogger("bench.latency")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="default: float32 on CPU, bfloat16 (or float16) on CUDA")
    p.add_argument("--load-4bit", action="store_true", help="NF4 LLM for both models")
    p.add_argument("--image-size", type=int, default=None,
                   help="tiny only: image side (56 by default; 336 gives LLaVA's 576 patches)")
    p.add_argument("--answer-tokens", type=int, default=20)
    p.add_argument("--reps", type=int, default=30, help="measured repetitions")
    p.add_argument("--warmup", type=int, default=3, help="repetitions not counted")
    p.add_argument("--vision-reps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4,
                   help="questions answered together on one frame (0: skip that measurement)")
    p.add_argument("--static-cache", action="store_true", help="ours: decode in a StaticCache")
    p.add_argument("--compile-decode", action="store_true",
                   help="ours: torch.compile the decode step (CUDA graphs on a GPU); implies "
                        "--static-cache")
    p.add_argument("--baseline-cache", choices=("dynamic", "static"), default="dynamic",
                   help="LLaVA: generate()'s cache_implementation (static compiles on a GPU)")
    p.add_argument("--attn", choices=ATTENTION_CHOICES, default="sdpa",
                   help="the LLMs' attention (both models; flash_attention_2 needs flash-attn)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def measure_vision(pipe, llava: LlavaBaseline, frames, reps: int) -> dict[str, dict]:
    """Towers + adapters on a preprocessed frame already on the device, and the preprocessing."""
    sync = synchronizer(pipe.device)
    times: dict[str, list[float]] = {"ours": [], "llava": [], "preprocess": []}
    for i in range(reps + 2):
        img = to_pil_rgb(frames[i % len(frames)])
        t0 = time.perf_counter()
        px = pipe.processor.image(img)[None]                                 # [1, 3, S, S]
        t_pre = time.perf_counter() - t0
        px_ours = px.to(pipe.device)
        px_llava = px.to(llava.device, llava.dtype)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe.model.encode_images(px_ours)
        sync()
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        llava.encode(px_llava)
        sync()
        t_llava = time.perf_counter() - t0
        if i >= 2:                                                           # 2 warm-up runs
            times["ours"].append(t_ours * 1000)
            times["llava"].append(t_llava * 1000)
            times["preprocess"].append(t_pre * 1000)
    return {k: summary(v) for k, v in times.items()}


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = Setup(size=args.size, device=args.device, dtype=args.dtype, load_4bit=args.load_4bit,
                  image_size=args.image_size, answer_tokens=args.answer_tokens, seed=args.seed)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    tokenizer = make_tokenizer()
    t0 = time.perf_counter()
    pipe = build_ours(setup, tokenizer, attn_implementation=args.attn,
                      static_cache=args.static_cache, compile_decode=args.compile_decode)
    cache = None if args.baseline_cache == "dynamic" else args.baseline_cache
    llava = LlavaBaseline(build_llava(setup, pipe.cfg, attn_implementation=args.attn), pipe.cfg,
                          tokenizer, cache_implementation=cache)
    log.info("built both models in %.1f s", time.perf_counter() - t0)
    sync = synchronizer(pipe.device)
    n = args.answer_tokens
    opts = GenerationOptions(max_new_tokens=n, min_new_tokens=n)
    frames = camera_frames(8, seed=args.seed)

    rows: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in ("first", "first_ttft", "first_decode_tok_s", "followup",
                            "followup_ttft", "batch")} for m in ("ours", "llava")}
    batch_qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.batch)]
    lengths: dict[str, set[int]] = {"ours": set(), "llava": set()}

    def ours_rep(img, q1, q2) -> dict[str, float]:
        sync()
        t0 = time.perf_counter()
        frame = FrameFeatures.of(img)                  # kept for the follow-up
        a1 = pipe.answer(frame, q1, options=opts)
        sync()
        t1 = time.perf_counter()
        a2 = pipe.answer(frame, q2, options=opts)
        sync()
        t2 = time.perf_counter()
        lengths["ours"].update({a1.num_tokens, a2.num_tokens})
        r = {"first": (t1 - t0) * 1000, "first_ttft": a1.timings_ms["first_token"],
             "first_decode_tok_s": (a1.num_tokens - 1) / a1.timings_ms["decode"] * 1000,
             "followup": (t2 - t1) * 1000, "followup_ttft": a2.timings_ms["first_token"]}
        if batch_qs:
            answers = pipe.answer_batch(frame, batch_qs, options=opts)
            sync()
            r["batch"] = (time.perf_counter() - t2) * 1000
            lengths["ours"].update(a.num_tokens for a in answers)
        return r

    def llava_rep(img, q1, q2) -> dict[str, float]:
        sync()
        t0 = time.perf_counter()
        b1 = llava.answer(img, q1, n)
        sync()
        t1 = time.perf_counter()
        px = llava.pixels(img)                     # a server would keep these: not timed
        sync()
        t2 = time.perf_counter()
        b2 = llava.answer(img, q2, n, pixel_values=px)
        sync()
        t3 = time.perf_counter()
        lengths["llava"].update({len(b1.output_ids), len(b2.output_ids)})
        r = {"first": (t1 - t0) * 1000, "first_ttft": b1.timings_ms["first_token"],
             "first_decode_tok_s": (len(b1.output_ids) - 1) / b1.timings_ms["decode"] * 1000,
             "followup": (t3 - t2) * 1000, "followup_ttft": b2.timings_ms["first_token"]}
        if batch_qs:
            outs = llava.answer_batch(batch_qs, n, px)
            sync()
            r["batch"] = (time.perf_counter() - t3) * 1000
            lengths["llava"].update(len(o) for o in outs)
        return r

    for rep in range(args.warmup + args.reps):
        img = frames[rep % len(frames)]
        q1, q2 = QUESTIONS[rep % len(QUESTIONS)], QUESTIONS[(rep + 1) % len(QUESTIONS)]
        order = (("ours", ours_rep), ("llava", llava_rep))
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            r = fn(img, q1, q2)
            if rep >= args.warmup:
                for k, v in r.items():
                    rows[name][k].append(v)
    vision = measure_vision(pipe, llava, frames, args.vision_reps)

    stats = {m: {k: summary(v) for k, v in rows[m].items()} for m in rows}
    for m in stats:
        stats[m]["vision"] = vision[m]
    stats["preprocess"] = vision["preprocess"]
    p50 = {m: {k: v.get("p50", float("nan")) for k, v in stats[m].items()}
           for m in ("ours", "llava")}
    ratios = {k: p50["ours"][k] / p50["llava"][k]
              for k in ("vision", "first", "first_ttft", "followup", "followup_ttft", "batch")}
    ratios["followup_vs_llava_first"] = p50["ours"]["followup"] / p50["llava"]["first"]
    ratios["ours_first_over_followup"] = p50["ours"]["first"] / p50["ours"]["followup"]
    q = QUESTIONS[0]
    result = {
        "benchmark": "latency",
        "setup": {**setup.__dict__, "dtype": str(setup.torch_dtype).replace("torch.", ""),
                  "reps": args.reps, "warmup": args.warmup, "batch": args.batch,
                  "ours_static_cache": pipe.static_cache,
                  "ours_compile_decode": args.compile_decode,
                  "llava_cache": args.baseline_cache, "attn": args.attn,
                  "visual_tokens": {"ours": pipe.cfg.num_visual_tokens,
                                    "llava": llava.cfg.num_visual_tokens},
                  "prompt_tokens_q0": {"ours": len(pipe.processor.tokenize(
                      pipe.template.prompt(q))), "llava": len(llava.prompt_ids(q))},
                  "answer_lengths_seen": {m: sorted(v) for m, v in lengths.items()}},
        "environment": {**environment(setup.torch_device),
                        "load_average_at_start": load_at_start},
        "ms": stats,
        "ratios_p50": ratios,
    }
    return result


def table(result: dict) -> str:
    """A markdown table of p50 (p95) values with the ratio ours / LLaVA."""
    s, o, lv = result["setup"], result["ms"]["ours"], result["ms"]["llava"]

    def cell(d: dict) -> str:
        return f"{d['p50']:.1f} ({d['p95']:.1f})"                         # p50 (p95)

    lines = [
        f"| {s['size']} / {s['device']} / {s['dtype']}{' / 4-bit LLM' if s['load_4bit'] else ''}"
        " | SpatialGeo (ours) | LLaVA-1.5 (transformers) | ours / LLaVA (p50) |",
        "|---|---|---|---|",
        f"| visual tokens | {s['visual_tokens']['ours']} | {s['visual_tokens']['llava']} | |",
        f"| vision encoding, ms p50 (p95) | {cell(o['vision'])} | {cell(lv['vision'])} | "
        f"{result['ratios_p50']['vision']:.2f}x |",
        f"| first question: time to first token, ms | {cell(o['first_ttft'])} | "
        f"{cell(lv['first_ttft'])} | {result['ratios_p50']['first_ttft']:.2f}x |",
        f"| decode, tokens/s (p50) | {o['first_decode_tok_s']['p50']:.0f} | "
        f"{lv['first_decode_tok_s']['p50']:.0f} | |",
        f"| **first question, {s['answer_tokens']} tokens, end to end, ms** | "
        f"{cell(o['first'])} | {cell(lv['first'])} | **{result['ratios_p50']['first']:.2f}x** |",
        f"| **follow-up on the same frame, ms** | {cell(o['followup'])} | {cell(lv['followup'])}"
        f" | **{result['ratios_p50']['followup']:.2f}x** |",
        f"| follow-up: time to first token, ms | {cell(o['followup_ttft'])} | "
        f"{cell(lv['followup_ttft'])} | {result['ratios_p50']['followup_ttft']:.2f}x |",
    ]
    if s["batch"]:
        lines.append(f"| {s['batch']} questions on one frame in one batch, ms | "
                     f"{cell(o['batch'])} | {cell(lv['batch'])} | "
                     f"{result['ratios_p50']['batch']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    args = parse_args(argv)
    result = run(args)
    write_and_print(result, args.out, table(result))
    r = result["ratios_p50"]
    print(f"\nours follow-up / LLaVA first: {r['followup_vs_llava_first']:.2f}x; "
          f"ours first / ours follow-up: {r['ours_first_over_followup']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
