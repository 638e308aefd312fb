"""Synthetic world writers: LLaVA JSON, SpatialRGPT-Bench JSON round trip, ROS 2 bags in both
storage formats with raw and compressed images and registered depth (16UC1, 32FC1),
questions.jsonl with its 3D ground truth, and `make-world`."""
import argparse
import json

import numpy as np
import pytest
from PIL import Image

from spatialgeo_core.errors import ConfigError
from spatialgeo_core.eval.spatialrgpt.format import decode_rle, read_bench, reference_value
from spatialgeo_core.image_msgs import depth_to_meters
from spatialgeo_core.synthetic import cli as world_cli
from spatialgeo_core.synthetic import (
    iter_samples,
    write_bag,
    write_bench_json,
    write_llava_json,
    write_scene_metadata,
)
from spatialgeo_core.synthetic.depth_truth import region_truth
from spatialgeo_core.synthetic.writers import (
    DEFAULT_DEPTH_TOPIC,
    DEFAULT_PERIOD_NS,
    DEFAULT_START_NS,
)

# pycocotools' decode trips a NumPy 2 deprecation inside the library itself
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def train():
    return list(iter_samples(4, 7, "train"))


@pytest.fixture(scope="module")
def test_samples():
    return list(iter_samples(4, 7, "test"))


def test_llava_json_records_images_and_regions(tmp_path, train):
    path = write_llava_json(train, tmp_path / "train.json", tmp_path / "images")
    records = json.loads(path.read_text())
    assert len(records) == len(train)
    for rec, sample in zip(records, train, strict=True):
        assert set(rec) == {"id", "image", "conversations", "regions", "qa_info"}
        assert rec["id"] == sample.id
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * len(sample.qas)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        assert [t["value"] for t in turns[1::2]] == [qa.answer for qa in sample.qas]
        assert [q["category"] for q in rec["qa_info"]] == [qa.category for qa in sample.qas]
        image = np.asarray(Image.open(tmp_path / "images" / rec["image"]))
        np.testing.assert_array_equal(image, sample.rgb)                 # no marks drawn
        assert len(rec["regions"]) == len(sample.regions)
        for region, obj in zip(rec["regions"], sample.regions, strict=True):
            assert region["box"] == list(sample.rendering.objects[obj].box2d)
            mask = decode_rle(region["mask_rle"], *sample.rgb.shape[:2])
            np.testing.assert_array_equal(mask, sample.rendering.mask(obj))
    boxes_only = json.loads(write_llava_json(train[:1], tmp_path / "b.json", tmp_path / "images",
                                             with_masks=False).read_text())
    assert all(set(r) == {"box"} for r in boxes_only[0]["regions"])


def test_scene_metadata_lines(tmp_path, train):
    lines = write_scene_metadata(train, tmp_path / "scenes.jsonl").read_text().splitlines()
    assert len(lines) == len(train)
    for line, sample in zip(lines, train, strict=True):
        meta = json.loads(line)
        assert meta["id"] == sample.id and meta["regions"] == list(sample.regions)
        assert len(meta["objects"]) == len(meta["scene"]["objects"]) == len(
            sample.rendering.objects)
        assert meta["objects"][0]["size"].keys() == {"width", "height", "depth"}
        assert [q["answer"] for q in meta["qas"]] == [qa.answer for qa in sample.qas]


def test_llava_json_per_question_draws_only_the_asked_regions(tmp_path, test_samples):
    path = write_llava_json(test_samples, tmp_path / "q.json", tmp_path / "images",
                            per_question=True)
    records = json.loads(path.read_text())
    qas = [(s, j, qa) for s in test_samples for j, qa in enumerate(s.qas)]
    assert len(records) == len(qas) > len(test_samples)
    for rec, (sample, j, qa) in zip(records, qas, strict=True):
        assert rec["id"] == f"{sample.id}-q{j}" and rec["image"] == f"{sample.id}.png"
        assert [t["value"] for t in rec["conversations"]] == ["<image>\n" + qa.question,
                                                              qa.answer]
        assert [r["box"] for r in rec["regions"]] == [
            list(sample.rendering.objects[o].box2d) for o in qa.regions]
        assert rec["qa_info"] == [{"category": qa.category, "type": qa.qa_type}]


def test_llava_json_refuses_per_question_naming(tmp_path, test_samples):
    with pytest.raises(ValueError, match="split='train'"):
        write_llava_json(test_samples, tmp_path / "x.json", tmp_path / "images")


def test_bench_json_round_trips_through_read_bench(tmp_path, test_samples):
    path = write_bench_json(test_samples, tmp_path / "bench.json", tmp_path / "images")
    items = read_bench(path)
    qas = [(s, j, qa) for s in test_samples for j, qa in enumerate(s.qas)]
    assert len(items) == len(qas)
    for item, (sample, j, qa) in zip(items, qas, strict=True):
        assert item.id == f"{sample.id}-q{j}"
        assert item.category == qa.category and item.qa_type == qa.qa_type
        assert item.text_q == qa.question and item.reference_answer == qa.answer
        assert (item.height, item.width) == sample.rgb.shape[:2]
        human = item.conversations[0].value
        assert human.startswith("<image>\n") and human.count("<mask>") == len(qa.regions)
        assert "Region [" not in human
        assert item.region_sources == ["rle"] * len(qa.regions)
        for region, obj in zip(item.regions, qa.regions, strict=True):
            np.testing.assert_array_equal(region.mask, sample.rendering.mask(obj))
            assert region.box == tuple(float(v) for v in sample.rendering.objects[obj].box2d)
        got = reference_value(item)
        if isinstance(qa.stated, float):
            assert got == pytest.approx(qa.stated)
        else:
            assert got == qa.stated
        image = np.asarray(Image.open(tmp_path / "images" / item.file_path))
        np.testing.assert_array_equal(image, sample.rgb)


def test_bench_json_refuses_shared_naming(tmp_path, train):
    with pytest.raises(ValueError, match="split='test'"):
        write_bench_json(train, tmp_path / "x.json", tmp_path / "images")


# ------------------------------------------------------------------------------------------
# Bags

def _read_bag(path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    out = {}
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    return types, out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("compressed", [False, "png", "jpeg"])
def test_bag_reads_back_with_rosbags(tmp_path, test_samples, storage, compressed):
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra")
    image_mod = pytest.importorskip("rosbags.image", reason="rosbags-image is in the [eval] extra")
    summary = write_bag(tmp_path / "bag", test_samples, storage=storage,
                        compressed=bool(compressed), compressed_format=compressed or "png",
                        region_format="alternate")
    stamps = [DEFAULT_START_NS + i * DEFAULT_PERIOD_NS for i in range(len(test_samples))]
    assert summary.stamps_ns == tuple(stamps)
    assert summary.questions_path == tmp_path / "questions.jsonl"
    image_topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    assert summary.image_topic == image_topic
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert any(p.suffix == suffix for p in (tmp_path / "bag").iterdir())

    types, msgs = _read_bag(tmp_path / "bag")
    assert types == {
        image_topic: ("sensor_msgs/msg/CompressedImage" if compressed
                      else "sensor_msgs/msg/Image"),
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo"}
    for (t, img), (t_info, info), sample, stamp in zip(
            msgs[image_topic], msgs["/camera/camera_info"], test_samples, stamps, strict=True):
        assert t == t_info == stamp
        for msg in (img, info):
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
            assert msg.header.frame_id == "camera_optical_frame"
        rgb = image_mod.message_to_cvimage(img, "rgb8")
        if compressed == "jpeg":
            assert np.abs(rgb.astype(int) - sample.rgb).mean() < 4.0
        else:
            np.testing.assert_array_equal(rgb, sample.rgb)
        if not compressed:
            assert img.encoding == "rgb8" and img.step == 3 * img.width
        cam = sample.rendering.camera
        assert (info.height, info.width) == (cam.height, cam.width)
        np.testing.assert_allclose(info.k.reshape(3, 3), cam.K)
        np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], cam.K)
        assert info.distortion_model == "plumb_bob" and not info.d.any()

    lines = [json.loads(line) for line in summary.questions_path.read_text().splitlines()]
    qas = [(i, s, j, qa) for i, s in enumerate(test_samples) for j, qa in enumerate(s.qas)]
    assert len(lines) == len(qas) == summary.num_questions
    kinds = set()
    for rec, (i, sample, j, qa) in zip(lines, qas, strict=True):
        assert set(rec) == {"id", "stamp_ns", "frame_index", "topic", "question", "regions",
                            "reference", "category", "type", "positions"}
        assert rec["positions"] == [region_truth(sample.rendering, obj) for obj in qa.regions]
        assert rec["frame_index"] == i and rec["stamp_ns"] == stamps[i]
        assert rec["topic"] == image_topic and rec["id"] == f"{sample.id}-q{j}"
        assert (rec["question"], rec["reference"]) == (qa.question, qa.answer)
        assert (rec["category"], rec["type"]) == (qa.category, qa.qa_type)
        for region, obj in zip(rec["regions"], qa.regions, strict=True):
            assert len(region) == 1
            if "mask_rle" in region:
                kinds.add("mask")
                assert isinstance(region["mask_rle"]["counts"], str)
                mask = decode_rle(region["mask_rle"], *sample.rgb.shape[:2])
                np.testing.assert_array_equal(mask, sample.rendering.mask(obj))
            else:
                kinds.add("box")
                assert region["box"] == list(sample.rendering.objects[obj].box2d)
    assert kinds == {"mask", "box"}


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_bag_depth_topic_round_trips(tmp_path, test_samples, encoding):
    """The registered depth: one Image per colour frame, same stamp and frame_id, the colour
    image's size, and the renderer's z-depth back through the node's decoder (to the millimetre
    for 16UC1, exactly for 32FC1; the sky is no measurement)."""
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra")
    summary = write_bag(tmp_path / "bag", test_samples, depth=encoding)
    assert summary.depth_topic == DEFAULT_DEPTH_TOPIC
    types, msgs = _read_bag(tmp_path / "bag")
    assert types[DEFAULT_DEPTH_TOPIC] == "sensor_msgs/msg/Image"
    pairs = zip(msgs["/camera/image_raw"], msgs[DEFAULT_DEPTH_TOPIC], test_samples, strict=True)
    for (t, img), (t_depth, depth), sample in pairs:
        assert t == t_depth and depth.header == img.header
        assert (depth.encoding, depth.height, depth.width) == (encoding, img.height, img.width)
        assert depth.step == depth.width * (2 if encoding == "16UC1" else 4)
        metres = depth_to_meters(depth)                                   # [H, W]
        truth = sample.rendering.depth
        # no measurement: the sky, and for 16UC1 the ground beyond 65.535 m
        far = ~np.isfinite(truth) | ((truth > 65.5355) if encoding == "16UC1" else False)
        assert far.any() and np.isnan(metres[far]).all() and not np.isnan(metres[~far]).any()
        tol = 0.0005 if encoding == "16UC1" else 0.0
        np.testing.assert_allclose(metres[~far], truth[~far], rtol=0, atol=tol + 1e-6)
    with pytest.raises(ValueError, match="depth"):
        write_bag(tmp_path / "b", test_samples, depth="mono16")


def test_region_truth_is_what_the_depth_shows(test_samples):
    """visible_median_m is the median of the visible pixels' points; the object centre is behind
    it (further along the optical axis)."""
    sample = test_samples[0]
    for obj in sample.regions:
        truth = region_truth(sample.rendering, obj)
        points = sample.rendering.points[sample.rendering.mask(obj)]
        np.testing.assert_allclose(truth["visible_median_m"], np.median(points, axis=0),
                                   atol=1e-4)
        assert truth["object_center_m"][2] > truth["visible_median_m"][2]


def test_bag_rejects_bad_arguments(tmp_path, test_samples):
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra")
    with pytest.raises(ValueError, match="storage"):
        write_bag(tmp_path / "b", test_samples, storage="rosbag1")
    with pytest.raises(ValueError, match="stamp 0"):
        write_bag(tmp_path / "b", test_samples, start_ns=0)
    with pytest.raises(ValueError, match="region_format"):
        write_bag(tmp_path / "b", test_samples, region_format="polygon")


# ------------------------------------------------------------------------------------------
# make-world

def _make_world(argv):
    parser = argparse.ArgumentParser(prog="spatialgeo")
    world_cli.add_parsers(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_make_world_writes_everything(tmp_path, capsys):
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra")
    out = tmp_path / "world"
    argv = ["make-world", "--out", str(out), "--train", "3", "--test", "2", "--size", "64",
            "--seed", "5", "--bag", "--bag-storage", "mcap"]
    assert _make_world(argv) == 0
    assert "3 training images" in capsys.readouterr().out
    summary = json.loads((out / "world.json").read_text())
    assert summary["counts"]["train"]["images"] == 3 and summary["counts"]["test"]["images"] == 2
    train = json.loads((out / "train" / "llava.json").read_text())
    assert len(train) == 3 and all((out / "train" / "images" / r["image"]).is_file()
                                   for r in train)
    items = read_bench(out / "test" / "bench.json")
    assert len(items) == summary["counts"]["test"]["questions"] > 0
    assert all((out / "test" / "images" / i.file_path).is_file() for i in items)
    assert items[0].width == 64
    scenes = (out / "test" / "scenes.jsonl").read_text().splitlines()
    assert len(scenes) == 2 and "objects" in json.loads(scenes[0])
    questions = (out / "bag" / "questions.jsonl").read_text().splitlines()
    assert [json.loads(q)["reference"] for q in questions] == [i.reference_answer for i in items]
    types, msgs = _read_bag(out / "bag" / "test")
    assert "/camera/image_raw" in types
    assert {m.encoding for _, m in msgs[DEFAULT_DEPTH_TOPIC]} == {"16UC1"}     # by default
    assert summary["bag"]["depth_topic"] == DEFAULT_DEPTH_TOPIC
    with pytest.raises(ConfigError, match="exists"):
        _make_world(argv)


@pytest.mark.parametrize("depth", ["32FC1", "none"])
def test_make_world_bag_depth_variants(tmp_path, depth):
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra")
    out = tmp_path / "world"
    assert _make_world(["make-world", "--out", str(out), "--train", "0", "--test", "1",
                        "--size", "48", "--bag", "--bag-depth", depth]) == 0
    types, msgs = _read_bag(out / "bag" / "test")
    if depth == "none":
        assert set(types) == {"/camera/image_raw", "/camera/camera_info"}
    else:
        assert {m.encoding for _, m in msgs[DEFAULT_DEPTH_TOPIC]} == {depth}


def _training_answers(tmp_path, *options: str) -> list[str]:
    """The gpt turns of llava.json written by `make-world` (6 small scenes) with `options`."""
    out = tmp_path / "world"
    assert _make_world(["make-world", "--out", str(out), "--train", "6", "--test", "0",
                        "--size", "48", "--qa-per-image", "8", *options]) == 0
    return [t["value"] for r in json.loads((out / "train" / "llava.json").read_text())
            for t in r["conversations"] if t["from"] == "gpt"]


def test_make_world_metric_units_reach_the_training_answers(tmp_path):
    answers = _training_answers(tmp_path, "--units", "metric")
    assert answers and any(" m" in a or "meter" in a or "cm" in a or "centimeter" in a
                           for a in answers)
    assert not any(w in a for a in answers for w in ("feet", "foot", "inch"))


def test_make_world_facts_per_question_reaches_the_training_records(tmp_path):
    answers = _training_answers(tmp_path, "--wording", "facts", "--naming", "per_question")
    records = json.loads((tmp_path / "world" / "train" / "llava.json").read_text())
    assert len(records) == len(answers) > 6                   # one record per question
    assert any(a.startswith("Region [0]: ") and " So Region [0] is " in a for a in answers)


def test_make_world_plain_wording_reaches_the_training_answers(tmp_path):
    answers = _training_answers(tmp_path, "--wording", "plain")
    starts = {a.split(" ")[0] for a in answers}
    assert answers and starts <= {"Yes,", "No,", "Region"}, starts
    assert not any(w in a for a in answers for w in ("cm", "feet", "inch", "meter"))
