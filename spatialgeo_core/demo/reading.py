"""What the demo model reads of each region on held-out scenes: the single-region family.

Every stage-2 answer of the demo is built from per-region facts (synthetic/facts.py) that stage 1
teaches through captions. This evaluation asks the caption question of stage 2 ("Describe the
marked regions.", every usable region drawn) about held-out scenes and reads back, per region,
its colour, shape and facts:

- ahead (distance from the camera along the ground), wide, tall, volume: success when within
  25 % of the truth (the bench's rule for lengths), and the median relative error;
- side: the side (left/right of the camera's axis) right, and the median absolute error in m;
- up: the median absolute error in m.

Each is set beside what always answering the training scenes' median would score (the prior a
model that does not look gets). A region whose description is missing or unreadable counts as a
failure for every fact.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from spatialgeo_core.eval.metrics import SUCCESS_HIGH, SUCCESS_LOW
from spatialgeo_core.synthetic.facts import quantity

RELATIVE = ("ahead", "wide", "tall", "volume")          # scored within 25 %
_DESCRIPTION = re.compile(
    r"Region \[(\d+)\]: (\w+) (\w+), ([\d.]+) m ahead, ([\d.]+) m (left|right), (-?[\d.]+) m up, "
    r"([\d.]+) m wide, ([\d.]+) m tall, ([\d.]+) cubic metres")


def read_description(text: str) -> dict[int, dict]:
    """Region index -> {colour, shape, ahead, side, up, wide, tall, volume} of a caption-form
    answer (side signed: negative is left); regions not described are absent."""
    out: dict[int, dict] = {}
    for k, colour, shape, y, x, side, z, w, h, v in _DESCRIPTION.findall(text):
        out.setdefault(int(k), {
            "colour": colour, "shape": shape, "ahead": float(y),
            "side": float(x) * (-1.0 if side == "left" else 1.0), "up": float(z),
            "wide": float(w), "tall": float(h), "volume": float(v)})
    return out


def _within(pred: float, truth: float) -> bool:
    """The bench's rule for a length: within 25 % of the truth (eval/metrics.py)."""
    return SUCCESS_LOW * truth <= pred <= SUCCESS_HIGH * truth


def score_reading(truths: Sequence[dict], preds: Sequence[dict | None],
                  medians: dict[str, float]) -> dict:
    """Percentages over regions (truths[i]: the region's exact values + colour/shape; preds[i]:
    what the model said, None when it said nothing readable) and the median prior's."""
    pairs = list(zip(truths, preds, strict=True))
    said = [(t, p) for t, p in pairs if p is not None]
    if not pairs:
        raise ValueError("no region to score")

    def pct(flags) -> float:
        return round(100.0 * sum(flags) / len(pairs), 1)

    def median(values) -> float | None:
        values = list(values)
        return round(float(np.median(values)), 3) if values else None

    out: dict = {"regions": len(pairs), "described_pct": pct(p is not None for _, p in pairs),
                 "colour_pct": pct(p["colour"] == t["colour"] for t, p in said),
                 "shape_pct": pct(p["shape"] == t["shape"] for t, p in said)}
    for q in RELATIVE:
        out[q] = {"within_25_pct": pct(_within(p[q], t[q]) for t, p in said),
                  "median_prior_within_25_pct": pct(_within(medians[q], t[q]) for t in truths),
                  "median_rel_error": median(abs(p[q] - t[q]) / t[q] for t, p in said)}
    out["side"] = {"side_right_pct": pct((p["side"] >= 0) == (t["side"] >= 0) for t, p in said),
                   "median_abs_error_m": median(abs(p["side"] - t["side"]) for t, p in said)}
    out["up"] = {"median_abs_error_m": median(abs(p["up"] - t["up"]) for t, p in said),
                 "median_prior_abs_error_m": median(abs(medians["up"] - t["up"])
                                                    for t in truths)}
    return out


def region_truth(info) -> dict:
    return {"colour": info.color, "shape": info.shape,
            **{q: quantity(info, q) for q in ("ahead", "side", "up", "wide", "tall", "volume")}}


def answer_with(load: Callable) -> Callable:
    """The `answer` evaluate_reading asks for, by the SpatialGeoPipeline that load() gives (called
    once, at the first question): (rgb, question, regions, max_new_tokens) -> its text, through
    the one path from a frame to an answer that the node and the bench use."""
    from spatialgeo_core.types import GenerationOptions
    pipe = []

    def answer(rgb, question: str, regions, max_new_tokens: int) -> str:
        pipe[:] = pipe or [load()]
        return pipe[0].answer(rgb, question, regions=regions,
                              options=GenerationOptions(max_new_tokens=max_new_tokens)).text

    return answer


def evaluate_reading(answer: Callable, world, scenes: int, describe: str,
                     max_new_tokens: int) -> dict:
    """Ask `describe` about held-out scenes 0..scenes-1 of `world` (a demo.data.DemoWorld) and
    score what comes back. answer(rgb, question, regions, max_new_tokens) -> text."""
    from spatialgeo_core.synthetic import iter_samples
    from spatialgeo_core.types import Region

    train = [o for s in iter_samples(min(300, world.train_images), world.seed, "train",
                                     world.train_config())
             for o in (s.rendering.objects[k] for k in s.regions)]
    medians = {q: float(np.median([quantity(o, q) for o in train]))
               for q in ("ahead", "side", "up", "wide", "tall", "volume")}
    truths, preds = [], []
    for sample in iter_samples(scenes, world.seed, "test", world.test_config()):
        objects = sample.rendering.objects
        regions = [Region(box=tuple(float(v) for v in objects[o].box2d),
                          mask=sample.rendering.mask(o)) for o in sample.regions]
        said = read_description(answer(sample.rgb, describe, regions, max_new_tokens))
        for k, obj in enumerate(sample.regions):
            truths.append(region_truth(objects[obj]))
            preds.append(said.get(k))
    return {"scenes": scenes, **score_reading(truths, preds, medians), "train_medians": medians}
