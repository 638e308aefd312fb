"""What the model saw (spatialgeo_core.annotate) and `spatialgeo ask --depth/--intrinsics/
--annotate`: the exact set-of-marks image the pipeline encodes, the text panel, the regions'
positions in text and JSON, and every bad depth input as exit code 2 before the model loads."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from spatialgeo_core.annotate import annotated_image
from spatialgeo_core.cli import main
from spatialgeo_core.depth import depth_from_array
from spatialgeo_core.intrinsics import CameraIntrinsics
from spatialgeo_core.region_positions import RegionPosition, region_positions
from spatialgeo_core.regions import PALETTE, draw_regions
from spatialgeo_core.synthetic.depth_truth import depth_array, region_truth
from spatialgeo_core.synthetic.world import make_sample
from spatialgeo_core.types import Region


@pytest.fixture(scope="module")
def sample():
    return make_sample(0, "test", 2)


def _regions(sample) -> list[Region]:
    return [Region(box=tuple(sample.rendering.objects[o].box2d)) for o in sample.regions[:2]]


def test_the_image_part_is_what_the_pipeline_encodes(tiny_pipeline, sample, monkeypatch):
    regions = _regions(sample)
    seen = []
    original = tiny_pipeline.processor.image
    monkeypatch.setattr(tiny_pipeline.processor, "image",
                        lambda img: seen.append(np.asarray(img).copy()) or original(img))
    tiny_pipeline.encode(sample.rgb, regions)
    out = np.asarray(annotated_image(sample.rgb, regions, "How far?", "2 m."))
    h, w = sample.rgb.shape[:2]
    assert len(seen) == 1
    np.testing.assert_array_equal(out[:h], seen[0])                  # pixel for pixel
    np.testing.assert_array_equal(out[:h], np.asarray(draw_regions(sample.rgb, regions)))
    assert out.shape[1] == w and out.shape[0] > h


def test_the_panel_holds_question_answer_and_positions(sample):
    regions = _regions(sample)
    h = sample.rgb.shape[0]
    a = np.asarray(annotated_image(sample.rgb, regions, "How far apart are they?", "2 m."))
    b = np.asarray(annotated_image(sample.rgb, regions, "How far apart are they?", "7 m."))
    assert a.shape == b.shape and (a[h:] != b[h:]).any()             # the answer is written
    assert len(np.unique(a[h:].reshape(-1, 3), axis=0)) > 2          # text, not a blank panel
    positions = [RegionPosition(True, (0.1, 0.2, 3.0), (0.4, 0.5, 0.2), 90, 100),
                 RegionPosition(False, None, None, 0, 40, "none of its 40 pixels ...")]
    c = np.asarray(annotated_image(sample.rgb, regions, "q?", "a.", positions))
    panel = c[h:].reshape(-1, 3)
    for i in range(2):                                    # a line per region in its colour
        assert (panel == PALETTE[i]).all(axis=1).any(), i
    long = np.asarray(annotated_image(sample.rgb, regions, "why " * 200, "because " * 200))
    assert long.shape[0] > c.shape[0]                     # wrapped, not cut


def _ask_files(tmp_path, sample):
    cam = sample.rendering.camera
    Image.fromarray(sample.rgb).save(tmp_path / "rgb.png")
    Image.fromarray(depth_array(sample.rendering, "16UC1")).save(tmp_path / "depth.png")
    intrinsics = f"{cam.fx},{cam.fy},{cam.cx},{cam.cy}"
    boxes = [",".join(str(v) for v in sample.rendering.objects[o].box2d)
             for o in sample.regions[:2]]
    return intrinsics, boxes


def test_ask_prints_the_region_positions(tiny_dir, tmp_path, capsys, sample):
    intrinsics, boxes = _ask_files(tmp_path, sample)
    argv = ["ask", "--model-path", str(tiny_dir), "--image", str(tmp_path / "rgb.png"),
            "--question", "How far is Region [0] from Region [1]?", "--region", boxes[0],
            "--region", boxes[1], "--depth", str(tmp_path / "depth.png"), "--intrinsics",
            intrinsics, "--max-new-tokens", "4"]
    assert main(argv + ["--json", "--annotate", str(tmp_path / "seen.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    cam = sample.rendering.camera
    expected = region_positions(
        depth_from_array(depth_array(sample.rendering, "16UC1")), _regions(sample),
        CameraIntrinsics(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height))
    assert [e["region"] for e in out["regions_3d"]] == [0, 1]
    for entry, position, obj in zip(out["regions_3d"], expected, sample.regions, strict=False):
        assert entry["valid"] and entry["valid_pixels"] == position.valid_pixels > 0
        np.testing.assert_allclose(entry["center_m"], position.center_m, atol=1e-4)
        np.testing.assert_allclose(entry["size_m"], position.size_m, atol=1e-4)
        truth = region_truth(sample.rendering, obj)["visible_median_m"]
        assert np.linalg.norm(np.subtract(entry["center_m"], truth)) < 0.10
    seen = np.asarray(Image.open(tmp_path / "seen.png"))
    h = sample.rgb.shape[0]
    np.testing.assert_array_equal(seen[:h], np.asarray(draw_regions(sample.rgb,
                                                                    _regions(sample))))
    assert main(argv) == 0                                          # text: answer, then lines
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("Region [0]: x ") and lines[-1].startswith("Region [1]: x ")
    assert main(argv[:-6] + ["--max-new-tokens", "4", "--json"]) == 0       # no --depth
    assert "regions_3d" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("change, match", [
    ({"--intrinsics": None}, "--depth needs --intrinsics"),
    ({"--depth": None}, "--intrinsics and --depth-scale go with --depth"),
    ({"--intrinsics": "100,100,50"}, "fx,fy,cx,cy"),
    ({"--intrinsics": "0,100,50,50"}, "fx must be"),
    ({"--depth": "small.png"}, "must be registered to the colour image"),
    ({"--depth": "rgb.png"}, "is a RGB image"),
    ({"--depth": "missing.png"}, "does not exist"),
    ({"--depth-scale": "-2"}, "scale"),
])
def test_bad_depth_inputs_are_exit_2_before_the_model_loads(tmp_path, capsys, sample, change,
                                                           match):
    intrinsics, boxes = _ask_files(tmp_path, sample)
    Image.fromarray(np.ones((8, 8), np.uint16)).save(tmp_path / "small.png")
    args = {"--image": "rgb.png", "--question": "Is Region [0] near?", "--region": boxes[0],
            "--depth": "depth.png", "--intrinsics": intrinsics}
    args.update(change)
    argv = ["ask", "--model-path", str(tmp_path / "no-model-here")]
    for flag, value in args.items():
        if value is not None:
            argv += [flag, str(tmp_path / value) if value.endswith(".png") else value]
    assert main(argv) == 2                          # the model path does not exist: not reached
    err = capsys.readouterr().err
    assert err.startswith("spatialgeo ask: error:") and match in err, err
