"""`spatialgeo train | export | train-init | train-smoke`: the training commands of the CLI.

    spatialgeo train --config training/configs/stage2.yaml --set optim.max_steps=100
    torchrun --nproc_per_node=8 -m spatialgeo_core.cli train --config ...   (DDP; FSDP2 with
        --set run.distributed=fsdp)

`train` exits 0 when the run is finished, 75 (EX_TEMPFAIL) when it stopped early with a checkpoint
(run.max_steps_this_run, SIGTERM or SIGUSR1), 130 when Ctrl-C (SIGINT) stopped it, also with a
checkpoint, and says so: the same command resumes it. A second Ctrl-C stops at once. Under
torchrun, which reports any non-zero worker exit as a failure, a stopped run exits 0;
`<output_dir>/status.json` says which. A run whose loss diverges, or that finishes without a
supervised token, exits 2 with status "failed" and exports nothing.
"""
from __future__ import annotations

import logging
import os
import sys

EXIT_PAUSED = 75
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


def cmd_train(args) -> int:
    from spatialgeo_core.training.config import load_config
    from spatialgeo_core.training.engine import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    res = train(cfg)
    if res.output_dir and _is_rank0():
        loss = "n/a" if res.last_loss is None else f"{res.last_loss:.4f}"
        print(f"{res.status}: step {res.step}/{res.total_steps}, last loss {loss}, "
              f"checkpoint {res.checkpoint}")
        if res.skipped:
            print("skipped records: " + ", ".join(f"{k} {v}" for k, v in res.skipped.items()))
        for fmt, path in res.exports.items():
            print(f"export {fmt}: {path}")
    if res.status == "finished" or os.environ.get("TORCHELASTIC_RUN_ID"):
        return 0
    if res.stop_signal == "SIGINT":
        print(f"spatialgeo train: interrupted: checkpoint {res.checkpoint} written at step "
              f"{res.step}; the same command resumes from it", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_PAUSED


def _is_rank0() -> bool:
    from spatialgeo_core.training.distributed import rank_layout
    return rank_layout()[0] == 0


def cmd_export(args) -> int:
    from pathlib import Path

    import yaml

    from spatialgeo_core.training import checkpointing as ckpt
    from spatialgeo_core.training.config import from_dict
    from spatialgeo_core.training.export import export_run

    path = ckpt.resolve_resume(args.checkpoint, args.checkpoint)
    cfg = from_dict(yaml.safe_load((path / ckpt.CONFIG).read_text()))
    formats = args.format or cfg.run.export
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "export"
    written = export_run(formats, out, cfg.init, ckpt.read_trainable(path), cfg.stage,
                         args.dtype or cfg.run.export_dtype)
    for fmt, p in written.items():
        print(f"export {fmt}: {p}")
    return 0


def cmd_train_init(args) -> int:
    from spatialgeo_core.training.init_model import build_stage1_init

    out = build_stage1_init(args.llava, args.out, vit_path=args.vit, moge_path=args.moge,
                            clip_dir=args.clip, geo_layers=args.geo_layers,
                            geo_input_norm=args.geo_input_norm, seed=args.seed, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def cmd_train_smoke(args) -> int:
    from pathlib import Path

    from spatialgeo_core.tiny import build_tiny_checkpoint
    from spatialgeo_core.training.smoke_dataset import write_tiny_dataset

    root = Path(args.out)
    model = build_tiny_checkpoint(root / "model")
    data = write_tiny_dataset(root / "data")
    print(f"tiny model: {model}\ntiny dataset: {data}")
    return 0


def add_parsers(sub) -> None:
    from spatialgeo_core.dtypes import DTYPE_NAMES
    from spatialgeo_core.training.config import EXPORT_FORMATS

    t = sub.add_parser("train", help="train one stage (one process, torchrun or srun)",
                       description="Train one stage. Exit code 0: finished; 75: stopped early "
                                   "with a checkpoint (run the same command again to resume).")
    t.add_argument("--config", required=True, help="YAML file, e.g. training/configs/stage1.yaml")
    t.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="override config keys, e.g. optim.max_steps=100 "
                                             "data.json_path=/data/train.json")
    t.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a training checkpoint in the published layouts")
    e.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory (checkpoints/step-N) or a run directory (newest)")
    e.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, default=None,
                   help="default: the run's run.export")
    e.add_argument("--out", default=None, help="default: <output_dir>/export")
    e.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="dtype of the merged model")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("train-init", help="stage-1 init: llava-v1.5-7b + MoGe backbone + a new "
                                          "hierarchical adapter N(0, 0.02), in our format")
    i.add_argument("--llava", required=True, help="llava-v1.5-7b directory")
    g = i.add_mutually_exclusive_group(required=True)
    g.add_argument("--vit", default=None, help="vit_model.pt (DINOv2 of MoGe v1)")
    g.add_argument("--moge", default=None, help="MoGe v1 model.pt")
    i.add_argument("--clip", default=None, help="local clip-vit-large-patch14-336 directory")
    i.add_argument("--geo-layers", type=int, nargs="+", default=None)
    i.add_argument("--geo-input-norm", default="clip", choices=["clip", "imagenet"])
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--dtype", default="float16", choices=DTYPE_NAMES)
    i.add_argument("--out", required=True)
    i.set_defaults(func=cmd_train_init)

    d = sub.add_parser("train-smoke",
                       help="write a tiny model and a tiny dataset for a CPU smoke run")
    d.add_argument("--out", default="runs/tiny", help="default: runs/tiny")
    d.set_defaults(func=cmd_train_smoke)
