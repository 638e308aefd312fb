"""Stage-2 training steps at a given size: step time and peak memory, with random weights.

    python -m bench.bench_train                                      # tiny config, CPU
    python -m bench.bench_train --size real --device cuda            # 7B, one GPU

Runs the training entry point itself (`spatialgeo_core.training.engine.train`) on the stage-2
recipe, `training/configs/stage2.yaml`: LoRA r128 / alpha 256 on the LLM's seven projections plus
both adapters, gradient checkpointing, random feature dropping 0.3, AdamW, bf16 autocast (with the
frozen weights in bf16 and the trained ones in fp32, as the engine keeps them). The model it starts
from is SpatialGeo at `--size` with random weights, written to a scratch directory in our format
(step times do not depend on the values); the data are `--batch x --steps` synthetic image
questions (`write_tiny_dataset`: 64x48 drawings, padded and resized to the tower's 336 px at real
size, so every sample holds the full 1152 visual tokens). One step is one micro-batch of `--batch`
samples (no accumulation; upstream ran 16 per GPU), read in the training process
(`data.num_workers=0`).

Measured: each optimizer step's wall time as the engine reports it (`step_time_s`: batch, forward,
backward, clipping, AdamW), peak memory over the training (CUDA: `max_memory_allocated`, reset
after the starting model is written; CPU: the process's peak RSS), the time to write the starting
model and the time from calling `train` to the end of its first step (reading the model, LoRA,
moving it to the device). The engine's final checkpoint is written after the last step and is not
in any step time.
"""
from __future__ import annotations

import argparse
import gc
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    SIZES,
    Setup,
    environment,
    make_tokenizer,
    random_model,
    release_cached,
    summary,
    write_and_print,
)
from spatialgeo_core.config import SpatialGeoConfig

ROOT = Path(__file__).resolve().parents[1]
STAGE2 = ROOT / "training" / "configs" / "stage2.yaml"
MB = 2**20

log = logging.getLogger("bench.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=None,
                   help="samples per step (default: 16 at real size, as upstream per GPU; 2 tiny)")
    p.add_argument("--config", type=Path, default=STAGE2, help="the stage's training config")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch directory for the starting model and the run (default: a "
                        "temporary one, removed afterwards)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = 16 if args.size == "real" else 2
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be positive")
    return args


def write_start_model(setup: Setup, directory: Path) -> SpatialGeoConfig:
    """SpatialGeo at `setup.size` with random weights, saved in our format (with the tiny
    tokenizer) into `directory`; returns its config."""
    from spatialgeo_core.checkpoint.ours import save_ours

    tok_dir = directory.parent / f"{directory.name}.tokenizer"
    tokenizer = make_tokenizer(tok_dir)
    model = random_model(setup, tokenizer.vocab_size)
    cfg = model.cfg
    save_ours(directory, cfg, model.state_dict(), tokenizer_dir=tok_dir)
    del model
    gc.collect()
    release_cached(setup.torch_device)
    return cfg


def run(args: argparse.Namespace) -> dict:
    from bench.bench_memory import MemoryMeter
    from spatialgeo_core.training.config import load_config
    from spatialgeo_core.training.engine import train
    from spatialgeo_core.training.smoke_dataset import TRAIN_JSON, write_tiny_dataset

    setup = Setup(size=args.size, device=args.device, dtype="bfloat16", seed=args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="spatialgeo-bench-train-"))
    try:
        t0 = time.perf_counter()
        init = work / "init"
        model_cfg = write_start_model(setup, init)
        write_s = time.perf_counter() - t0
        data = write_tiny_dataset(work / "data", num_image=args.batch * args.steps, num_text=0,
                                  bad_records=False)
        run_device = "cuda" if setup.torch_device.type == "cuda" else "cpu"
        cfg = load_config(args.config, [
            f"init={init}", f"output_dir={work / 'run'}", f"seed={args.seed}",
            f"data.json_path={data / TRAIN_JSON}", f"data.image_folder={data}",
            "data.num_workers=0", f"optim.max_steps={args.steps}",
            f"optim.global_batch_size={args.batch}", f"optim.per_device_batch_size={args.batch}",
            f"run.device={run_device}", "run.precision=bf16", "run.distributed=auto",
            "run.save_every=0", "run.resume=never", "run.export=[]", "run.tensorboard=false",
            "run.progress_bar=false"])
        meter = MemoryMeter(setup.torch_device)
        meter.reset_peak()
        rows: list[dict] = []
        t_train = time.perf_counter()

        def on_step(step: int, row: dict) -> None:
            rows.append({**row, **meter.peak(), "since_train_s": time.perf_counter() - t_train})

        res = train(cfg, on_step=on_step)
        total_s = time.perf_counter() - t_train
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    peak_key = "peak_allocated_mb" if meter.cuda else "peak_rss_mb"
    step_s = [r["step_time_s"] for r in rows]
    lora = cfg.stage.lora
    return {
        "benchmark": "train",
        "setup": {"size": args.size, "device": args.device, "config": str(args.config),
                  "stage": cfg.stage.name, "steps": args.steps, "batch_per_step": args.batch,
                  "lora_r": lora.r if lora else None, "lora_alpha": lora.alpha if lora else None,
                  "gradient_checkpointing": cfg.run.gradient_checkpointing,
                  "precision": "bf16 autocast", "feature_drop_prob": cfg.stage.feature_drop_prob,
                  "visual_tokens": model_cfg.num_visual_tokens},
        "environment": environment(setup.torch_device),
        "status": res.status,
        "steps": rows,
        "step_s": summary(step_s),
        "step_s_after_first": summary(step_s[1:]),
        "peak_memory": {"metric": peak_key,
                        "mb": max((r[peak_key] for r in rows), default=float("nan"))},
        "write_start_model_s": write_s,
        "train_call_to_first_step_end_s": rows[0]["since_train_s"] if rows else float("nan"),
        "train_call_total_s": total_s,
    }


def table(result: dict) -> str:
    s, first = result["setup"], result["steps"][0] if result["steps"] else {}
    later, peak = result["step_s_after_first"], result["peak_memory"]
    what = "peak allocated (CUDA)" if peak["metric"] == "peak_allocated_mb" else "peak RSS"

    def fmt(x: float | None, spec: str = ".2f") -> str:
        return "-" if x is None or x != x else format(x, spec)

    b = s["batch_per_step"]
    rate = b / later["p50"] if later.get("n") else float("nan")
    return "\n".join([
        f"| {s['size']} / {s['device']} / {s['stage']}: LoRA r{s['lora_r']}, gradient "
        f"checkpointing, bf16 | |", "|---|---|",
        f"| samples per step ({s['visual_tokens']} visual tokens each) | {b} |",
        f"| first step, s | {fmt(first.get('step_time_s'))} |",
        f"| steps 2-{s['steps']}, s p50 (max) | {fmt(later.get('p50'))} "
        f"({fmt(later.get('max'))}) |",
        f"| samples/s (steps after the first) | {fmt(rate, '.1f')} |",
        f"| **{what} over the training, MB** | **{fmt(peak['mb'], '.0f')}** |",
        f"| writing the random starting model, s | {fmt(result['write_start_model_s'], '.1f')} |",
        f"| `train()` call to the end of step 1, s | "
        f"{fmt(result['train_call_to_first_step_end_s'], '.1f')} |"])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    result = run(args)
    write_and_print(result, args.out, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
