"""`spatialgeo eval-bag`, `eval-bench` and `eval-spatialscore` (added to the `spatialgeo` CLI).

    spatialgeo eval-bag --bag BAG --questions questions.jsonl --model-path DIR --out DIR
    spatialgeo eval-bench --annotations SpatialRGPT-Bench_v1.json --images DIR --model-path DIR \\
        --out DIR                       # or: torchrun --nproc_per_node=N -m spatialgeo_core.cli
    spatialgeo eval-spatialscore --data SpatialScore.json --root DIR --out DIR
    spatialgeo eval-spatialscore --score-only predictions.json --out DIR

Each writes results.jsonl, metrics.json and report.md (with PNG plots) into --out. Nothing heavy
is imported until a command runs, so `spatialgeo --help` works without the [eval] extra. The
live evaluation against a running node is the ROS layer's (`ros2 run spatialgeo_ros eval_live`,
spatialgeo_ros/live_eval.py); it shares `add_output_args` and the runner's records.
"""
from __future__ import annotations

import argparse

from spatialgeo_core.cli import add_model_args, load_options, load_pipeline


def add_output_args(p: argparse.ArgumentParser, max_new_tokens: int = 128,
                    max_new_tokens_help: str = "longest answer in tokens",
                    units: bool = True) -> None:
    """--out, --resume, --max-new-tokens, --default-unit (with `units`) and --no-progress."""
    p.add_argument("--out", required=True, help="output directory (results.jsonl, metrics.json, "
                                                "report.md)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run in --out: skip questions already answered, retry errors")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=max_new_tokens_help)
    if units:
        p.add_argument("--default-unit", default=None, metavar="UNIT",
                       help="unit of a bare number in an answer when scoring (m, cm, ft, ...); "
                            "default: such a number is unreadable")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")


def _model_id(args) -> str:
    return str(args.model_path) if args.model_path else "default"


def _model_dirs(args) -> list[str]:
    """The directories the model is loaded from (the default model's when none is given)."""
    return [load_options(args).path] + ([args.clip] if args.clip else [])


def cmd_eval_bag(args) -> int:
    from spatialgeo_core.eval.runner import evaluate_bag, summary_line
    from spatialgeo_core.types import GenerationOptions

    metrics = evaluate_bag(
        args.bag, args.questions, args.out, lambda: load_pipeline(args),
        model_id=_model_id(args), options=GenerationOptions(max_new_tokens=args.max_new_tokens),
        tolerance_ms=args.tolerance_ms, buffer_size=args.buffer_size,
        topic=args.topic, resume=args.resume,
        default_unit=args.default_unit, progress=args.progress, model_dirs=_model_dirs(args),
        depth_topic=args.depth_topic, depth_tolerance_ms=args.depth_tolerance_ms,
        rectified=args.rectified)
    print(f"eval-bag: {summary_line(metrics, args.out)}")
    return 0


def cmd_eval_bench(args) -> int:
    from spatialgeo_core.eval.runner import summary_line
    from spatialgeo_core.eval.sharding import shard_device
    from spatialgeo_core.eval.spatialrgpt.runner import evaluate_bench
    from spatialgeo_core.types import GenerationOptions

    args.device = shard_device(args.device)

    metrics = evaluate_bench(
        args.annotations, args.images, args.out, lambda: load_pipeline(args),
        model_id=_model_id(args), options=GenerationOptions(max_new_tokens=args.max_new_tokens),
        limit=args.limit, resume=args.resume, default_unit=args.default_unit,
        progress=args.progress, barrier_timeout_s=args.barrier_timeout_s)
    if metrics is not None:                      # rank 0 (or a single process) writes them
        print(f"eval-bench: {summary_line(metrics, args.out)}")
    return 0


def cmd_eval_spatialscore(args) -> int:
    from spatialgeo_core.eval.runner import EvalRunError
    from spatialgeo_core.eval.spatialscore.runner import (
        evaluate_spatialscore,
        score_only,
        summary_line,
    )

    if args.score_only:
        extra = [flag for flag, on in (("--data", args.data), ("--root", args.root),
                                       ("--resume", args.resume),
                                       ("--draw-boxes", args.draw_boxes)) if on]
        if extra:
            raise EvalRunError(f"--score-only scores saved answers: {', '.join(extra)} "
                               f"cannot go with it")
        metrics = score_only(args.score_only, args.out, subset=args.subset, hard=args.hard,
                             limit=args.limit)
    else:
        if not args.data or not args.root:
            raise EvalRunError("give --data and --root (or --score-only FILE)")
        from spatialgeo_core.eval.sharding import shard_device
        from spatialgeo_core.types import GenerationOptions

        args.device = shard_device(args.device)
        metrics = evaluate_spatialscore(
            args.data, args.root, args.out, lambda: load_pipeline(args), subset=args.subset,
            hard=args.hard, model_id=_model_id(args),
            options=GenerationOptions(max_new_tokens=args.max_new_tokens), limit=args.limit,
            resume=args.resume, draw_boxes=args.draw_boxes, progress=args.progress,
            barrier_timeout_s=args.barrier_timeout_s)
    if metrics is not None:                      # rank 0 (or a single process) writes them
        print(f"eval-spatialscore: {summary_line(metrics, args.out)}")
    return 0


def add_parsers(sub) -> None:
    b = sub.add_parser(
        "eval-bag", help="answer questions about the frames of a ROS 2 bag (no ROS needed)",
        description="Answer the questions of a questions.jsonl about the frames of a ROS 2 bag "
                    "(sqlite3 or mcap; Image or CompressedImage), picked by the node's frame "
                    "selection, and score them.")
    add_model_args(b)
    b.add_argument("--bag", required=True,
                   help="rosbag2 directory (sqlite3 or mcap), or a single .db3 / .mcap file")
    b.add_argument("--questions", required=True, help="questions.jsonl")
    b.add_argument("--topic", default=None,
                   help="image topic of questions without one (default: the bag's only image "
                        "topic)")
    b.add_argument("--tolerance-ms", type=float, default=50.0,
                   help="largest |frame stamp - question stamp| accepted, as the node's "
                        "frames.stamp_tolerance")
    b.add_argument("--buffer-size", type=int, default=30,
                   help="frames kept per topic, as the node's cameras.buffer_size")
    b.add_argument("--depth-topic", default=None,
                   help="depth topic registered to the images (default: the bag's only 16UC1 "
                        "or 32FC1 Image topic, if any): the regions' 3D positions are added")
    b.add_argument("--depth-tolerance-ms", type=float, default=20.0,
                   help="largest |depth stamp - frame stamp|, as the node's "
                        "frames.depth_tolerance")
    b.add_argument("--rectified", action="store_true",
                   help="the images are rectified: intrinsics from CameraInfo's P, as the "
                        "node's cameras.rectified")
    add_output_args(b)
    b.set_defaults(func=cmd_eval_bag)

    e = sub.add_parser(
        "eval-bench", help="SpatialRGPT-Bench: answer, score and report (torchrun to shard)",
        description="Answer SpatialRGPT-Bench (the official JSON: <mask> regions as COCO RLE "
                    "masks with boxes) with the regions drawn as set-of-marks, greedy decoding, "
                    "and score the answers by rules. Under torchrun each rank answers every "
                    "WORLD_SIZE-th item and rank 0 merges.")
    add_model_args(e)
    e.add_argument("--annotations", required=True, help="SpatialRGPT-Bench_v1.json")
    e.add_argument("--images", required=True,
                   help="root of the images (image_info.file_path is relative to it)")
    e.add_argument("--limit", type=int, default=None, help="only the first N items")
    e.add_argument("--barrier-timeout-s", type=float, default=6 * 3600.0,
                   help="how long rank 0 waits for the other ranks to finish")
    add_output_args(e)
    e.set_defaults(func=cmd_eval_bench)

    s = sub.add_parser(
        "eval-spatialscore",
        help="SpatialScore v0: answer, score by upstream's rules and strictly, report",
        description="Answer the single-image items of SpatialScore v0 (multi-image and video "
                    "items are counted as skipped) with upstream's per-source instruction and "
                    "greedy decoding, and score them by upstream's rules (mode 'upstream', "
                    "quirks included) and without its quirks (mode 'strict'). Answers are at "
                    "most --max-new-tokens long (default 1024, as upstream). --score-only "
                    "scores saved predictions instead. Under torchrun each rank answers every "
                    "WORLD_SIZE-th item and rank 0 merges.")
    add_model_args(s)
    s.add_argument("--data", default=None,
                   help="SpatialScore.json or SpatialScore-Hard.json (v0; the CVPR 2026 format "
                        "is refused)")
    s.add_argument("--root", default=None,
                   help="the folder holding dataset/ (img_paths are ./dataset/...)")
    s.add_argument("--subset", choices=["all", "vgbench", "hard"], default="all",
                   help="all items, VGBench's (source VGBench), or SpatialScore-Hard's")
    s.add_argument("--hard", default=None, metavar="FILE",
                   help="SpatialScore-Hard.json, whose indices --subset hard selects (default: "
                        "beside --data)")
    s.add_argument("--score-only", default=None, metavar="FILE",
                   help="score saved predictions: v0 items (JSON list or JSONL) each with the "
                        "model's raw output in 'pred_answer' (upstream's all_results.json "
                        "works too); nothing is answered")
    s.add_argument("--draw-boxes", action="store_true",
                   help="draw the boxes a question writes as (x1, y1, x2, y2) as set-of-marks "
                        "and name them Region [i] in it (default: the question as published)")
    s.add_argument("--limit", type=int, default=None,
                   help="only the first N items of the subset")
    s.add_argument("--barrier-timeout-s", type=float, default=6 * 3600.0,
                   help="how long rank 0 waits for the other ranks to finish")
    add_output_args(s, units=False)
    s.set_defaults(func=cmd_eval_spatialscore, max_new_tokens=1024)
