"""The whole demo training, from nothing to the embedded default model, in one command:

    python -m spatialgeo_core.demo.reproduce --out runs/demo [--ablation]
    spatialgeo demo-train --out runs/demo [--ablation]

1. world: training scenes (conversations + captions) and held-out test scenes (bench JSON);
2. tokenizer: SentencePiece on the world's text;
3. towers: the semantic (CLIP) and geometry (DINOv2, MoGe-style) towers pretrained on the world;
4. per variant (fused = SpatialGeo; clip_only = LLaVA-1.5 layout, with --ablation): an initial
   checkpoint in our format, stage 0 (the LLaMA alone on the world's text: drills that conclude
   from stated facts, as LLaVA's LLM arrives pretrained), stage 1 and stage 2 through
   `spatialgeo train`'s engine with demo/configs/demo_stage{0,1,2}.yaml, the merged model at
   <out>/<variant>/model;
5. evaluation on the held-out split with the bench scorer (<out>/<variant>/eval/metrics.json) and
   what the model reads of each held-out region (eval/reading.json).

Steps whose outputs exist are skipped, so the variants can also run in separate processes after
`--prepare-only`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spatialgeo_core.demo.data import DemoWorld, write_world
from spatialgeo_core.synthetic.questions import WORDINGS
from spatialgeo_core.synthetic.world import NAMINGS

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"     # package data: demo_stage{0,1,2}.yaml
VARIANTS = ("fused", "clip_only")


def prepare(out: Path, world: DemoWorld, tower_images: int, semantic_steps: int,
            geometry_steps: int, vocab_size: int) -> dict:
    """Steps 1-3; returns what they measured."""
    import torch
    from safetensors.torch import load_file, save_file

    from spatialgeo_core.demo.towers import (
        demo_config,
        pretrain_geometry,
        pretrain_semantic,
        tower_data,
    )
    from spatialgeo_core.model import SpatialGeoForCausalLM
    from spatialgeo_core.tiny import build_tokenizer
    info_path = out / "prepare.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    t0 = time.time()
    paths = write_world(world, out / "world")
    corpus = paths["corpus"].read_text(encoding="utf-8").splitlines()
    build_tokenizer(out / "tokenizer", vocab_size=vocab_size, corpus=corpus)
    t1 = time.time()
    cfg = demo_config(vocab_size, geometry=True, image_size=world.image_size)
    data = tower_data(tower_images, world.seed, cfg,
                      world.train_config())
    torch.manual_seed(world.seed)
    model = SpatialGeoForCausalLM(cfg)
    sem = pretrain_semantic(model.clip_tower, data, semantic_steps, seed=world.seed)
    geo = pretrain_geometry(model.geo_tower, data, geometry_steps, seed=world.seed)
    towers = {k: v for k, v in model.state_dict().items()
              if k.startswith(("clip_tower.", "geo_tower."))}
    save_file({k: v.contiguous() for k, v in towers.items()}, str(out / "towers.safetensors"))
    load_file(str(out / "towers.safetensors"))                         # written in full
    info = {"world_s": round(t1 - t0, 1), "towers_s": round(time.time() - t1, 1),
            "semantic": sem, "geometry": geo, "world": world.__dict__}
    info_path.write_text(json.dumps(info, indent=2))
    log.info("prepared %s: %s", out, info)
    return info


def build_init(out: Path, variant: str, vocab_size: int, image_size: int, seed: int) -> Path:
    """A checkpoint in our format: pretrained towers, random adapters and LLaMA."""
    import torch
    from safetensors.torch import load_file

    from spatialgeo_core.checkpoint.ours import save_ours
    from spatialgeo_core.demo.towers import demo_config
    from spatialgeo_core.model import SpatialGeoForCausalLM
    cfg = demo_config(vocab_size, geometry=variant == "fused", image_size=image_size)
    torch.manual_seed(seed)
    model = SpatialGeoForCausalLM(cfg)
    towers = load_file(str(out / "towers.safetensors"))
    state = model.state_dict()
    for k, v in towers.items():
        if k in state:
            state[k] = v
    missing = [k for k in state if k.startswith(("clip_tower.", "geo_tower."))
               and k not in towers]
    if missing:
        raise RuntimeError(f"towers.safetensors lacks {missing[:3]} ...")
    return save_ours(out / variant / "init", cfg, state, tokenizer_dir=out / "tokenizer")


def run_stage(stage: int, init: Path, output: Path, data: Path, variant: str,
              overrides: list[str]) -> Path:
    """`spatialgeo train --config demo/configs/demo_stage{stage}.yaml` for a variant (stage 0:
    the LLaMA on the world's text, 1: captions, 2: questions)."""
    from spatialgeo_core.training.config import load_config
    from spatialgeo_core.training.engine import train
    merged = output / "export" / "merged"
    if (merged / "config.json").is_file():
        return merged
    sets = list(overrides)
    if variant == "clip_only":
        sets += ["stage.lr.geo_adapter=0", "stage.feature_drop_prob=0"]
    env = {"SPATIALGEO_INIT": str(init), "SPATIALGEO_OUTPUT": str(output),
           "SPATIALGEO_DATA": str(data)}
    cfg = load_config(CONFIG_DIR / f"demo_stage{stage}.yaml", sets, env=env)
    result = train(cfg)
    if result.status != "finished":
        raise RuntimeError(f"stage {stage} ({variant}) stopped at step {result.step} of "
                           f"{result.total_steps} ({result.status}); run the command again to "
                           "resume it")
    log.info("stage %d (%s): %s at step %d, loss %s", stage, variant, result.status, result.step,
             result.last_loss)
    return result.exports.get("merged", merged)


def train_variant(out: Path, variant: str, vocab_size: int, world: DemoWorld,
                  stage1_sets: list[str], stage2_sets: list[str],
                  stage0_sets: list[str] | None = None,
                  stage1_cycles: Sequence[int] = (), stage2_cycles: Sequence[int] = ()) -> Path:
    """init -> stage 0 (when stage0_sets is not None and the world has drills) -> stage 1 ->
    stage 2 -> <out>/<variant>/model. stage1_cycles (e.g. (900, 1800)): stage 1 as consecutive
    runs of that many steps, each a full warm-up + cosine cycle from the previous one's export
    (<variant>/stage1, stage1-cycle2, ...); empty: one run of demo_stage1.yaml's steps.
    stage2_cycles: the same for stage 2 (<variant>/stage2, stage2-cycle2, ...)."""
    model_dir = out / variant / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    init = out / variant / "init"
    if not (init / "config.json").is_file():
        build_init(out, variant, vocab_size, world.image_size, world.seed)
    drills = out / "world" / "train" / "drills.json"
    if stage0_sets is not None and drills.is_file() and json.loads(drills.read_text()):
        init = run_stage(0, init, out / variant / "stage0", out / "world", variant, stage0_sets)
    s1 = run_cycles(1, init, out / variant, variant, stage1_sets, stage1_cycles)
    s2 = run_cycles(2, s1, out / variant, variant, stage2_sets, stage2_cycles)
    shutil.copytree(s2, model_dir)
    return model_dir


def run_cycles(stage: int, init: Path, variant_dir: Path, variant: str, sets: list[str],
               cycles: Sequence[int]) -> Path:
    """Stage `stage` as consecutive runs of cycles[i] steps, each from the previous one's export
    (<variant_dir>/stage<stage>, stage<stage>-cycle2, ...); no cycles: one run of the config's
    steps. Returns the last export."""
    for i, steps in enumerate(cycles or [None]):
        overrides = sets if steps is None else [*sets, f"optim.max_steps={steps}"]
        name = f"stage{stage}" if i == 0 else f"stage{stage}-cycle{i + 1}"
        init = run_stage(stage, init, variant_dir / name, variant_dir.parent / "world", variant,
                         overrides)
    return init


def answer_budget(records_path: Path, tokenizer_dir: Path, describe: bool = False) -> int:
    """New tokens to allow an answer: the longest training answer, in the model's tokens, plus a
    margin of 8 (describe: of the DESCRIBE records, else of the question records)."""
    from spatialgeo_core.demo.data import DESCRIBE
    from spatialgeo_core.tokenizer import LlamaTokenizer
    tok = LlamaTokenizer.from_dir(tokenizer_dir)
    longest = 0
    for rec in json.loads(records_path.read_text(encoding="utf-8")):
        turns = rec["conversations"]
        if "image" not in rec or turns[0]["value"].endswith(DESCRIBE) != describe:
            continue
        longest = max(longest, *(len(tok.encode(t["value"], add_bos=False)) for t in turns[1::2]))
    if longest == 0:
        raise RuntimeError(f"{records_path} holds no {'DESCRIBE' if describe else 'question'} "
                           "record with an image")
    return longest + 8


def evaluate(model_dir: Path, out: Path, world: DemoWorld, limit: int | None = None) -> dict:
    """Answer and score the held-out bench with the evaluation scorer (eval/metrics.json), then
    what the model reads of each held-out region (eval/reading.json, demo/reading.py), what its
    visual tokens hold of each (eval/probe.json, demo/probe.py), and where its facts answers go
    wrong (eval/conclusions.json, demo/conclusions.py)."""
    from spatialgeo_core.demo.conclusions import audit as audit_conclusions
    from spatialgeo_core.demo.data import DESCRIBE
    from spatialgeo_core.demo.probe import probe
    from spatialgeo_core.demo.reading import answer_with, evaluate_reading
    from spatialgeo_core.eval.spatialrgpt.runner import evaluate_bench
    from spatialgeo_core.pipeline import SpatialGeoPipeline
    from spatialgeo_core.types import GenerationOptions
    eval_dir = model_dir.parent / "eval"
    records = out / "world" / "train" / "llava.json"
    pipe = None

    def load():
        nonlocal pipe
        pipe = pipe or SpatialGeoPipeline.from_pretrained(model_dir)          # on the CPU
        return pipe

    if (eval_dir / "metrics.json").is_file():
        metrics = json.loads((eval_dir / "metrics.json").read_text())
    else:
        budget = answer_budget(records, model_dir)
        metrics = evaluate_bench(out / "world" / "test" / "bench.json",
                                 out / "world" / "test" / "images", eval_dir, load,
                                 model_id=str(model_dir), limit=limit,
                                 options=GenerationOptions(max_new_tokens=budget),
                                 progress=False)
        metrics["max_new_tokens"] = budget
        (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    scenes = min(world.test_images, limit or 10**9)
    if world.caption_every and not (eval_dir / "reading.json").is_file():
        budget = answer_budget(records, model_dir, describe=True)
        reading = evaluate_reading(answer_with(load), world, scenes, DESCRIBE, budget)
        (eval_dir / "reading.json").write_text(json.dumps(reading, indent=2))
    if not (eval_dir / "probe.json").is_file():
        held = probe(load(), world, test_scenes=scenes)
        (eval_dir / "probe.json").write_text(json.dumps(held, indent=2))
    results = eval_dir / "results.jsonl"
    if results.is_file() and not (eval_dir / "conclusions.json").is_file():
        lines = results.read_text(encoding="utf-8").splitlines()
        audit = audit_conclusions(json.loads(line) for line in lines if line.strip())
        (eval_dir / "conclusions.json").write_text(json.dumps(audit, indent=2))
    return metrics


def _row(name: str, m: dict) -> str:
    q, n, d = m["qualitative"]["overall"], m["quantitative"]["overall"], m["direction"]
    rel = "n/a" if n["abs_rel"] is None else f"{n['abs_rel']:.2f}"
    return (f"| {name} | {q['mean_group_accuracy_pct']:.1f} | {q['accuracy_pct']:.1f} | "
            f"{n['success_pct']:.1f} | {rel} | {d['success_pct']:.1f} | "
            f"{q['total'] + n['total'] + d['total']} |")


def ablation_table(metrics: dict[str, dict]) -> str:
    """Markdown: fused vs CLIP-only on the held-out split (the bench scorer's numbers)."""
    names = {"fused": "SpatialGeo (CLIP + geometry)", "clip_only": "CLIP-only (LLaVA-1.5)"}
    lines = ["| model | qualitative avg (mean of groups) % | qualitative all % | "
             "quantitative success (±25%) % | abs rel error | direction success (±1 h) % | "
             "questions |", "|---|---|---|---|---|---|---|"]
    lines += [_row(names[v], metrics[v]) for v in VARIANTS if v in metrics]
    return "\n".join(lines) + "\n"


ASSET_FILES = ("config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json")
MAX_ASSET_BYTES = 25 * 2**20


def install_asset(out: Path, dest: Path, summary: dict, argv: list[str]) -> Path:
    """Copy the fused model, its held-out metrics, the ablation table and a TRAINING.md (recipe,
    command, measurements) to `dest` (the embedded default: spatialgeo_core/assets/default_model).
    """
    model_dir, metrics = out / "fused" / "model", out / "fused" / "eval" / "metrics.json"
    if not (model_dir / "config.json").is_file() or not metrics.is_file():
        raise RuntimeError(f"{out} has no evaluated fused model: run without --no-eval first")
    size = sum((model_dir / f).stat().st_size for f in ASSET_FILES)
    if size > MAX_ASSET_BYTES:
        raise RuntimeError(f"the model is {size / 2**20:.1f} MiB, over the 25 MiB asset budget")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ASSET_FILES:
        shutil.copy2(model_dir / f, tmp / f)
    shutil.copy2(metrics, tmp / "eval_metrics.json")
    ablation = (out / "ablation.md").read_text() if (out / "ablation.md").is_file() else ""
    prep = summary.get("prepare", {})
    fused_run = out / "summary-fused.json"          # the run that trained it, when it was alone
    train_s = json.loads(fused_run.read_text())["fused"]["train_s"] if fused_run.is_file() else \
        summary.get("fused", {}).get("train_s", "n/a")
    times = ", ".join(f"{name} {s / 60:.0f} min" for name, s in stage_times(out / "fused"))
    (tmp / "TRAINING.md").write_text(TRAINING_MD.format(
        command="python -m spatialgeo_core.demo.reproduce " + " ".join(argv),
        prepare=json.dumps(prep, indent=2), ablation=ablation or "(not run)\n",
        train_s=train_s, machine=summary.get("machine", "an unrecorded CPU"),
        size_mib=f"{size / 2**20:.1f}", stage_times=times or "not recorded",
        wording=prep.get("world", {}).get("wording", "facts")))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def stage_times(variant_dir: Path) -> list[tuple[str, float]]:
    """(stage directory, seconds from its train_config.yaml to its merged export), in the order
    they ran: each stage's wall time, also when the run that installs the model resumed it."""
    out = []
    for d in variant_dir.glob("stage*"):
        start, end = d / "train_config.yaml", d / "export" / "merged" / "model.safetensors"
        if start.is_file() and end.is_file():
            t0 = start.stat().st_mtime
            out.append((t0, d.name, end.stat().st_mtime - t0))
    return [(name, secs) for _, name, secs in sorted(out)]


TRAINING_MD = """# The embedded default model: SpatialGeo-demo

A very small SpatialGeo (CLIP ViT 4 x 128, DINOv2 4 x 128 with geometry levels 1-3, LLaMA 3 x 192,
112 px input, 8 x 8 patches per tower, 128 interleaved visual tokens; {size_mib} MiB in float32)
trained from scratch on this repository's synthetic world by `spatialgeo_core.demo.reproduce`.
It knows nothing but that world: two or three shapes on a ground plane, marked as set-of-marks
regions. It exists so that a fresh checkout runs the whole pipeline on a trained model and
prints its answer beside the ground truth, and to measure the geometry ablation; it is not a
substitute for the published SpatialGeo weights. Read its scores below before trusting an answer.

## Reproduce

    {command}

(from nothing: world, tokenizer, towers, stage 0 unless --no-stage0, stages 1 and 2, held-out
evaluation; the invocation that installed it trained for {train_s} s on {machine}, stages it
resumed finished not counted; each stage's wall time, from its first to its last file:
{stage_times}.)

Recipe: world (`DemoWorld`: 3000 training scenes x 6 questions, 224 px renders read at 112 px,
answers in metres in the "{wording}" wording: a comparison states each region's fact, then
concludes "So Region [0] is <relation> Region [1]."; in "facts_all" a two-region length or
direction first states both regions' positions ("Region [0]: 3.2 m ahead, 0.4 m left, 0.6 m up.
... So Region [0] and Region [1] are 1.8 m apart."); each question draws only its own regions;
100 held-out scenes x 4 questions with mixed units); SentencePiece tokenizer on the world's
text; semantic tower pretrained per patch (object colour, shape, region mark) and geometry tower
pretrained MoGe-style (affine-invariant point map + metric log-depth, plus the same per-patch
appearance head), both then frozen; stage 0 `spatialgeo_core/demo/configs/demo_stage0.yaml`
(text-only drills: the conclusion from stated facts, LLaMA only; skipped with --no-stage0);
stage 1 `demo_stage1.yaml` (region captions asked with "Describe the marked regions.",
vicuna_v1; drills only with --caption-drill-share, 0 by default; with --stage1-cycles,
consecutive warm-up + cosine cycles of the given steps, each from the previous one's export);
stage 2 `demo_stage2.yaml` (every SpatialRGPT-Bench category in that wording, every second
scene's caption, drills; with --position-drill-images N, text-only drills of the lengths and
directions from the stated positions of N further scenes, which no image record shows; feature
dropping 0.1; the LLaMA alone learns, both adapters as stage 1 left them; with --stage2-cycles,
cycles as stage 1's).

## Tower pretraining

```json
{prepare}
```

## Held-out scores (the `spatialgeo eval-bench` scorer; eval_metrics.json)

{ablation}"""


def _steps(text: str) -> tuple[int, ...]:
    """"900,1800" -> (900, 1800): positive step counts."""
    try:
        steps = tuple(int(v) for v in text.split(","))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected positive step counts like 900,1800, got "
                                         f"{text!r}")
    return steps


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoWorld()
    p.add_argument("--out", required=True, help="output directory (runs/demo)")
    p.add_argument("--ablation", action="store_true",
                   help="also train and score the CLIP-only variant with the same budget")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="variants to train (default: fused, plus clip_only with --ablation)")
    p.add_argument("--prepare-only", action="store_true", help="world, tokenizer, towers only")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--test-images", type=int, default=d.test_images)
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help="the model's input size (pixels)")
    p.add_argument("--render-size", type=int, default=d.render_size,
                   help="the size scenes are rendered at")
    p.add_argument("--qa-per-image", type=int, default=d.qa_per_image)
    p.add_argument("--caption-every", type=int, default=d.caption_every,
                   help="every N-th training scene's region caption joins the stage-2 data (0: "
                        "none)")
    p.add_argument("--caption-repeats", type=int, default=d.caption_repeats,
                   help="times each of those captions is in the stage-2 data")
    p.add_argument("--wording", choices=list(WORDINGS), default=d.wording,
                   help="training answers (synthetic/questions.py WORDINGS): facts (comparisons "
                        "state each region's fact, then conclude), facts_all (distances and "
                        "directions too), plain (one wording per category) or varied")
    p.add_argument("--naming", choices=list(NAMINGS), default=d.naming,
                   help="training records: per_question (the asked regions only, as Region [0] "
                        "and Region [1], as the held-out items) or shared (one conversation per "
                        "scene)")
    p.add_argument("--drill-share", type=float, default=d.drill_share,
                   help="text-only drills of the conclusion per facts answer (0: none)")
    p.add_argument("--caption-drill-share", type=float, default=d.caption_drill_share,
                   help="stage 1: drills of the conclusion (stated facts -> relation) per "
                        "caption; keeps stage 0's skill while stage 1 learns to read regions")
    p.add_argument("--position-drill-images", type=int, default=d.position_drill_images,
                   help="stage 2: text-only drills of the lengths and directions from this many "
                        "further scenes' stated positions (about 3.8 per scene; 0: none)")
    p.add_argument("--vocab-size", type=int, default=768)
    p.add_argument("--tower-images", type=int, default=3000)
    p.add_argument("--semantic-steps", type=int, default=1500)
    p.add_argument("--geometry-steps", type=int, default=1500)
    p.add_argument("--no-stage0", action="store_true",
                   help="no stage 0 (the LLaMA's text-only drills before stage 1)")
    p.add_argument("--stage0-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of demo_stage0.yaml (repeatable)")
    p.add_argument("--stage1-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of demo_stage1.yaml (repeatable), e.g. optim.max_steps=50")
    p.add_argument("--stage1-cycles", type=_steps, default=(), metavar="N,N,...",
                   help="stage 1 as consecutive cosine cycles of these many steps, each from "
                        "the previous one's export (the embedded default: 900,1800); default: "
                        "one run of demo_stage1.yaml's steps")
    p.add_argument("--stage2-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stage2-cycles", type=_steps, default=(), metavar="N,N,...",
                   help="stage 2 as consecutive cosine cycles, as --stage1-cycles (e.g. "
                        "1500,1500: stage2, then stage2-cycle2)")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N items")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--install-asset", type=Path, default=None, metavar="DIR",
                   help="copy the evaluated fused model and its TRAINING.md to DIR "
                        "(spatialgeo_core/assets/default_model)")


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = DemoWorld(seed=args.seed, image_size=args.image_size, render_size=args.render_size,
                      train_images=args.train_images,
                      test_images=args.test_images, qa_per_image=args.qa_per_image,
                      caption_every=args.caption_every,
                      caption_repeats=args.caption_repeats, wording=args.wording,
                      naming=args.naming, drill_share=args.drill_share,
                      caption_drill_share=args.caption_drill_share,
                      position_drill_images=args.position_drill_images)
    started = time.time()
    from spatialgeo_core.training.precision import describe_cpu
    summary: dict = {"machine": describe_cpu(),
                     "prepare": prepare(out, world, args.tower_images, args.semantic_steps,
                                        args.geometry_steps, args.vocab_size)}
    if args.prepare_only:
        return summary
    variants = args.variants or (list(VARIANTS) if args.ablation else ["fused"])
    for v in variants:
        t = time.time()
        model_dir = train_variant(out, v, args.vocab_size, world, args.stage1_set,
                                  args.stage2_set, None if args.no_stage0 else args.stage0_set,
                                  args.stage1_cycles, args.stage2_cycles)
        summary[v] = {"model": str(model_dir), "train_s": round(time.time() - t, 1)}
        if not args.no_eval:
            summary[v]["metrics"] = evaluate(model_dir, out, world, args.eval_limit)
    summary["wall_s"] = round(time.time() - started, 1)
    done = {v: json.loads((out / v / "eval" / "metrics.json").read_text()) for v in VARIANTS
            if (out / v / "eval" / "metrics.json").is_file()}
    if done:
        (out / "ablation.md").write_text(ablation_table(done))
    (out / f"summary-{'-'.join(variants)}.json").write_text(json.dumps(summary, indent=2))
    if args.install_asset is not None:
        summary["asset"] = str(install_asset(out, args.install_asset, summary,
                                             getattr(args, "argv", [])))
    return summary


def run_and_report(args: argparse.Namespace) -> int:
    """run(args), its summary on stdout; a stage that stopped early (a stop signal: resumable)
    or an asset that cannot be installed is one line on stderr and exit status 1."""
    try:
        summary = run(args)
    except RuntimeError as e:
        print(f"demo training: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "prepare"}, indent=2)[:4000])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spatialgeo_core.demo.reproduce",
                                description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run_and_report(args)


if __name__ == "__main__":
    raise SystemExit(main())
