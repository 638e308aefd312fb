"""The demo recipe learns: a very small SpatialGeo, built and trained from scratch the way the demo
model is (towers pretrained by spatialgeo_core.demo.towers, then `spatialgeo train` with
demo/configs/demo_stage1.yaml, where the adapters learn: stage 2 keeps them frozen), reads the
marked object of held-out scenes from the image: it names its colour well above chance (1 in 10).
200 steps are enough for that, not for its distance: measured on this test's 40 held-out scenes
(AVX2 EPYC, fp32, with demo_stage2.yaml when it still trained the adapters), the distances it
states are no better than always stating the training median (within 25 %: 87.5 % both; mean error
0.53 m vs 0.52 m), so this test claims colour only. The spatial quantities take the full demo
budget (README "Synthetic world and demo training"), too long for a test."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

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
from spatialgeo_core.synthetic.writers import llava_record  # noqa: E402
from spatialgeo_core.tiny import build_tokenizer  # noqa: E402
from spatialgeo_core.types import GenerationOptions, Region  # noqa: E402

SIZE = 56                                   # model input: 4 x 4 patches per tower
WORLD = WorldConfig(scene=SceneConfig(width=112, height=112, min_objects=1, max_objects=1,
                                      hfov_deg=(40.0, 50.0), distance_m=(1.5, 4.0),
                                      size_m=(0.6, 1.0), float_prob=0.0),
                    qa_per_image=1, min_regions=1, min_region_pixels=600)
QUESTION = "Describe Region [0]."
ANSWER = re.compile(r"Region \[0\]: (\w+) (\w+), ([\d.]+) m away")


def _describe(sample) -> str:
    info = sample.rendering.objects[sample.regions[0]]
    return f"Region [0]: {info.color} {info.shape}, {info.center_camera[2]:.1f} m away."


def _regions(sample):
    objects = sample.rendering.objects
    return [Region(box=tuple(float(v) for v in objects[o].box2d),
                   mask=sample.rendering.mask(o)) for o in sample.regions]


def test_tiny_demo_model_reads_the_marked_objects_colour(tmp_path, monkeypatch):
    torch.manual_seed(0)
    train = [s for s in iter_samples(600, 11, "train", WORLD) if len(s.regions) == 1]
    test = [s for s in iter_samples(40, 11, "test", WORLD) if len(s.regions) == 1]
    (tmp_path / "images").mkdir()
    records = []
    for s in train:
        Image.fromarray(s.rgb).save(tmp_path / "images" / f"{s.id}.png")
        rec = llava_record(s, f"{s.id}.png")
        rec.pop("qa_info")
        rec["conversations"] = [{"from": "human", "value": "<image>\n" + QUESTION},
                                {"from": "gpt", "value": _describe(s)}]
        records.append(rec)
    (tmp_path / "train.json").write_text(json.dumps(records))
    corpus = [QUESTION] + [r["conversations"][1]["value"] for r in records]
    vocab = 320
    tok = build_tokenizer(tmp_path / "tok", vocab_size=vocab, corpus=corpus).parent

    cfg = demo_config(vocab, geometry=True, image_size=SIZE)
    model = SpatialGeoForCausalLM(cfg)
    data = tower_data(300, 11, cfg, WORLD)
    semantic = pretrain_semantic(model.clip_tower, data, steps=150, seed=0)
    geometry = pretrain_geometry(model.geo_tower, data, steps=150, seed=0)
    assert semantic["colour_acc_objects"] > 0.5, semantic
    assert geometry["metric_depth_abs_rel"] < 0.4, geometry
    assert geometry["colour_acc_objects"] > 1.5 / len(PALETTE), geometry  # DINOv2-like: it sees
    save_ours(tmp_path / "init", cfg, model.state_dict(), tokenizer_dir=tok)

    monkeypatch.setenv("SPATIALGEO_INIT", str(tmp_path / "init"))
    monkeypatch.setenv("SPATIALGEO_OUTPUT", str(tmp_path / "run"))
    monkeypatch.setenv("SPATIALGEO_DATA", str(tmp_path))
    assert main(["train", "--config", str(CONFIG_DIR / "demo_stage1.yaml"),
                 "--set", f"data.json_path={tmp_path / 'train.json'}",
                 "--set", f"data.image_folder={tmp_path / 'images'}",
                 "--set", "optim.max_steps=200", "--set", "run.log_every=1000",
                 "--set", "run.precision=fp32"]) == 0

    from spatialgeo_core.pipeline import SpatialGeoPipeline
    pipe = SpatialGeoPipeline.from_pretrained(tmp_path / "run" / "export" / "merged")
    colours, formats = [], []
    for s in test:
        info = s.rendering.objects[s.regions[0]]
        text = pipe.answer(s.rgb, QUESTION, regions=_regions(s),
                           options=GenerationOptions(max_new_tokens=48)).text
        m = ANSWER.search(text)
        formats.append(m is not None)
        colours.append(m is not None and m.group(1) == info.color)
    colour_acc = float(np.mean(colours))
    chance = 1 / len(PALETTE)
    assert np.mean(formats) >= 0.9                          # it learned the answer's form
    assert colour_acc >= 3 * chance, f"colour accuracy {colour_acc:.2f} on {len(test)} scenes"
