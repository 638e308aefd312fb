"""The GPU check: every real-size measurement in one command, written down as it goes.

    bench/gpu_check.sh "$OUT"                            # on a lent GPU (bench/README.md)
    python -m bench.gpu_check --out DIR                  # the same, without carried wheels
    python -m bench.gpu_check --tiny --out DIR           # every part at tiny size on the CPU (CI)

Real size means SpatialGeo-7B and transformers' LLaVA-1.5-7B (576 visual tokens, the same LLaMA)
with random weights on one CUDA device. The parts run one after the other, each in its own process
(an exception, an out-of-memory error, a crashed CUDA context or a hang ends that part only; each
part's peak memory is its own), and reuse the benchmark scripts beside this file:

    environment      the machine and versions; whether CUDA, bitsandbytes, flash-attn, peft work
    latency          bench_latency, fp16: first question (20 tokens), follow-up on the same frame,
                     4 questions in one batch; time to first token, decode tokens/s; p50/p95
    memory           bench_memory, fp16, each model in its own process (--tiny: one after the
                     other in the part's): allocated after loading, peak allocated with one
                     camera's frame cached and with four
    latency_4bit     latency with an NF4 LLM in both models (needs bitsandbytes)
    memory_4bit      memory with an NF4 LLM in both models (needs bitsandbytes)
    train_stage2     bench_train: 5 steps of training/configs/stage2.yaml at real size (LoRA r128,
                     gradient checkpointing, bf16): step time, peak memory (needs peft)
    compiled_decode  latency with ours `--compile-decode` against LLaVA's static-cache generate()
    flash_attn       latency with flash_attention_2 in both LLMs (needs CUDA and flash-attn)

A part whose needs are missing is recorded as skipped with the reason (and how to bring the
package); a part that fails records its error and the next part runs; a part is not started when
less than MIN_PART_S of `--budget-s` is left, and a running one is stopped when the budget is
spent. After every part `--out` holds gpu_check.json (every number, the settings, the machine),
gpu_check.md (the tables) and gpu_check.log (the parts' output), so a run cut short still returns
what it measured. `--tiny` runs every part on the CPU with the tiny config (CPU memory is the
process's peak RSS there: CUDA allocator statistics need CUDA).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON_NAME, MD_NAME, LOG_NAME = "gpu_check.json", "gpu_check.md", "gpu_check.log"
MIN_PART_S = 20.0                 # a part is not started with less of the budget left
COMPILE_WARMUP = 6                # warm-up repetitions with compiled decoding at real size
PACKAGES = ("bitsandbytes", "flash_attn", "peft")
HOW_TO_GET = {
    "bitsandbytes": "not on the lent GPUs: carry a wheel in .whl/ (bench/README.md, 'Packages "
                    "the GPU lacks')",
    "flash_attn": "not on the lent GPUs, and no wheel of it fits the 64 MiB carry limit "
                  "(bench/README.md, 'Packages the GPU lacks'); elsewhere: pip install "
                  '"spatialgeo[flash]"',
    "peft": 'pip install "spatialgeo[train]"',
}


@dataclass(frozen=True)
class Part:
    name: str
    what: str                        # one line: what the part measures
    needs: tuple[str, ...] = ()      # "cuda" and/or names in PACKAGES


PARTS = (
    Part("environment", "machine and versions; whether CUDA, bitsandbytes, flash-attn, peft work"),
    Part("latency", "ours vs LLaVA-1.5: first question, follow-up, 4 questions batched; TTFT, "
                    "decode tokens/s; p50/p95"),
    Part("memory", "allocated after loading; peak with one and with four cameras' frames cached"),
    Part("latency_4bit", "latency with an NF4 LLM (bitsandbytes) in both models",
         ("bitsandbytes",)),
    Part("memory_4bit", "memory with an NF4 LLM (bitsandbytes) in both models", ("bitsandbytes",)),
    Part("train_stage2", "stage-2 steps (LoRA r128, gradient checkpointing, bf16): step time, "
                         "peak memory", ("peft",)),
    Part("compiled_decode", "ours --compile-decode vs LLaVA generate() with the static cache"),
    Part("flash_attn", "latency with flash_attention_2 in both LLMs", ("cuda", "flash_attn")),
)
PART_NAMES = tuple(p.name for p in PARTS)


# ---- options ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where the results are written")
    p.add_argument("--tiny", action="store_true",
                   help="every part at tiny size on the CPU (what CI runs)")
    p.add_argument("--parts", default=",".join(PART_NAMES),
                   help=f"comma-separated, run in this order: {','.join(PART_NAMES)} "
                        "(environment always runs)")
    p.add_argument("--reps", type=int, default=None,
                   help="measured repetitions of each latency part (default 20; --tiny 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="repetitions not counted (default 3; --tiny 1)")
    p.add_argument("--compile-reps", type=int, default=None,
                   help="measured repetitions with --compile-decode (default 10; --tiny 3)")
    p.add_argument("--answer-tokens", type=int, default=None,
                   help="tokens of every answer (default 20; --tiny 5)")
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=None,
                   help="samples per training step (default 16; --tiny 2)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for all parts together (default 450; --tiny 600)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in every part")
    p.add_argument("--part", choices=PART_NAMES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tiny = args.tiny
    defaults = {"reps": 3 if tiny else 20, "warmup": 1 if tiny else 3,
                "answer_tokens": 5 if tiny else 20,
                "compile_reps": 3 if tiny else 10, "train_batch": 2 if tiny else 16,
                "budget_s": 600.0 if tiny else 450.0}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.size, args.device = ("tiny", "cpu") if tiny else ("real", "cuda")
    # fp16 on the GPU; fp32 for the tiny CPU run, bf16 where bitsandbytes computes on a CPU
    args.dtype, args.dtype_4bit = ("float32", "bfloat16") if tiny else ("float16", "float16")
    unknown = [n for n in _names(args.parts) if n not in PART_NAMES]
    if unknown:
        p.error(f"--parts: unknown {unknown}; known: {list(PART_NAMES)}")
    return args


def _names(parts: str) -> list[str]:
    return [n.strip() for n in parts.split(",") if n.strip()]


def child_argv(args: argparse.Namespace) -> list[str]:
    """The resolved options, as a part's process is given them."""
    argv = ["--out", str(args.out), "--reps", str(args.reps), "--warmup", str(args.warmup),
            "--answer-tokens", str(args.answer_tokens),
            "--compile-reps", str(args.compile_reps), "--train-steps", str(args.train_steps),
            "--train-batch", str(args.train_batch), "--budget-s", str(args.budget_s)]
    if args.tiny:
        argv.append("--tiny")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


# ---- the parts (each runs in its own process) ---------------------------------------------------
def _latency_argv(args: argparse.Namespace, *extra: str, four_bit: bool = False,
                  compiled: bool = False) -> list[str]:
    """bench_latency's options: 4 questions batched, except with compiled
    decoding (which decodes `answer`; a batch would only add LLaVA's recompilation for batch 4)."""
    reps = args.compile_reps if compiled else args.reps
    # at real size the 6 questions' prompts need one or two static-cache capacities (a multiple of
    # 256 tokens): asking each once in the warm-up keeps a recompilation out of the measured ones
    warmup = max(args.warmup, COMPILE_WARMUP) if compiled and not args.tiny else args.warmup
    argv = ["--size", args.size, "--device", args.device,
            "--dtype", args.dtype_4bit if four_bit else args.dtype,
            "--answer-tokens", str(args.answer_tokens), "--reps", str(reps),
            "--warmup", str(warmup), "--vision-reps", str(reps),
            "--batch", "0" if compiled else "4", *extra]
    if four_bit:
        argv.append("--load-4bit")
    if compiled:
        argv += ["--compile-decode", "--baseline-cache", "static"]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def _entry(result: dict, numbers: dict[str, float], summary: str, table: str = "") -> dict:
    """What a part that ran reports: its benchmark's whole result, the key numbers (flat, what
    `problems` checks), a one-line summary and its markdown table."""
    return {"result": result, "numbers": numbers, "summary": summary, "table": table}


def _latency(argv: list[str]) -> dict:
    from bench import bench_latency
    result = bench_latency.run(bench_latency.parse_args(argv))
    ms, r = result["ms"], result["ratios_p50"]
    numbers: dict[str, float] = {}
    for m in ("ours", "llava"):
        for key, stat in (("first", "ms"), ("followup", "ms"), ("first_ttft", "ms"),
                          ("followup_ttft", "ms"), ("batch", "ms"), ("vision", "ms"),
                          ("first_decode_tok_s", "")):
            if ms[m][key].get("n"):
                unit = f"_{stat}" if stat else ""
                numbers[f"{m}_{key}{unit}_p50"] = ms[m][key]["p50"]
                numbers[f"{m}_{key}{unit}_p95"] = ms[m][key]["p95"]
    summary = (f"first question p50 {numbers['ours_first_ms_p50']:.0f} ms ours vs "
               f"{numbers['llava_first_ms_p50']:.0f} ms LLaVA ({r['first']:.2f}x); follow-up "
               f"{numbers['ours_followup_ms_p50']:.0f} vs {numbers['llava_followup_ms_p50']:.0f} "
               f"ms ({r['followup']:.2f}x); decode "
               f"{numbers['ours_first_decode_tok_s_p50']:.0f} vs "
               f"{numbers['llava_first_decode_tok_s_p50']:.0f} tokens/s")
    return _entry(result, numbers, summary, bench_latency.table(result))


def _memory(args: argparse.Namespace, four_bit: bool) -> dict:
    from bench import bench_memory
    argv = ["--size", args.size, "--device", args.device,
            "--dtype", args.dtype_4bit if four_bit else args.dtype,
            "--answer-tokens", str(args.answer_tokens)]
    if four_bit:
        argv.append("--load-4bit")
    if args.tiny:              # the part's process measures both (CPU peaks are then not isolated)
        argv.append("--in-process")
    result = bench_memory.measure(argv)
    cuda = args.device.startswith("cuda")
    peak, now = ("peak_allocated_mb", "allocated_mb") if cuda else ("peak_rss_mb", "rss_mb")
    o, lv = result["models"]["ours"], result["models"]["llava"]
    numbers = {"ours_weights_mb": o["weights_mb"], "llava_weights_mb": lv["weights_mb"],
               f"ours_after_load_{now}": o["after_load"][now],
               f"llava_after_load_{now}": lv["after_load"][now],
               f"ours_one_camera_{peak}": o["one_camera"][peak],
               f"ours_four_cameras_{peak}": o["four_cameras"][peak],
               f"llava_one_camera_{peak}": lv["one_camera"][peak],
               "ours_frame_cache_mb_per_camera": o["one_camera"]["frame_cache_mb"]}
    what = "peak allocated" if cuda else "peak RSS (no CUDA: the process's resident memory)"
    summary = (f"{what}: ours {o['one_camera'][peak]:.0f} MB with one camera, "
               f"{o['four_cameras'][peak]:.0f} MB with four cached; LLaVA "
               f"{lv['one_camera'][peak]:.0f} MB")
    return _entry(result, numbers, summary, bench_memory.table(result))


def _train(args: argparse.Namespace) -> dict:
    from bench import bench_train
    result = bench_train.run(bench_train.parse_args(
        ["--size", args.size, "--device", args.device, "--steps", str(args.train_steps),
         "--batch", str(args.train_batch)]))
    steps, later, peak = result["steps"], result["step_s_after_first"], result["peak_memory"]
    numbers = {"first_step_s": steps[0]["step_time_s"], f"{peak['metric']}": peak["mb"],
               "write_start_model_s": result["write_start_model_s"],
               "train_call_to_first_step_end_s": result["train_call_to_first_step_end_s"]}
    if later.get("n"):
        numbers["later_steps_s_p50"] = later["p50"]
        numbers["later_steps_s_max"] = later["max"]
    what = "peak allocated" if peak["metric"] == "peak_allocated_mb" else "peak RSS"
    summary = (f"{len(steps)} steps of {result['setup']['batch_per_step']} samples: first "
               f"{numbers['first_step_s']:.2f} s, then p50 {later.get('p50', math.nan):.2f} s; "
               f"{what} {peak['mb']:.0f} MB")
    return _entry(result, numbers, summary, bench_train.table(result))


def _environment(args: argparse.Namespace) -> dict:
    import importlib

    import torch

    from bench.common import environment
    cuda = torch.cuda.is_available()
    usable: dict[str, dict] = {"cuda": {"ok": cuda}}
    if not cuda:
        usable["cuda"]["error"] = "torch.cuda.is_available() is False"
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            usable[name] = {"ok": True, "version": getattr(mod, "__version__", None),
                            "from": str(Path(mod.__file__).parent) if mod.__file__ else None}
        except (ImportError, OSError, RuntimeError) as e:   # absent, or built for another stack
            usable[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    env = environment(torch.device("cuda" if cuda else "cpu"))
    numbers = {"cpu_cores_visible": float(env["cpu_cores_visible"])}
    if cuda:
        numbers["gpu_memory_gib"] = float(env["gpu_memory_gib"])
    summary = (f"{env.get('gpu') or env['cpu']}; torch {env['torch']}, transformers "
               f"{env['transformers']}; " + ", ".join(
                   f"{k} {'ok' if v['ok'] else 'missing'}" for k, v in usable.items()))
    return _entry({"environment": env, "usable": usable}, numbers, summary)


PART_FUNCTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "environment": _environment,
    "latency": lambda a: _latency(_latency_argv(a)),
    "memory": lambda a: _memory(a, four_bit=False),
    "latency_4bit": lambda a: _latency(_latency_argv(a, four_bit=True)),
    "memory_4bit": lambda a: _memory(a, four_bit=True),
    "train_stage2": _train,
    "compiled_decode": lambda a: _latency(_latency_argv(a, compiled=True)),
    "flash_attn": lambda a: _latency(_latency_argv(a, "--attn", "flash_attention_2")),
}


def run_part(args: argparse.Namespace) -> int:
    """In a part's own process: measure, and write the entry (or the error) to --result."""
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        entry = {"status": "ok", **PART_FUNCTIONS[args.part](args)}
    except Exception as e:       # recorded as this part's result; the next part still runs
        traceback.print_exc()
        entry = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
                 "traceback": traceback.format_exc()[-6000:]}
    args.result.write_text(json.dumps(entry, indent=1, default=_jsonable) + "\n")
    return 0


def _jsonable(x: object) -> object:
    return str(x)


# ---- the orchestration (the parent process imports neither torch nor transformers) ------------
Runner = Callable[[Part, argparse.Namespace, float], dict]


def run_in_process(part: Part, args: argparse.Namespace, timeout_s: float) -> dict:
    """Run one part as `python -m bench.gpu_check --part NAME`, its output appended to the log;
    stop its whole process group when `timeout_s` is spent."""
    with tempfile.TemporaryDirectory(prefix="spatialgeo-gpu-check-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.gpu_check", "--part", part.name,
               "--result", str(result), *child_argv(args)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PYTHONUNBUFFERED": "1"}
        with open(args.out / LOG_NAME, "a") as log:
            log.write(f"\n===== {part.name} ({time.strftime('%H:%M:%S')}) =====\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                return {"status": "error",
                        "error": f"stopped after {timeout_s:.0f} s: the --budget-s was spent"}
        if result.is_file():
            return json.loads(result.read_text())
        return {"status": "error",
                "error": f"the part's process ended with exit code {rc} and no result "
                         f"(killed for memory? a crash?); its output is in {LOG_NAME}"}


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the part's process group (it and the processes it started)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def skip_reason(part: Part, args: argparse.Namespace, usable: dict | None) -> str | None:
    """Why `part` cannot run here, from the environment part's findings (None: it runs)."""
    if part.name == "environment" or usable is None:
        return None
    needs = part.needs if args.tiny else ("cuda", *part.needs)
    for need in dict.fromkeys(needs):
        found = usable.get(need, {"ok": True})
        if found["ok"]:
            continue
        if need == "cuda":
            return ("no CUDA device (torch.cuda.is_available() is False)" if args.tiny else
                    "no CUDA device: real size needs a GPU (use --tiny on a CPU)")
        return f"{need} does not import ({found['error']}); {HOW_TO_GET[need]}"
    return None


def run_check(args: argparse.Namespace, runner: Runner = run_in_process) -> dict:
    """Every selected part in order; the report is rewritten after each."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / LOG_NAME).write_text("")
    # the environment part always runs: the others are skipped on what it finds
    selected = [p for p in PARTS if p.name in _names(args.parts) or p.name == "environment"]
    report = {"check": "gpu_check", "size": args.size, "device": args.device,
              "settings": {k: getattr(args, k) for k in (
                  "dtype", "dtype_4bit", "answer_tokens", "reps", "warmup", "compile_reps",
                  "train_steps",
                  "train_batch", "budget_s", "threads")},
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
              "parts": {p.name: {"what": p.what, "status": "pending"} for p in selected}}
    write_report(args.out, report)
    start = time.monotonic()
    usable = None
    for part in selected:
        left = args.budget_s - (time.monotonic() - start)
        reason = skip_reason(part, args, usable)
        if reason is None and left < MIN_PART_S:
            reason = f"time: {max(left, 0):.0f} s of --budget-s {args.budget_s:.0f} were left"
        t0 = time.monotonic()
        if reason:
            entry = {"status": "skipped", "reason": reason}
        else:
            try:
                entry = runner(part, args, left)
            except (OSError, subprocess.SubprocessError, ValueError) as e:  # could not run it
                entry = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            entry["wall_s"] = round(time.monotonic() - t0, 1)
        report["parts"][part.name] = {"what": part.what, **entry}
        if part.name == "environment" and entry["status"] == "ok":
            usable = entry["result"]["usable"]
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        write_report(args.out, report)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    report["problems"] = problems(report, [p.name for p in selected])
    write_report(args.out, report)
    return report


# ---- results ------------------------------------------------------------------------------------
def problems(report: dict, expected: list[str]) -> list[str]:
    """What keeps the report from being complete: a part missing, pending or failed, a part that
    ran with no numbers or a non-finite one, a skipped part with no reason."""
    out = []
    parts = report.get("parts", {})
    for name in expected:
        e = parts.get(name)
        if e is None:
            out.append(f"{name}: missing")
        elif e.get("status") == "skipped":
            if not str(e.get("reason", "")).strip():
                out.append(f"{name}: skipped without a reason")
        elif e.get("status") == "ok":
            nums = e.get("numbers") or {}
            if not nums:
                out.append(f"{name}: no numbers")
            bad = [k for k, v in nums.items() if isinstance(v, bool)
                   or not isinstance(v, int | float) or not math.isfinite(v)]
            if bad:
                out.append(f"{name}: not a finite number: {bad}")
        else:
            error = f": {e['error']}" if e.get("error") else ""
            out.append(f"{name}: {e.get('status')}{error}"[:300])
    return out


def markdown(report: dict) -> str:
    env_part = report["parts"].get("environment", {})
    env = env_part.get("result", {}).get("environment", {})
    usable = env_part.get("result", {}).get("usable", {})
    size = "real size (SpatialGeo-7B / LLaVA-1.5-7B, random weights)" if report["size"] == "real" \
        else "tiny config on the CPU (CI size: the numbers only show that every part runs)"
    lines = [f"# GPU check: {size}", ""]
    if env:
        gpu = f"{env['gpu']} ({env['gpu_memory_gib']} GiB), CUDA {env['cuda']}, driver " \
              f"{env['driver']}; " if env.get("gpu") else "no GPU; "
        pkgs = ", ".join(f"{k} {v.get('version') or ''}".strip() if v["ok"] else f"{k} missing"
                         for k, v in usable.items() if k != "cuda")
        lines += [f"{gpu}CPU {env['cpu']} ({env['cpu_cores_visible']} cores visible); Python "
                  f"{env['python']}, torch {env['torch']}, transformers {env['transformers']}; "
                  f"{pkgs}.", ""]
    s = report["settings"]
    lines += [f"Started {report['started']}; {s['answer_tokens']}-token answers; {s['reps']} "
              f"measured repetitions after {s['warmup']} warm-up ({s['compile_reps']} with "
              f"--compile-decode); dtype {s['dtype']} (4-bit "
              f"parts: NF4 LLM, {s['dtype_4bit']} compute); budget {s['budget_s']:.0f} s"
              + (f"; {report['elapsed_s']} s so far" if "elapsed_s" in report else "") + ".",
              "", "| part | status | what | result | wall s |", "|---|---|---|---|---|"]
    for name, e in report["parts"].items():
        status = e["status"]
        text = {"ok": e.get("summary", ""), "skipped": e.get("reason", ""),
                "error": e.get("error", "")}.get(status, "")
        text = " ".join(str(text).split()).replace("|", "/")
        lines.append(f"| {name} | {status} | {e['what']} | {text} | {e.get('wall_s', '')} |")
    for name, e in report["parts"].items():
        if e.get("table"):
            lines += ["", f"## {name}", "", e["table"]]
    if report.get("problems"):
        lines += ["", "## Not complete", ""] + [f"- {p}" for p in report["problems"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    """gpu_check.json and gpu_check.md, each replaced in one step."""
    for name, text in ((JSON_NAME, json.dumps(report, indent=1, default=_jsonable) + "\n"),
                       (MD_NAME, markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        return run_part(args)
    report = run_check(args)
    print(markdown(report))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
