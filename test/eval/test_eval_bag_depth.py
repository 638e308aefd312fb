"""`spatialgeo eval-bag` with a depth topic: the bags `make-world --bag` writes (16UC1 and 32FC1
depth registered to the images, CameraInfo, questions with each region's 3D ground truth), depth
topics told apart from image topics, the regions' positions in every answered record, their
errors in metrics.json and report.md, and the cases without positions."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra: pip install -e .[test]")

from spatialgeo_core.cli import main  # noqa: E402
from spatialgeo_core.eval.bag import (  # noqa: E402
    Bag,
    FrameMatch,
    TopicError,
    decode_rgb,
    resolve_topic,
)
from spatialgeo_core.eval.bag_depth import BagDepth, position_metrics  # noqa: E402
from spatialgeo_core.eval.questions import parse_question, read_questions  # noqa: E402
from spatialgeo_core.frames import Frame  # noqa: E402
from spatialgeo_core.synthetic.world import iter_samples  # noqa: E402
from spatialgeo_core.synthetic.writers import DEFAULT_DEPTH_TOPIC, write_bag  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
IMAGE_TOPIC = "/camera/image_raw"


@pytest.fixture(scope="module")
def samples():
    return list(iter_samples(2, 4, "test"))


@pytest.fixture(scope="module")
def world_bags(tmp_path_factory, samples):
    """Bags of the same two test frames: depth 16UC1, depth 32FC1, no depth. Questions give their
    regions as masks and boxes in turn."""
    root = tmp_path_factory.mktemp("depthbags")
    out = {}
    for depth in ("16UC1", "32FC1", None):
        name = depth or "none"
        summary = write_bag(root / name / "bag", samples, depth=depth,
                            questions_path=root / name / "questions.jsonl",
                            region_format="alternate")
        out[name] = summary
    return out


def test_depth_topics_are_not_image_topics(world_bags):
    with Bag(world_bags["16UC1"].path) as bag:
        assert bag.depth_topics() == [DEFAULT_DEPTH_TOPIC]
        assert [t.name for t in bag.image_topics()] == [IMAGE_TOPIC]
        q = parse_question({"id": "q", "stamp_ns": 1, "question": "Where?",
                            "reference": "Here.", "category": "left_predicate"})
        assert resolve_topic(q, bag, bag.image_topics()) == IMAGE_TOPIC     # the only one
        with pytest.raises(TopicError, match="carries depth images"):
            resolve_topic(parse_question({**vars_of(q), "topic": DEFAULT_DEPTH_TOPIC}), bag,
                          bag.image_topics())
    with Bag(world_bags["none"].path) as bag:
        assert bag.depth_topics() == [] and BagDepth.open(bag) is None


def vars_of(q) -> dict:
    return {"id": q.id, "stamp_ns": q.stamp_ns, "question": q.question,
            "reference": q.reference, "category": q.category}


def test_questions_carry_and_check_the_ground_truth(world_bags):
    questions, errors = read_questions(world_bags["16UC1"].questions_path)
    assert not errors and all(len(q.positions) == len(q.regions) for q in questions)
    assert set(questions[0].positions[0]) == {"object_center_m", "visible_median_m"}
    base = {"id": "q", "stamp_ns": 1, "question": "Where is Region [0]?", "reference": "Here.",
            "category": "left_predicate", "regions": [{"box": [0, 0, 2, 2]}]}
    for bad in ([], [{"visible_median_m": [1, 2]}], [{"x": "far"}], "here"):
        with pytest.raises(ValueError, match="positions"):
            parse_question({**base, "positions": bad})


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_eval_bag_scores_the_region_positions(tmp_path, capsys, tiny_dir, world_bags,
                                              encoding):
    summary = world_bags[encoding]
    out = tmp_path / "out"
    rc = main(["eval-bag", "--bag", str(summary.path), "--questions",
               str(summary.questions_path), "--model-path", str(tiny_dir), "--out", str(out),
               "--max-new-tokens", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "results.jsonl").open()]
    questions = {json.loads(line)["id"]: json.loads(line)
                 for line in summary.questions_path.open()}
    assert records and all(r["status"] == "ok" for r in records)
    for r in records:
        assert r["positions_status"] == "ok", r["positions_message"]
        q = questions[r["question_id"]]
        assert len(r["regions_3d"]) == len(q["regions"]) == len(r["position_errors_m"])
        for entry, region, truth, err in zip(r["regions_3d"], q["regions"], q["positions"],
                                             r["position_errors_m"], strict=True):
            assert entry["valid"] and entry["valid_pixels"] > 0
            dist = np.linalg.norm(np.subtract(entry["center_m"], truth["visible_median_m"]))
            assert err["visible_median_m"] == pytest.approx(dist, abs=2e-4)
            if "mask_rle" in region:                         # like with like: to the mm
                assert dist < 0.002
    metrics = json.loads((out / "metrics.json").read_text())
    pos = metrics["positions"]
    assert pos["statuses"] == {"ok": len(records)}
    assert pos["regions"] == pos["regions_with_position"] == sum(len(r["regions_3d"])
                                                                 for r in records)
    assert pos["error_m"]["visible_median_m"]["median"] < 0.02
    assert pos["error_m"]["object_center_m"]["n"] == pos["regions"]
    assert metrics["run"]["depth_topic"] == DEFAULT_DEPTH_TOPIC
    report = (out / "report.md").read_text()
    assert "## Region positions" in report and "| visible_median_m |" in report


def test_without_depth_the_records_and_metrics_are_as_before(tmp_path, capsys, tiny_dir,
                                                             world_bags):
    summary = world_bags["none"]
    out = tmp_path / "out"
    assert main(["eval-bag", "--bag", str(summary.path), "--questions",
                 str(summary.questions_path), "--model-path", str(tiny_dir), "--out", str(out),
                 "--max-new-tokens", "2", "--no-progress"]) == 0
    record = json.loads((out / "results.jsonl").open().readline())
    assert record["status"] == "ok" and "regions_3d" not in record
    metrics = json.loads((out / "metrics.json").read_text())
    assert "positions" not in metrics and metrics["run"]["depth_topic"] == "none"
    assert "Region positions" not in (out / "report.md").read_text()


def test_a_depth_topic_that_is_not_one_is_exit_2(tmp_path, capsys, tiny_dir, world_bags):
    summary = world_bags["16UC1"]
    rc = main(["eval-bag", "--bag", str(summary.path), "--questions",
               str(summary.questions_path), "--model-path", str(tiny_dir), "--out",
               str(tmp_path / "out"), "--depth-topic", IMAGE_TOPIC])
    assert rc == 2
    assert "is not a depth topic" in capsys.readouterr().err


def _match(bag, summary, stamp_shift: int = 0, frame_id: str = "camera_optical_frame"):
    """The first frame of a bag as FrameMatch (its stamp shifted), its first question and the
    frame's (width, height)."""
    message = next(iter(bag.messages([IMAGE_TOPIC])))
    questions, _ = read_questions(summary.questions_path)
    frame = Frame(message.stamp_ns + stamp_shift, message, frame_id)
    height, width = decode_rgb(message).shape[:2]
    return FrameMatch(questions[0], IMAGE_TOPIC, frame), questions[0], (width, height)


def test_unreadable_depth_is_invalid_depth_not_a_crash(world_bags, monkeypatch):
    from spatialgeo_core.eval import bag_depth

    def corrupt(*args, **kwargs):
        raise OSError("database disk image is malformed")

    summary = world_bags["16UC1"]
    with Bag(summary.path) as bag:
        depth = BagDepth.open(bag)
        monkeypatch.setattr(bag_depth, "read_range", corrupt)
        match, q, size = _match(bag, summary)
        fields = depth.record_fields(match, q.regions, q.positions, size)
    assert fields["positions_status"] == "invalid_depth"
    assert "OSError: database disk image is malformed" in fields["positions_message"]


def test_record_fields_say_why_there_are_no_positions(world_bags):
    summary = world_bags["16UC1"]
    with Bag(summary.path) as bag:
        depth = BagDepth.open(bag, tolerance_ms=20.0)
        match, q, size = _match(bag, summary, stamp_shift=50_000_000)          # 50 ms off
        fields = depth.record_fields(match, q.regions, q.positions, size)
        assert fields["positions_status"] == "no_depth_frame" and fields["regions_3d"] is None
        match, q, size = _match(bag, summary, frame_id="another_frame")
        fields = depth.record_fields(match, q.regions, q.positions, size)
        assert fields["positions_status"] == "invalid_depth"
        assert "not the colour image's" in fields["positions_message"]
        no_info = BagDepth(bag, DEFAULT_DEPTH_TOPIC, [], 20_000_000)
        match, q, size = _match(bag, summary)
        assert no_info.record_fields(match, q.regions, None, size)["positions_status"] == \
            "no_camera_info"
        fields = depth.record_fields(match, q.regions, None, size)           # no ground truth
        assert fields["positions_status"] == "ok"
        assert fields["position_errors_m"] == [None] * len(q.regions)


def test_position_metrics_count_statuses_and_errors():
    records = [
        {"status": "ok", "positions_status": "ok",
         "regions_3d": [{"valid": True}, {"valid": True}],
         "position_errors_m": [{"visible_median_m": 0.01}, {"visible_median_m": 0.03}]},
        {"status": "ok", "positions_status": "no_valid_depth",
         "regions_3d": [{"valid": False}], "position_errors_m": [None]},
        {"status": "ok", "positions_status": "no_depth_frame", "regions_3d": None,
         "position_errors_m": None},
        {"status": "error"},
    ]
    m = position_metrics(records)
    assert m["questions"] == 3 and m["regions"] == 3 and m["regions_with_position"] == 2
    assert m["statuses"] == {"no_depth_frame": 1, "no_valid_depth": 1, "ok": 1}
    assert m["error_m"]["visible_median_m"] == {"n": 2, "median": 0.02, "p90": 0.028,
                                                "max": 0.03}
