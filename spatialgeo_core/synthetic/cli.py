"""`spatialgeo make-world`: write a synthetic spatial world to disk.

Layout under --out:

    world.json                 the arguments, counts and configs used
    train/llava.json           LLaVA training records (+ per-record regions and qa_info)
    train/images/<id>.png
    train/scenes.jsonl         ground truth per training sample
    test/bench.json            SpatialRGPT-Bench items; image root: test/images
    test/images/<id>.png
    test/scenes.jsonl
    bag/test/                  with --bag: a rosbag2 of the test images, camera infos and
                               registered depth (--bag-depth)
    bag/questions.jsonl        with --bag: the test questions, stamped, for `spatialgeo eval-bag`
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from spatialgeo_core.errors import ConfigError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_parsers(subparsers) -> None:
    """Add `make-world` to the `spatialgeo` command's subparsers."""
    p = subparsers.add_parser(
        "make-world", help="render a synthetic spatial world: LLaVA train JSON, bench test "
                           "JSON, optionally a ROS 2 bag",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--train", type=_count, default=200, help="training images (default 200)")
    p.add_argument("--test", type=_count, default=50, help="test images (default 50)")
    p.add_argument("--size", type=_positive, default=128, help="image width and height")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qa-per-image", type=_positive, default=4,
                   help="questions per training image (one conversation)")
    p.add_argument("--test-qa-per-image", type=_positive, default=4,
                   help="bench questions per test image")
    p.add_argument("--min-objects", type=_positive, default=2)
    p.add_argument("--max-objects", type=_positive, default=5)
    p.add_argument("--units", choices=["mixed", "metric"], default="mixed",
                   help="lengths in training answers: m, cm, feet and inches (mixed) or m and cm "
                        "(metric); test answers are always mixed, as SpatialRGPT-Bench's")
    p.add_argument("--wording", choices=["varied", "plain", "facts", "facts_all"],
                   default="varied",
                   help="training answers: several phrasings (varied), one per category (plain, "
                        "lengths in metres), plain with comparisons that state each region's "
                        "fact before one canonical conclusion (facts), or also distances and "
                        "directions after both regions' positions (facts_all); test answers are "
                        "always varied")
    p.add_argument("--naming", choices=["shared", "per_question"], default="shared",
                   help="training records: one conversation per image naming all its regions "
                        "(shared), or one record per question drawing only the asked regions as "
                        "Region [0] (A) and Region [1] (B), as the test items (per_question)")
    p.add_argument("--no-masks", action="store_true",
                   help="LLaVA regions with boxes only (no mask_rle)")
    p.add_argument("--bag", action="store_true", help="also write the test images as a bag")
    p.add_argument("--bag-storage", choices=["sqlite3", "mcap"], default="sqlite3")
    p.add_argument("--bag-compressed", choices=["none", "png", "jpeg"], default="none",
                   help="publish CompressedImage instead of raw rgb8 Image")
    p.add_argument("--bag-regions", choices=["mask", "box", "alternate"], default="mask",
                   help="how questions.jsonl gives regions")
    p.add_argument("--bag-depth", choices=["16UC1", "32FC1", "none"], default="16UC1",
                   help="the registered depth images of the bag: 16UC1 (millimetres), 32FC1 "
                        "(metres) or none")
    p.add_argument("--camera-topic", default="/camera/image_raw")
    p.add_argument("--depth-topic", default="/camera/depth_registered/image_raw")
    p.add_argument("--info-topic", default="/camera/camera_info")
    p.set_defaults(func=cmd_make_world)


def _tap(samples: Iterable, metadata_path: Path, counter: dict) -> Iterator:
    """Yield samples, writing each one's ground truth line as it passes."""
    from spatialgeo_core.synthetic.writers import sample_metadata

    metadata_path.parent.mkdir(parents=True, exist_ok=True)
    with metadata_path.open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample_metadata(sample)) + "\n")
            counter["images"] += 1
            counter["questions"] += len(sample.qas)
            yield sample


def cmd_make_world(args) -> int:
    from spatialgeo_core.synthetic.scene import SceneConfig
    from spatialgeo_core.synthetic.world import WorldConfig, iter_samples
    from spatialgeo_core.synthetic.writers import write_bag, write_bench_json, write_llava_json

    out = Path(args.out)
    bag_path = out / "bag" / "test"
    if args.bag and bag_path.exists():
        raise ConfigError(f"--out: {bag_path} exists already; a bag is never overwritten")
    try:
        scene = SceneConfig(width=args.size, height=args.size, min_objects=args.min_objects,
                            max_objects=args.max_objects)
        train_cfg = WorldConfig(scene=scene, qa_per_image=args.qa_per_image,
                                units=args.units, wording=args.wording, naming=args.naming)
        test_cfg = WorldConfig(scene=scene, qa_per_image=args.test_qa_per_image)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    start = time.perf_counter()
    counts = {"train": {"images": 0, "questions": 0}, "test": {"images": 0, "questions": 0}}
    if args.train:
        write_llava_json(_tap(iter_samples(args.train, args.seed, "train", train_cfg),
                              out / "train" / "scenes.jsonl", counts["train"]),
                         out / "train" / "llava.json", out / "train" / "images",
                         with_masks=not args.no_masks, per_question=args.naming == "per_question")
    if args.test:
        write_bench_json(_tap(iter_samples(args.test, args.seed, "test", test_cfg),
                              out / "test" / "scenes.jsonl", counts["test"]),
                         out / "test" / "bench.json", out / "test" / "images")
    bag = None
    if args.bag and args.test:
        bag = write_bag(bag_path, iter_samples(args.test, args.seed, "test", test_cfg),
                        camera_topic=args.camera_topic, info_topic=args.info_topic,
                        storage=args.bag_storage, compressed=args.bag_compressed != "none",
                        compressed_format="jpeg" if args.bag_compressed == "jpeg" else "png",
                        region_format=args.bag_regions,
                        depth=None if args.bag_depth == "none" else args.bag_depth,
                        depth_topic=args.depth_topic)
    elapsed = time.perf_counter() - start

    summary = {
        "seed": args.seed, "size": args.size, "counts": counts,
        "train_config": asdict(train_cfg), "test_config": asdict(test_cfg),
        "bag": None if bag is None else {
            "path": str(bag.path.relative_to(out)), "storage": args.bag_storage,
            "image_topic": bag.image_topic, "info_topic": bag.info_topic,
            "depth_topic": bag.depth_topic, "depth_encoding": args.bag_depth,
            "questions": str(bag.questions_path.relative_to(out)),
            "frames": len(bag.stamps_ns)},
        "conventions": "spatialgeo_core/synthetic/questions.py (ground truth), camera.py "
                       "(frames)",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    n_images = counts["train"]["images"] + counts["test"]["images"]
    print(f"wrote {counts['train']['images']} training images "
          f"({counts['train']['questions']} questions) and {counts['test']['images']} test "
          f"images ({counts['test']['questions']} bench items) to {out} in {elapsed:.1f} s "
          f"({n_images / max(elapsed, 1e-9):.0f} images/s)")
    if bag is not None:
        print(f"bag: {bag.path} ({len(bag.stamps_ns)} frames on {bag.image_topic}), "
              f"questions: {bag.questions_path}")
    return 0
