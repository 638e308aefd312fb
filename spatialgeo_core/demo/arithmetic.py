"""The length arithmetic alone: given two regions' positions as text, does the model compute the
length or the clock direction?

A held-out answer can go wrong in reading a position from the image or in the arithmetic from
the positions it stated (conclusions.audit_positions tells them apart on the model's own
positions). This takes the image out: held-out position drills (data.position_drills) of the
training split's scenes from HELD_OUT_FROM on, which no recipe reaches (the records use the
first train_images scenes, the position drills the next position_drill_images), the positions
in the question; the model continues its answer after the stated positions (greedy, text only)
and its result is scored against the drill's as the bench scorer scores (the same parsers and
tolerance: within 25 %, or one clock hour).

    python -m spatialgeo_core.demo.arithmetic MODEL_DIR [--scenes 60]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from spatialgeo_core.demo.ablation import wilson
from spatialgeo_core.demo.data import DemoWorld, position_drills
from spatialgeo_core.eval.metrics import score_item

HELD_OUT_FROM = 20000


def held_out_drills(scenes: int, seed: int = 0) -> list[dict]:
    """Position drills (facts_all) of training-split scenes HELD_OUT_FROM ... + scenes - 1."""
    return position_drills(DemoWorld(seed=seed, train_images=HELD_OUT_FROM,
                                     position_drill_images=scenes))


def category_of(drill: dict) -> str:
    """"synth-train-0-020001-distance_data-drill" -> "distance_data"."""
    return drill["id"].rsplit("-", 2)[-2]


def split_answer(answer: str) -> tuple[str, str]:
    """(the stated positions, the result: "So ...")."""
    facts, result = answer.rsplit(" So ", 1)
    return facts, "So " + result


def score_completions(drills: Sequence[dict], completions: Sequence[str]) -> dict:
    """Per category: answers, right (the completion's result scored against the drill's), the
    percentage and its 95 % Wilson interval. completions[i] continues drills[i]'s answer after
    its stated positions."""
    counts: dict[str, list[int]] = {}
    for drill, text in zip(drills, completions, strict=True):
        category = category_of(drill)
        question, answer = (t["value"] for t in drill["conversations"])
        result = text.split("So ", 1)[1] if "So " in text else ""     # no result: unreadable
        ok = score_item(category, question, result, split_answer(answer)[1]).success
        c = counts.setdefault(category, [0, 0])
        c[0] += 1
        c[1] += bool(ok)
    return {k: {"answers": n, "right": r, "right_pct": round(100.0 * r / n, 1),
                "interval": [round(x, 1) + 0.0 for x in wilson(r, n)]}      # + 0.0: no -0.0
            for k, (n, r) in counts.items()}


def complete(model, tokenizer, prompt: str, max_new_tokens: int = 48) -> str:
    """Greedy continuation of a text-only prompt (generation.decode, the pipeline's decoding loop,
    on the LLaMA's KV cache), up to the end of its sentence after "So"."""
    import time

    import torch

    from spatialgeo_core.generation import decode
    from spatialgeo_core.kv_cache import returned_cache
    from spatialgeo_core.types import GenerationOptions

    start = time.perf_counter()
    with torch.inference_mode():
        out = model.llm(input_ids=torch.tensor([tokenizer.encode(prompt)]), use_cache=True)
        ended: list[bool] = []

        def on_token(ids: list[int]) -> None:
            text = tokenizer.decode(ids).rstrip()
            if "So " in text and text.endswith(".") and not text[-2:-1].isdigit():
                ended.append(True)                      # a full stop, not a decimal point

        decoded = decode(model.llm, out.logits[0, -1], returned_cache(out),
                         GenerationOptions(max_new_tokens=max_new_tokens), tokenizer.eos_id,
                         start, on_token=on_token, should_stop=lambda: bool(ended))
    return tokenizer.decode([i for i in decoded.ids if i != tokenizer.eos_id])


def evaluate(model_dir: str, scenes: int = 60, seed: int = 0) -> dict:
    """The model at model_dir on held_out_drills(scenes, seed), in its chat template."""
    from spatialgeo_core.conversation import get_template
    from spatialgeo_core.load_options import LoadOptions
    from spatialgeo_core.loading import load_model

    model, tokenizer = load_model(LoadOptions(path=model_dir))
    model.eval()
    template = get_template(model.cfg.chat_template)
    drills = held_out_drills(scenes, seed)
    completions = []
    for d in drills:
        question, answer = (t["value"] for t in d["conversations"])
        facts, _ = split_answer(answer)
        completions.append(complete(model, tokenizer, template.prompt(question, with_image=False)
                                    + " " + facts))
    return {"model": model_dir, "scenes": scenes, "from_scene": HELD_OUT_FROM,
            "categories": score_completions(drills, completions)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spatialgeo_core.demo.arithmetic",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--scenes", type=int, default=60,
                   help="held-out scenes (about 3.8 drills each)")
    p.add_argument("--seed", type=int, default=0, help="the world's seed")
    args = p.parse_args(argv)
    print(json.dumps(evaluate(args.model_dir, args.scenes, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
