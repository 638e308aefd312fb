"""The training loader draws a record's `regions` as set-of-marks, exactly as serving does."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from spatialgeo_core.conversation import get_template  # noqa: E402
from spatialgeo_core.processor import Processor, preprocess_image  # noqa: E402
from spatialgeo_core.regions import draw_regions  # noqa: E402
from spatialgeo_core.synthetic import SceneConfig, WorldConfig, make_sample  # noqa: E402
from spatialgeo_core.synthetic.writers import write_llava_json  # noqa: E402
from spatialgeo_core.tiny import build_tiny_checkpoint  # noqa: E402
from spatialgeo_core.tokenizer import LlamaTokenizer  # noqa: E402
from spatialgeo_core.training.data import LlavaDataset, Skipped  # noqa: E402
from spatialgeo_core.types import Region  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    ckpt = build_tiny_checkpoint(tmp / "model")
    from spatialgeo_core.config import SpatialGeoConfig
    cfg = SpatialGeoConfig.load(ckpt)
    world = WorldConfig(scene=SceneConfig(width=56, height=56), qa_per_image=2)
    sample = make_sample(0, "train", 3, world)
    write_llava_json([sample], tmp / "llava.json", tmp / "images")
    proc = Processor(cfg, LlamaTokenizer.from_dir(ckpt))
    return tmp, cfg, proc, sample


def test_regions_are_drawn_like_the_pipeline(setup):
    tmp, cfg, proc, sample = setup
    ds = LlavaDataset(tmp / "llava.json", tmp / "images", proc, get_template("vicuna_v1"))
    got = ds[0]
    regions = [Region(box=tuple(float(v) for v in sample.rendering.objects[o].box2d),
                      mask=sample.rendering.mask(o)) for o in sample.regions]
    want = preprocess_image(draw_regions(sample.rgb, regions), cfg)
    plain = preprocess_image(sample.rgb, cfg)
    assert torch.equal(got.pixel_values, want)
    assert not torch.equal(got.pixel_values, plain)


def test_bad_regions_skip_the_record(setup):
    tmp, cfg, proc, sample = setup
    records = json.loads((tmp / "llava.json").read_text())
    records[0]["regions"] = [{"box": [0, 0, 999, 5]}]
    (tmp / "bad.json").write_text(json.dumps(records))
    ds = LlavaDataset(tmp / "bad.json", tmp / "images", proc, get_template("vicuna_v1"))
    item = ds[0]
    assert isinstance(item, Skipped) and item.reason == "malformed"
    assert np.isfinite(len(item.detail))
