"""SpatialScore v0 items about the synthetic world (VGBench's depth and distance tasks), with
their images, in the layout upstream reads: `<root>/dataset/VGBench/synthetic/<id>.png` and
`img_paths` "./dataset/VGBench/synthetic/<id>.png".

Per sample (two usable objects A and B, boxes written as VGBench writes them):

- metric depth, open-ended and judgment: the mean z-depth of the pixels in A's box ("1.72
  meters"; "Does the area ... have a depth of around 3.2 meters?");
- object distance, open-ended, multiple choice and judgment: the distance between A's and B's
  3-D centres;
- relative depth, multiple choice: which box holds the object with the largest depth (its
  centre's z in the camera frame); the boxes are written in the options.

With `others=True` the file also gets, per sample, a SpatialSense yes/no question (is A left of
B) and, once, a multi-image (VGBench) and a video (VSI-Bench_8) item, which the evaluation
skips. Answers are exact: these items check the plumbing, and a model's score on them says how
well it reads synthetic depth and distance, not how it does on SpatialScore.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from spatialgeo_core.synthetic.questions import center_distance, relation_holds
from spatialgeo_core.synthetic.render import ObjectInfo
from spatialgeo_core.synthetic.world import WorldSample
from spatialgeo_core.synthetic.writers import save_png

IMAGE_DIR = "dataset/VGBench/synthetic"
FIRST_INDEX = 100_000           # v0 indices of generated items start here
DEPTH = ("Depth and Distance", "Absolute")


def _box_ints(info: ObjectInfo) -> str:
    x1, y1, x2, y2 = info.box2d
    return f"({x1}, {y1}, {x2}, {y2})"


def _box_floats(info: ObjectInfo) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in info.box2d) + ")"


def mean_box_depth(sample: WorldSample, info: ObjectInfo) -> float:
    """Mean z-depth (m) of the finite-depth pixels inside an object's box."""
    x1, y1, x2, y2 = info.box2d
    depth = sample.rendering.depth[y1:y2, x1:x2]                      # [h, w]
    return float(depth[np.isfinite(depth)].mean())


def _options(true_value: float, rng: np.random.Generator) -> tuple[str, str]:
    """Four "X meters" options (the true one and three wrong by a factor >= 1.6), shuffled;
    (options text, the true option's letter)."""
    values = [true_value, true_value * 0.5, true_value * 1.6, true_value * 2.5]
    order = rng.permutation(4)
    letters = "ABCD"
    text = "\n".join(f"{letters[k]}: {values[i]:.2f} meters" for k, i in enumerate(order))
    return text, letters[int(np.flatnonzero(order == 0)[0])]


def _item(index: int, qtype: str, question: str, answer: str, image: str, origin: str,
          category: tuple[str, str] = DEPTH, source: str = "VGBench",
          modality: str = "single-image", paths: list[str] | None = None) -> dict:
    return {"index": index, "category": category[0], "subcategory": category[1],
            "question_type": qtype, "input_modality": modality, "question": question,
            "answer": answer, "img_paths": paths or [image], "source": source,
            "index_origin": f"{Path(image).stem}-{origin}", "category_origin": origin}


def sample_items(sample: WorldSample, image: str, first_index: int, others: bool = False,
                 rng: np.random.Generator | None = None) -> list[dict]:
    """The v0 items of one sample (none when it has fewer than two usable objects)."""
    if len(sample.regions) < 2:
        return []
    rng = rng or np.random.default_rng(sample.index)
    a, b = (sample.rendering.objects[k] for k in sample.regions[:2])
    depth = mean_box_depth(sample, a)
    dist = center_distance(a, b)
    pair = (f"the objects located within the 2D areas with red bounding box {_box_floats(a)} "
            f"and with blue bounding box {_box_floats(b)} in the image")
    yes = sample.index % 2 == 0                       # judgments alternate yes / no per sample
    told_depth = depth if yes else depth * 2.0
    told_dist = dist if yes else dist * 2.5
    options, letter = _options(dist, rng)
    deeper = max((a, b), key=lambda o: o.center_camera[2])
    idx = iter(range(first_index, first_index + 100))
    items = [
        _item(next(idx), "open-ended",
              f"How deep is the area defined by the bounding box coordinates {_box_ints(a)}, "
              f"measured in meters?\nYou need to calculate the depth for the area specified by "
              f"the bounding box {_box_ints(a)}. Give the mean depth in meters.",
              f"{depth:.2f} meters", image, "metric_depth_vqa"),
        _item(next(idx), "judgment",
              f"Does the area within the bounding box coordinates {_box_ints(a)} have a depth "
              f"of around {told_depth:.1f} meters?\nYour objective is to verify whether the "
              f"given depth measurement for the designated area is accurate. Respond with Yes "
              f"or No.", "Yes" if yes else "No", image, "metric_depth_vqa"),
        _item(next(idx), "open-ended",
              f"How far apart are the centers of {pair}, measured in meters?\nDetermine the "
              f"actual distance in three-dimensional space between two two-dimensional areas. "
              f"Provide the answer in meters.", f"{dist:.2f} meters", image,
              "object_distance_open_ended_vqa"),
        _item(next(idx), "multi-choice",
              f"What is the distance between the centers of {pair}?\nChoose the right option "
              f"from these choices.\n{options}", letter, image,
              "object_distance_multiple_choice_vqa"),
        _item(next(idx), "judgment",
              f"Are the centers of {pair} about {told_dist:.2f} meters apart?\nRespond with Yes "
              f"or No.", "Yes" if yes else "No", image, "object_distance_yes_no_vqa"),
        _item(next(idx), "multi-choice",
              f"Which of the provided bounding boxes indicates the deepest region?\nChoose the "
              f"right option from these choices.\nA: {_box_ints(a)}\nB: {_box_ints(b)}",
              "A" if deeper is a else "B", image, "relative_depth_vqa",
              category=("Depth and Distance", "Relative")),
    ]
    if others:
        cam = sample.rendering.camera
        left = relation_holds("left", a, b, fx=cam.fx, cx=cam.cx)
        if left is not None:
            items.append(_item(
                next(idx), "judgment",
                f"Is the {a.color} {a.shape} to the left of the {b.color} {b.shape}? Answer "
                f"with Yes or No.", "Yes" if left else "No", image, "spatial_relation",
                category=("3D Positional Relation", "Orientation"), source="SpatialSense"))
    return items


def skipped_items(image: str, first_index: int) -> list[dict]:
    """A multi-image (VGBench tracking) and a video (VSI-Bench_8, 8 frames) item about `image`,
    which the evaluation counts as skipped."""
    return [
        _item(first_index, "multi-choice",
              "The first image shows a red marker. Which point in the second image represents "
              "the identical 3D location as this red marker?\nA: Point A\nB: Point B", "A",
              image, "tracking_vqa_pairs", category=("Point and Object Tracking", "3D Tracking"),
              modality="multi-images", paths=[image, image]),
        _item(first_index + 1, "open-ended", "How many objects are in this room?", "3", image,
              "object_counting", category=("Counting", "Object Counting"), source="VSI-Bench_8",
              modality="video", paths=[image] * 8),
    ]


def write_spatialscore_json(samples: Iterable[WorldSample], path: str | Path,
                            root: str | Path, others: bool = False) -> Path:
    """Save each sample's image under root/dataset/VGBench/synthetic/ and write its v0 items
    to path (a JSON list; evaluate with --root root). Returns the path."""
    root, path = Path(root), Path(path)
    items: list[dict] = []
    image = None
    for sample in samples:
        image = f"./{IMAGE_DIR}/{sample.id}.png"
        save_png(sample.rgb, root / IMAGE_DIR / f"{sample.id}.png")
        items += sample_items(sample, image, FIRST_INDEX + len(items), others)
    if others and image is not None:
        items += skipped_items(image, FIRST_INDEX + len(items))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path
