"""The demo recipe learns what the demo is for, at a very small size (56 px, two objects, a few
hundred steps through `spatialgeo train` with training/configs/demo_stage2.yaml, towers
pretrained by spatialgeo_core.demo.towers, fp32):

- comparisons in the facts wording (each region's sideways offset, then "So Region [0] is to the
  left of Region [1]."), asked as held-out items name regions: right more often than chance (50 %)
  by a margin;
- a single region's colour and forward distance ("Describe Region [0]." -> "Region [0]: red box,
  3.1 m ahead."): the colour above chance (1 in 10) and the distance within 25 % more often than
  always answering the training median does.

The full recipe (spatialgeo_core.demo.reproduce) takes the same path at 112 px with every
category; its numbers are in the README."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from spatialgeo_core.answer_parsing import parse_choice, parse_predicate  # noqa: E402
from spatialgeo_core.checkpoint.ours import save_ours  # noqa: E402
from spatialgeo_core.cli import main  # noqa: E402
from spatialgeo_core.demo.reproduce import CONFIG_DIR  # noqa: E402
from spatialgeo_core.demo.towers import (  # noqa: E402
    demo_config,
    pretrain_geometry,
    pretrain_semantic,
    tower_data,
)
from spatialgeo_core.model import SpatialGeoForCausalLM  # noqa: E402
from spatialgeo_core.synthetic import PALETTE, SceneConfig, WorldConfig, iter_samples  # noqa: E402
from spatialgeo_core.synthetic.facts import fact_phrase, quantity  # noqa: E402
from spatialgeo_core.synthetic.questions import make_qa  # noqa: E402
from spatialgeo_core.synthetic.writers import region_records  # noqa: E402
from spatialgeo_core.tiny import build_tokenizer  # noqa: E402
from spatialgeo_core.types import GenerationOptions, Region  # noqa: E402

SIZE = 56                                   # model input: 4 x 4 patches per tower
WORLD = WorldConfig(scene=SceneConfig(width=112, height=112, min_objects=2, max_objects=2,
                                      hfov_deg=(50.0, 60.0), distance_m=(2.0, 5.0),
                                      size_m=(0.6, 1.0), float_prob=0.0),
                    qa_per_image=1, min_regions=2, min_region_pixels=150)
CATEGORIES = ("left_predicate", "right_predicate", "left_choice", "right_choice")
DESCRIBE = "Describe Region [0]."
DESCRIPTION = re.compile(r"Region \[0\]: (\w+) \w+, ([\d.]+) m ahead")


def _describe(info) -> str:
    return f"Region [0]: {info.color} {info.shape}, {fact_phrase(info, 'ahead')}."


def _comparison(sample, rng):
    """A left/right question about the sample's two objects, in the held-out naming, worded
    "facts"; None when the answer is not clear by the margins."""
    a, b = (sample.rendering.objects[o] for o in rng.permutation(sample.regions))
    cam = sample.rendering.camera
    return make_qa(CATEGORIES[int(rng.integers(4))], a, b, (a.index, b.index), rng,
                   fx=cam.fx, cx=cam.cx, units="metric", wording="facts")


def _regions(sample, objects):
    return [Region(box=tuple(float(v) for v in sample.rendering.objects[o].box2d),
                   mask=sample.rendering.mask(o)) for o in objects]


def _records(samples, rng):
    records = []
    for s in samples:
        qa = _comparison(s, rng)
        if qa is not None:
            records.append({"id": s.id + "-cmp", "image": f"{s.id}.png",
                            "regions": region_records(s, qa.regions, with_masks=True),
                            "conversations": [
                                {"from": "human", "value": "<image>\n" + qa.question},
                                {"from": "gpt", "value": qa.answer}]})
        obj = s.regions[int(rng.integers(2))]
        records.append({"id": s.id + "-desc", "image": f"{s.id}.png",
                        "regions": region_records(s, (obj,), with_masks=True),
                        "conversations": [
                            {"from": "human", "value": "<image>\n" + DESCRIBE},
                            {"from": "gpt", "value": _describe(s.rendering.objects[obj])}]})
    return records


def test_tiny_demo_model_compares_two_regions_and_reads_one(tmp_path, monkeypatch):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [s for s in iter_samples(700, 11, "train", WORLD) if len(s.regions) == 2]
    test = [s for s in iter_samples(60, 11, "test", WORLD) if len(s.regions) == 2][:40]
    (tmp_path / "images").mkdir()
    for s in train:
        Image.fromarray(s.rgb).save(tmp_path / "images" / f"{s.id}.png")
    records = _records(train, rng)
    (tmp_path / "train.json").write_text(json.dumps(records))
    corpus = [t["value"] for r in records for t in r["conversations"]]
    vocab = 320
    tok = build_tokenizer(tmp_path / "tok", vocab_size=vocab, corpus=corpus).parent

    cfg = demo_config(vocab, geometry=True, image_size=SIZE)
    model = SpatialGeoForCausalLM(cfg)
    data = tower_data(300, 11, cfg, WORLD)
    semantic = pretrain_semantic(model.clip_tower, data, steps=150, seed=0)
    geometry = pretrain_geometry(model.geo_tower, data, steps=150, seed=0)
    assert semantic["colour_acc_objects"] > 0.5, semantic
    assert geometry["metric_depth_abs_rel"] < 0.4, geometry
    save_ours(tmp_path / "init", cfg, model.state_dict(), tokenizer_dir=tok)

    monkeypatch.setenv("SPATIALGEO_INIT", str(tmp_path / "init"))
    monkeypatch.setenv("SPATIALGEO_OUTPUT", str(tmp_path / "run"))
    monkeypatch.setenv("SPATIALGEO_DATA", str(tmp_path))
    assert main(["train", "--config", str(CONFIG_DIR / "demo_stage2.yaml"),
                 "--set", f"data.json_path={tmp_path / 'train.json'}",
                 "--set", f"data.image_folder={tmp_path / 'images'}",
                 "--set", "optim.max_steps=400", "--set", "run.log_every=1000",
                 "--set", "run.precision=fp32", "--set", "stage.feature_drop_prob=0"]) == 0

    from spatialgeo_core.pipeline import SpatialGeoPipeline
    pipe = SpatialGeoPipeline.from_pretrained(tmp_path / "run" / "export" / "merged")
    options = GenerationOptions(max_new_tokens=48)
    right, colours, within, prior = [], [], [], []
    median = float(np.median([quantity(s.rendering.objects[o], "ahead")
                              for s in train for o in s.regions]))
    eval_rng = np.random.default_rng(1)
    for s in test:
        qa = _comparison(s, eval_rng)
        if qa is not None:
            text = pipe.answer(s.rgb, qa.question, regions=_regions(s, qa.regions),
                               options=options).text
            if qa.category.endswith("predicate"):
                right.append(parse_predicate(text, qa.category, qa.question) is qa.value)
            else:
                right.append(parse_choice(text, qa.question, qa.category)
                             == qa.region_name(qa.value))
        obj = s.regions[0]
        info = s.rendering.objects[obj]
        said = DESCRIPTION.search(pipe.answer(s.rgb, DESCRIBE, regions=_regions(s, (obj,)),
                                              options=options).text)
        truth = quantity(info, "ahead")
        colours.append(said is not None and said.group(1) == info.color)
        within.append(said is not None and 0.75 * truth <= float(said.group(2)) <= 1.25 * truth)
        prior.append(0.75 * truth <= median <= 1.25 * truth)
    comparison, colour = float(np.mean(right)), float(np.mean(colours))
    distance, median_rate = float(np.mean(within)), float(np.mean(prior))
    print(f"comparisons {comparison:.2f} on {len(right)} (chance 0.5); colour {colour:.2f} "
          f"(chance {1 / len(PALETTE):.2f}); distance within 25 % {distance:.2f} (training "
          f"median {median_rate:.2f}) on {len(test)} scenes")
    assert len(right) >= 30
    assert comparison >= 0.7, comparison
    assert colour >= 3 / len(PALETTE), colour
    assert distance >= median_rate + 0.1, (distance, median_rate)
