"""`spatialgeo` command line: ask, convert, random-model (and the demo, training and evaluation
commands).

Errors of the library (bad image, bad checkpoint, bad region) and of the file system end the
command with exit code 2 and one line on stderr, never a traceback; Ctrl-C ends it with exit code
130 and a line saying what was kept. Building the parsers imports neither torch nor transformers
(each command imports what it needs when it runs), so `--help` and option errors answer at once.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from spatialgeo_core.ask_depth import add_depth_args
from spatialgeo_core.dtypes import DTYPE_NAMES
from spatialgeo_core.errors import InterruptedRun, InvalidRequestError, SpatialGeoError
from spatialgeo_core.load_options import ATTENTION_CHOICES, LoadOptions
from spatialgeo_core.optional import available

# modules with `add_parsers(subparsers)`: `spatialgeo train`, `spatialgeo eval-bag`, ...
_COMMAND_MODULES = ("spatialgeo_core.training.cli", "spatialgeo_core.eval.cli",
                    "spatialgeo_core.synthetic.cli", "spatialgeo_core.demo.cli")

log = logging.getLogger("spatialgeo")


def _parse_box(text: str):
    from spatialgeo_core.types import Region
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a region is x1,y1,x2,y2 in pixels, got {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"a region is x1,y1,x2,y2 in pixels, got {text!r}")
    return Region(box=tuple(vals))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, got {text!r}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options that become a LoadOptions (`load_options`)."""
    p.add_argument("--model-path", default=None,
                   help="model directory (our format or a merged SpatialGeo); default: the "
                        "embedded default model")
    p.add_argument("--clip", default=None, help="local CLIP directory, for a merged model without "
                                                "CLIP tensors")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES)
    q = p.add_mutually_exclusive_group()
    q.add_argument("--load-4bit", dest="quantization", action="store_const", const="4bit",
                   default="none", help="NF4 LLM (bitsandbytes)")
    q.add_argument("--load-8bit", dest="quantization", action="store_const", const="8bit",
                   help="int8 LLM (bitsandbytes)")
    p.add_argument("--attn", default="sdpa", choices=ATTENTION_CHOICES)
    p.add_argument("--template", default=None, choices=["llava_v1", "vicuna_v1"])
    p.add_argument("--max-cached-frames", type=_positive_int, metavar="N",
                   default=LoadOptions.max_cached_frames,
                   help="frames whose features (visual tokens and image-prefix KV cache) are kept "
                        "for further questions, least recently used dropped first (default "
                        "%(default)s; about 0.6 GB each for a 7B model in fp16)")


def load_options(args) -> LoadOptions:
    """The LoadOptions of the options `add_model_args` added; no --model-path is the embedded
    default model (CheckpointError when this install has none)."""
    from spatialgeo_core.default_model import embedded_model_path

    return LoadOptions(
        path=args.model_path or str(embedded_model_path()), device=args.device,
        dtype=args.dtype, quantization=args.quantization, attn_implementation=args.attn,
        template=args.template, clip_dir=args.clip, max_cached_frames=args.max_cached_frames)


def load_pipeline(args):
    """The pipeline `load_options(args)` describe."""
    from spatialgeo_core.pipeline import SpatialGeoPipeline

    return SpatialGeoPipeline.from_pretrained(load_options(args))


def cmd_ask(args) -> int:
    from spatialgeo_core import ask_depth
    from spatialgeo_core.image_msgs import open_image
    from spatialgeo_core.types import GenerationOptions

    image = open_image(args.image)                               # [H, W, 3] uint8
    depth_input = ask_depth.read_depth_args(args, (image.shape[1], image.shape[0]))  # or None
    positions = ask_depth.compute_positions(depth_input, args.region)
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed)
    pipe = load_pipeline(args)
    frame = pipe.encode(image, args.region)
    if args.question is None:
        for i, position in enumerate(positions or ()):
            print(position.describe(i))
        return _chat(pipe, frame, args.region, opts)
    ans = pipe.answer(frame, args.question, regions=args.region, options=opts,
                      keep_logits=args.save_logits is not None)
    if args.json:
        s, e = ans.image_span
        print(json.dumps({
            "answer": ans.text,
            # the image's placeholder run collapsed into one marker; image_span gives its place
            "input_ids": ans.input_ids[:s] + [f"<image:{e - s}>"] + ans.input_ids[e:],
            "image_span": [s, e], "image_token_id": pipe.cfg.image_token_id,
            "output_ids": ans.output_ids, "num_visual_tokens": ans.num_visual_tokens,
            "num_tokens": ans.num_tokens, "stopped": ans.stopped,
            "timings_ms": {k: round(v, 3) for k, v in ans.timings_ms.items()},
            "load_ms": round(pipe.load_ms, 3), "encode_ms": round(frame.encode_ms, 3),
            **({} if positions is None else {"regions_3d": ask_depth.positions_json(positions)}),
        }), flush=True)
    else:
        print(ans.text, flush=True)
        for i, position in enumerate(positions or ()):
            print(position.describe(i), flush=True)
    # extras after the answer: a failed write loses nothing
    if args.annotate:
        ask_depth.save_annotated(args.annotate, image, args.region, args.question, ans.text,
                                 positions)
    if args.save_logits:
        _save_logits(ans, args.save_logits)
    return 0


def _save_logits(ans, path: str) -> None:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    logits = torch.stack(ans.step_logits) if ans.step_logits else torch.zeros(0)
    try:
        save_file({"logits": logits.contiguous(),
                   "output_ids": torch.tensor(ans.output_ids, dtype=torch.long)}, path)
    except (OSError, SafetensorError) as e:
        raise InvalidRequestError(f"--save-logits {path}: cannot write the logits ({e}); the "
                                  "answer was printed above") from e


def _chat(pipe, frame, regions, opts) -> int:
    """Interactive chat about one image, as llava.serve.cli: empty line or EOF ends it."""
    history: list[tuple[str, str]] = []
    while True:
        try:
            q = input("USER: ").strip()
        except EOFError:
            print()
            return 0
        if not q:
            return 0
        try:
            ans = pipe.answer(frame, q, regions=regions, options=opts, history=history)
        except InvalidRequestError as e:            # one bad question does not end the chat
            print(f"error: {e}", file=sys.stderr)
            continue
        print(f"ASSISTANT: {ans.text}")
        history.append((q, ans.text))


def cmd_convert(args) -> int:
    from spatialgeo_core.checkpoint.convert import assemble, save_assembled

    asm = assemble(args.llava, release_dir=args.release, vit_path=args.vit, moge_path=args.moge,
                   clip_dir=args.clip, geo_layers=args.geo_layers,
                   geo_input_norm=args.geo_input_norm, new_geo_adapter=args.new_geo_adapter,
                   seed=args.seed)
    out = save_assembled(asm, args.out, args.dtype)
    print(f"wrote {out} ({len(asm.tensors)} tensors, {asm.config.num_visual_tokens} visual "
          "tokens per image)")
    return 0


def cmd_demo(args) -> int:
    from spatialgeo_core.default_model import run_demo
    return run_demo(device=args.device, model_path=args.model_path)


def cmd_random_model(args) -> int:
    from spatialgeo_core.default_model import RANDOM_WARNING, write_random_model

    out = write_random_model(args.out, seed=args.seed)
    print(f"wrote {out}: {RANDOM_WARNING}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spatialgeo", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("ask", help="answer a question about one image (chat without --question)")
    add_model_args(a)
    a.add_argument("--image", required=True)
    a.add_argument("--question", default=None)
    a.add_argument("--region", type=_parse_box, action="append", default=[],
                   help="x1,y1,x2,y2 in pixels; repeat for Region [0], [1], ...")
    a.add_argument("--max-new-tokens", type=int, default=128)
    a.add_argument("--temperature", type=float, default=0.0)
    a.add_argument("--top-p", type=float, default=1.0)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--save-logits", default=None, metavar="FILE",
                   help="write every generated step's logits (safetensors)")
    add_depth_args(a)
    a.set_defaults(func=cmd_ask)

    c = sub.add_parser("convert", help="published checkpoints -> our format")
    c.add_argument("--llava", required=True,
                   help="llava-v1.5-7b directory (with --release) or a merged SpatialGeo "
                        "directory")
    c.add_argument("--release", default=None,
                   help="SpatialGeo release dir: adapter_config.json, adapter_model.*, "
                        "non_lora_trainables.bin")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--vit", default=None, help="vit_model.pt (DINOv2 of MoGe v1)")
    g.add_argument("--moge", default=None, help="MoGe v1 model.pt")
    c.add_argument("--clip", default=None, help="local clip-vit-large-patch14-336 directory")
    c.add_argument("--geo-layers", type=int, nargs="+", default=None,
                   help="geometry blocks (default: the last 4)")
    c.add_argument("--geo-input-norm", default="clip", choices=["clip", "imagenet"])
    c.add_argument("--new-geo-adapter", action="store_true",
                   help="stage-1 start: llava-v1.5-7b + geometry with a new hierarchical adapter, "
                        "N(0, 0.02) weights and zero biases")
    c.add_argument("--seed", type=int, default=0, help="seed of --new-geo-adapter")
    c.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    c.add_argument("--out", required=True)
    c.set_defaults(func=cmd_convert)

    d = sub.add_parser("demo",
                       help="answer a question about a sample scene with the default model")
    d.add_argument("--device", default="cpu")
    d.add_argument("--model-path", default=None,
                   help="another model to show (default: the embedded default model)")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("random-model",
                       help="write a tiny randomly initialised model (its answers mean nothing)",
                       description="Write a tiny randomly initialised SpatialGeo and its "
                                   "tokenizer in our format, for trying the code path where no "
                                   "trained model is at hand (a trimmed install).")
    r.add_argument("--out", required=True, help="a new directory")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_random_model)

    # training and evaluation commands live beside their code; each module adds its subparsers
    for modname in _COMMAND_MODULES:
        if available(modname):
            importlib.import_module(modname).add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_command(f"spatialgeo {args.cmd}", args.func, args)


def run_command(name: str, func, args) -> int:
    """`func(args)`'s exit code; an error of the library or the file system ends it with exit
    code 2 and one line on stderr (no traceback), Ctrl-C with 130 and a line saying so."""
    try:
        return func(args)
    except InterruptedRun as e:
        print(f"{name}: interrupted: {e}", file=sys.stderr)
        return 130
    except (SpatialGeoError, OSError) as e:
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    """An error's message on one line (a library's message may hold newlines)."""
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())

