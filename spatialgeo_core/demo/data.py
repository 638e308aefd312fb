"""Files of the demo recipe, all from spatialgeo_core.synthetic.

    train/llava.json     stage 2: one record per question, drawing only the asked regions as
                         Region [0] (A) and Region [1] (B) as the held-out items do, answered in
                         the "facts_all" wording (each region's fact, then one canonical
                         conclusion; a two-region length or direction after both positions);
                         plus every caption_every-th scene's caption asked for with DESCRIBE, and
                         text-only drills of the conclusion (drill_share of the facts answers:
                         the answer's facts given in the question, no image), then the
                         position drills (position_drill_images further scenes' lengths and
                         directions, as drills only: their images are never written)
    train/drills.json    stage 0: every drill (text only), the LLaMA's first lessons
    train/captions.json  stage 1: DESCRIBE -> "Region [k]: <colour> <shape>, <y> m ahead, <x> m
                         left|right, <z> m up, <w> m wide, <h> m tall, <v> cubic metres. ..."
                         (caption(): every fact a stage-2 answer states), in the chat
                         template as stage 2 (a drill keeps its question, which the plain
                         template would drop), then caption_drill_share drills per caption
    test/bench.json      held-out scenes (split "test"), SpatialRGPT-Bench items
    corpus.txt           every text the model will read or write (the tokenizer's corpus)
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialgeo_core.conversation import TEMPLATES
from spatialgeo_core.synthetic import (
    SceneConfig,
    WorldConfig,
    WorldSample,
    iter_samples,
    write_bench_json,
    write_llava_json,
)
from spatialgeo_core.synthetic.facts import QUANTITIES, fact_phrase
from spatialgeo_core.synthetic.questions import POSITION_FACTS, make_qa
from spatialgeo_core.synthetic.world import make_sample
from spatialgeo_core.synthetic.writers import region_records

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoWorld:
    """How much of the world the demo sees, and how it looks.

    Scenes are rendered at render_size and the model reads them at image_size (the processor
    resizes), so the set-of-marks labels (at least 10 px tall, regions.py) cover little of an
    object. Two or three objects, 2-7 m away, 0.4-1.6 m big: each usable region spans several 8 x 8
    patches of the demo model. Training answers word lengths in metric units; the held-out answers
    in mixed units (m, cm, feet and inches) as SpatialRGPT-Bench's, which the scorer converts.
    Training answers are worded "facts" (synthetic.facts): a two-region answer first states
    each region's fact ("Region [0]: 1.2 m left. Region [1]: 0.4 m right.") and then one
    canonical conclusion ("So Region [0] is to the left of Region [1]."), so the decision is
    made by comparing two numbers already written, not in one token; a two-region length or
    direction ("facts_all", the default) first states both regions' positions ("Region [0]: 3.2
    m ahead, 0.4 m left, 0.6 m up. Region [1]: ... So Region [0] and Region [1] are 1.8 m
    apart."), so it is computed from positions already written (measured: README, runs r10-r12
    vs r9); each question draws only its own regions, named as the held-out items name them
    (naming "per_question"). The conclusion is also drilled on text alone (drill_record): stage
    0 reads every drill, stage 2 drill_share drills per facts answer, stage 1
    caption_drill_share per caption (default 0: with a third of stage 1's records drills, the
    LLaMA never learned to read the image, colour 3-6 %; on captions alone it reads colour at
    64 %). Stage 2 keeps every caption_every-th training scene's caption as its own record (0:
    none), caption_repeats times, as LLaVA-1.5's instruction mix keeps captioning data (every
    caption twice, 19 % of stage 2's records, kept what stage 1 reads where every second once,
    6 %, lost a third of the sides: run e3, README). position_drill_images further
    scenes give stage 2 text-only drills of the length and direction arithmetic alone (0 by
    default: 4000 of them as a fourth stage-2 cycle, run r14, did not move the lengths beyond
    the intervals; README).
    """

    seed: int = 0
    image_size: int = 112
    render_size: int = 224
    train_images: int = 3000
    test_images: int = 100
    qa_per_image: int = 6
    test_qa_per_image: int = 4
    caption_every: int = 2
    caption_repeats: int = 1
    wording: str = "facts_all"
    naming: str = "per_question"
    drill_share: float = 0.5
    caption_drill_share: float = 0.0
    position_drill_images: int = 0

    def __post_init__(self):
        for name in ("drill_share", "caption_drill_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.caption_every < 0 or self.caption_repeats < 1:
            raise ValueError(f"caption_every must be >= 0 and caption_repeats >= 1, got "
                             f"{self.caption_every} and {self.caption_repeats}")
        if self.position_drill_images < 0:
            raise ValueError(f"position_drill_images must be >= 0, got "
                             f"{self.position_drill_images}")

    def train_config(self) -> WorldConfig:
        """The training split: qa_per_image questions, metric answers."""
        return self._config(self.qa_per_image, "metric", self.wording, self.naming)

    def test_config(self) -> WorldConfig:
        """The held-out split: test_qa_per_image questions, mixed units as the bench's."""
        return self._config(self.test_qa_per_image, "mixed")

    def _config(self, qa_per_image: int, units: str, wording: str = "varied",
                naming: str = "shared") -> WorldConfig:
        s = self.render_size
        scene = SceneConfig(width=s, height=s, min_objects=2, max_objects=3,
                            hfov_deg=(45.0, 60.0), distance_m=(2.0, 7.0), size_m=(0.4, 1.6))
        return WorldConfig(scene=scene, qa_per_image=qa_per_image,
                           min_region_pixels=max(25, s * s // 150), units=units,
                           wording=wording, naming=naming)


def caption(sample: WorldSample) -> str:
    """What stage 1 learns to say about an image: per region, its colour and shape and every fact
    a stage-2 answer states (synthetic/facts.py, worded the same way): forward distance, sideways
    offset, height of its centre above the ground, width, height and volume. E.g.
    "Region [0]: red box, 3.2 m ahead, 0.4 m right, 0.6 m up, 0.5 m wide, 0.8 m tall, 0.35 cubic
    metres."
    """
    parts = []
    for k, obj in enumerate(sample.regions):
        info = sample.rendering.objects[obj]
        facts = ", ".join(fact_phrase(info, q) for q in QUANTITIES)
        parts.append(f"Region [{k}]: {info.color} {info.shape}, {facts}.")
    return " ".join(parts)


DESCRIBE = "Describe the marked regions."


def _caption_record(sample: WorldSample, image: str, kind: str) -> dict:
    """A record whose one answer is caption(sample), every usable region drawn, asked for with
    DESCRIBE in the chat template of both stages (stage 1's "-caption", stage 2's "-describe",
    "-describe2" for a second copy, ...)."""
    return {"id": f"{sample.id}-{kind}", "image": image,
            "conversations": [{"from": "human", "value": "<image>\n" + DESCRIBE},
                              {"from": "gpt", "value": caption(sample)}],
            "regions": region_records(sample, sample.regions, with_masks=True)}


def drill_record(record_id: str, question: str, answer: str) -> dict | None:
    """A text-only drill of a question whose answer states facts before " So ": the facts move
    into the question (no image, no regions), the answer stays; None for other answers. The
    conclusion is then learned from the facts alone, as it is reached in a real answer."""
    if " So " not in answer:
        return None
    facts = answer.rsplit(" So ", 1)[0]
    return {"id": record_id + "-drill",
            "conversations": [{"from": "human", "value": f"{facts} {question}"},
                              {"from": "gpt", "value": answer}]}


def position_drills(world: DemoWorld) -> list[dict]:
    """Text-only drills of the lengths and directions computed from stated positions, from
    world.position_drill_images training-split scenes after the first train_images (scenes no
    record shows): per scene and per category of POSITION_FACTS, one pair of its usable regions
    (A, B) asked in the world's wording, its positions moved into the question (drill_record).
    The arithmetic from two stated positions to a length or a clock direction then sees scenes
    the image records never repeat. Empty unless the wording states positions ("facts_all")."""
    out: list[dict] = []
    if world.wording != "facts_all":
        return out
    cfg = world.train_config()
    for index in range(world.train_images, world.train_images + world.position_drill_images):
        sample = make_sample(world.seed, "train", index, cfg)
        usable = [sample.rendering.objects[i] for i in sample.regions]
        if len(usable) < 2:
            continue
        cam = sample.rendering.camera
        rng = np.random.default_rng([world.seed, 2, index])      # not a sample's own rng
        for category in POSITION_FACTS:
            order = rng.permutation(len(usable))
            a, b = usable[int(order[0])], usable[int(order[1])]
            qa = make_qa(category, a, b, (a.index, b.index), rng, cam.fx, cam.cx, cfg.units,
                         cfg.wording)
            drill = None if qa is None else drill_record(
                f"{sample.id}-{category}", qa.question, qa.answer)
            if drill is not None:
                out.append(drill)
    return out


def write_world(world: DemoWorld, out: str | Path) -> dict[str, Path]:
    """Write the train / caption / test files and the corpus under `out`; returns their paths."""
    out = Path(out)
    paths = {"train": out / "train" / "llava.json", "captions": out / "train" / "captions.json",
             "drills": out / "train" / "drills.json",
             "images": out / "train" / "images", "test": out / "test" / "bench.json",
             "test_images": out / "test" / "images", "corpus": out / "corpus.txt"}
    corpus: list[str] = [t.system for t in TEMPLATES.values() if t.system]
    captions: list[dict] = []
    extra: list[dict] = []                  # DESCRIBE records, then drills: after the questions
    drills: list[dict] = []                 # drill_share of the facts answers' drills (stage 2)
    all_drills: list[dict] = []             # every drill (stage 0)

    def tap(samples: Iterator[WorldSample]) -> Iterator[WorldSample]:
        for s in samples:
            if s.qas:
                captions.append(_caption_record(s, f"{s.id}.png", "caption"))
                corpus.extend((DESCRIBE, captions[-1]["conversations"][1]["value"]))
                if world.caption_every and (len(captions) - 1) % world.caption_every == 0:
                    extra.extend(_caption_record(s, f"{s.id}.png", "describe" if r == 0 else
                                                 f"describe{r + 1}")
                                 for r in range(world.caption_repeats))
            for j, qa in enumerate(s.qas):
                corpus.extend((qa.question, qa.answer))
                drill = drill_record(f"{s.id}-q{j}", qa.question, qa.answer)
                if drill is not None:
                    all_drills.append(drill)
                    corpus.append(drill["conversations"][0]["value"])
                    n = len(all_drills)          # drill_share of them in stage 2, evenly spaced
                    if int(n * world.drill_share) > int((n - 1) * world.drill_share):
                        drills.append(drill)
            yield s
        extra.extend(drills)
        extra.extend(more := position_drills(world))
        corpus.extend(d["conversations"][i]["value"] for d in more for i in (0, 1))

    train_cfg = world.train_config()
    per_question = world.naming == "per_question"
    write_llava_json(tap(iter_samples(world.train_images, world.seed, "train", train_cfg)),
                     paths["train"], paths["images"], extra=extra, per_question=per_question)
    # stage 1 keeps drilling the conclusion while the LLaMA learns to read the regions
    # (caption_drill_share drills per caption, evenly spaced over all drills)
    n = min(len(all_drills), round(world.caption_drill_share * len(captions)))
    stage1 = captions + [all_drills[i * len(all_drills) // n] for i in range(n)]
    paths["captions"].write_text(json.dumps(stage1), encoding="utf-8")
    paths["drills"].write_text(json.dumps(all_drills), encoding="utf-8")
    test_cfg = world.test_config()
    write_bench_json(iter_samples(world.test_images, world.seed, "test", test_cfg),
                     paths["test"], paths["test_images"])
    paths["corpus"].write_text("\n".join(corpus) + "\n", encoding="utf-8")
    log.info("world: %d training images, %d test images under %s", world.train_images,
             world.test_images, out)
    return paths

