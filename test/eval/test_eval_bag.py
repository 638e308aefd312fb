"""`spatialgeo eval-bag`: bags written by rosbags (sqlite3 and mcap; Image with padded rows and
CompressedImage), questions.jsonl parsing, frame selection as the node's, results / resume /
metrics / report, and every error path (no image topic, no frame, corrupt bag, bad lines)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra: pip install -e .[test]")

from spatialgeo_core.cli import main  # noqa: E402
from spatialgeo_core.eval.bag import Bag, BagError, decode_rgb, match_frames  # noqa: E402
from spatialgeo_core.eval.questions import parse_question, read_questions  # noqa: E402
from spatialgeo_core.eval.runner import evaluate_bag  # noqa: E402
from spatialgeo_core.eval.spatialrgpt.format import encode_rle  # noqa: E402
from spatialgeo_core.frames import (  # noqa: E402
    FrameBuffer,
    FrameSelectionError,
    SelectionPolicy,
)
from spatialgeo_core.types import GenerationOptions  # noqa: E402

S = 1_000_000_000
MS = 1_000_000
START = 1_700_000_000 * S
PERIOD = 100 * MS
N_FRAMES = 5
W, H = 64, 48
RAW, COMPRESSED = "/cam/image_raw", "/cam/image_raw/compressed"
BOX0, BOX1 = [2, 4, 28, 40], [34, 6, 62, 44]


def frame_rgb(i: int) -> np.ndarray:
    """A distinct image per frame: gradients shifted by the frame number."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(x * 4 + i * 40) % 256, (y * 5) % 256, np.full_like(x, i * 50)],
                    axis=-1).astype(np.uint8)                                  # [H, W, 3]


def write_bag(path: Path, storage: str = "sqlite3", image_topics: bool = True,
              corrupt_raw_index: int | None = None) -> Path:
    """A bag with N_FRAMES frames on RAW (rgb8, rows padded to a step of 3W + 8 bytes) and on
    COMPRESSED (PNG), stamped START + i * PERIOD (bag time 3 ms later), plus a String topic.
    corrupt_raw_index: that RAW message is written cut short (its CDR cannot be read)."""
    from PIL import Image as PILImage
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    T = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        text = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        if image_topics:
            raw = writer.add_connection(RAW, "sensor_msgs/msg/Image", typestore=ts)
            comp = writer.add_connection(COMPRESSED, "sensor_msgs/msg/CompressedImage",
                                         typestore=ts)
        for i in range(N_FRAMES):
            stamp = START + i * PERIOD
            writer.write(text, stamp, ts.serialize_cdr(T["std_msgs/msg/String"](data=f"hi {i}"),
                                                       "std_msgs/msg/String"))
            if not image_topics:
                continue
            header = T["std_msgs/msg/Header"](
                stamp=T["builtin_interfaces/msg/Time"](sec=stamp // S, nanosec=stamp % S),
                frame_id="cam_optical")
            rgb = frame_rgb(i)
            step = 3 * W + 8
            rows = np.full((H, step), 0xAB, np.uint8)                          # [H, step]
            rows[:, :3 * W] = rgb.reshape(H, -1)
            msg = T["sensor_msgs/msg/Image"](header=header, height=H, width=W, encoding="rgb8",
                                             is_bigendian=0, step=step, data=rows.reshape(-1))
            data = bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            if i == corrupt_raw_index:
                data = data[:40]
            writer.write(raw, stamp + 3 * MS, data)
            buf = io.BytesIO()
            PILImage.fromarray(rgb).save(buf, format="PNG")
            cmsg = T["sensor_msgs/msg/CompressedImage"](
                header=header, format="rgb8; png compressed bgr8",
                data=np.frombuffer(buf.getvalue(), np.uint8))
            writer.write(comp, stamp + 3 * MS,
                         ts.serialize_cdr(cmsg, "sensor_msgs/msg/CompressedImage"))
    return path


def mask_rle() -> dict:
    mask = np.zeros((H, W), bool)
    mask[10:30, 36:60] = True
    return encode_rle(mask)


def question(qid: str, **fields) -> dict:
    q = {"id": qid, "topic": RAW, "question": "How far is Region [0] from Region [1]?",
         "regions": [{"box": BOX0}, {"box": BOX1}], "reference": "It is 1.5 meters.",
         "category": "distance_data", "type": "quantitative"}
    q.update(fields)
    return q


def write_questions(path: Path, items: list) -> Path:
    with path.open("w") as f:
        for item in items:
            f.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def results(out: Path) -> dict[str, dict]:
    return {r["question_id"]: r for r in map(json.loads, (out / "results.jsonl").open())}


# -------------------------------------------------------------------------------------------------
# bag reading and frame selection (no model)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {s: write_bag(root / f"bag_{s}", s) for s in ("sqlite3", "mcap")}


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_topics_stamps_and_decoding(bags, storage):
    with Bag(bags[storage]) as bag:
        topics = {t.name: (t.msgtype, t.count) for t in bag.image_topics()}
        assert topics == {RAW: ("sensor_msgs/msg/Image", N_FRAMES),
                          COMPRESSED: ("sensor_msgs/msg/CompressedImage", N_FRAMES)}
        messages = list(bag.messages([RAW, COMPRESSED]))
    assert [m.index for m in messages if m.topic == RAW] == list(range(N_FRAMES))
    for m in messages:
        assert m.stamp_ns == START + m.index * PERIOD                # header stamp, not bag time
        assert m.log_ns == m.stamp_ns + 3 * MS and m.frame_id == "cam_optical"
        # the padded rows of the raw image (0xAB) must not leak into the pixels
        np.testing.assert_array_equal(decode_rgb(m), frame_rgb(m.index))


def test_a_single_storage_file_opens_too(bags):
    (db3,) = bags["sqlite3"].glob("*.db3")
    with Bag(db3) as bag:
        assert len(bag.image_topics()) == 2


def _q(qid, **fields):
    return parse_question(question(qid, **fields), 1)


def _matches(bag_path, qs, policy):
    with Bag(bag_path) as bag:
        return {m.question.id: m for m in match_frames(bag, qs, policy)}


@pytest.mark.parametrize("tolerance_ms", [30, 50])
def test_frames_are_selected_as_the_node_selects_them(bags, tolerance_ms):
    policy = SelectionPolicy(tolerance_ns=tolerance_ms * MS, max_age_ns=0)
    asks = {"exact": START + 2 * PERIOD, "near": START + PERIOD + 20 * MS,
            "halfway": START + 3 * PERIOD + 50 * MS, "before": START - 60 * MS,
            "after": START + 4 * PERIOD + 60 * MS}
    qs = [_q(k, stamp_ns=v) for k, v in asks.items()]
    qs += [_q("index", frame_index=3, topic=COMPRESSED),
           _q("index_out", frame_index=N_FRAMES, topic=COMPRESSED)]
    got = _matches(bags["mcap"], qs, policy)
    # the node's buffer holding every frame gives the same frames
    node = FrameBuffer(capacity=30)
    for i in range(N_FRAMES):
        node.add(START + i * PERIOD, i)
    for key, stamp in asks.items():
        try:
            expected = node.select(stamp, stamp, policy).stamp_ns
        except FrameSelectionError:
            expected = None
        match = got[key]
        assert (None if match.frame is None else match.frame.stamp_ns) == expected, key
        assert (match.error is None) == (expected is not None), key
    assert got["exact"].frame.payload.index == 2 and got["near"].frame.stamp_ns == START + PERIOD
    if tolerance_ms == 50:
        assert got["halfway"].frame.stamp_ns == START + 3 * PERIOD       # the earlier on a tie
    else:
        assert "no frame within 0.030 s" in str(got["halfway"].error)
    assert "its first frame is at" in str(got["before"].error)
    assert "its last frame is at" in str(got["after"].error)
    assert got["index"].frame.payload.index == 3
    assert got["index"].frame.payload.topic == COMPRESSED
    assert "has 5 messages" in str(got["index_out"].error)


def test_topic_resolution_errors(bags):
    policy = SelectionPolicy()
    qs = [_q("no_topic", topic=None, stamp_ns=START), _q("unknown", topic="/nope", stamp_ns=START),
          _q("text", topic="/chatter", stamp_ns=START)]
    with Bag(bags["sqlite3"]) as bag:
        got = {m.question.id: str(m.error) for m in match_frames(bag, qs, policy)}
        assert "has 2 image topics" in got["no_topic"] and "--topic" in got["no_topic"]
        assert "/nope is not in the bag" in got["unknown"]
        assert "carries std_msgs/msg/String" in got["text"]
        # --topic gives questions without one their topic
        (m,) = match_frames(bag, qs[:1], policy, default_topic=COMPRESSED)
        assert m.error is None and m.topic == COMPRESSED


# -------------------------------------------------------------------------------------------------
# questions.jsonl


def test_questions_file_parsing_and_line_errors(tmp_path):
    good_mask = question("m", frame_index=0, regions=[{"mask_rle": mask_rle()},
                                                      {"box": BOX1, "mask_rle": mask_rle()}])
    lines = [
        question("a", stamp_ns=START),
        question("b", stamp={"sec": START // S, "nanosec": 5}),
        good_mask,
        "",
        "{not json",
        question("c"),                                               # no stamp nor index
        question("d", stamp_ns=0),
        question("e", stamp_ns=START, stamp={"sec": 1, "nanosec": 0}),
        question("f", stamp_ns=START, regions=[{"box": [5, 5, 1, 9]}]),
        question("g", stamp_ns=START, regions=[{"mask_rle": {"size": [H, W], "counts": [1, 2]}}]),
        question("h", stamp_ns=START, category="sideways_predicate"),
        question("i", stamp_ns=START, type="qualitative"),
        question("a", stamp_ns=START),                                # repeated id
        [1, 2],
        question("j", stamp_ns=START, regions=[{"bbox": BOX0}]),
    ]
    records, errors = read_questions(write_questions(tmp_path / "q.jsonl", lines))
    assert [r.id for r in records] == ["a", "b", "m"]
    assert records[1].stamp_ns == START + 5 and records[0].regions[1].box == tuple(BOX1)
    assert records[2].stamp_ns is None and records[2].frame_index == 0
    assert records[2].regions[0].mask.shape == (H, W) and records[2].regions[0].box is None
    assert records[2].regions[1].mask.sum() == 20 * 24
    by_line = {e.line: e for e in errors}
    expected = {5: "not valid JSON", 6: "'stamp_ns' (or 'stamp') or as 'frame_index'",
                7: "stamp 0", 8: "disagree", 9: "is empty", 10: "region 0",
                11: "unknown SpatialRGPT-Bench category", 12: "is quantitative",
                13: "id 'a' repeats line 1", 14: "one JSON object", 15: "neither 'box'"}
    assert sorted(by_line) == sorted(expected)
    for line, text in expected.items():
        assert text in by_line[line].message and f"q.jsonl:{line}:" in by_line[line].message
    assert by_line[9].record_id == "f" and by_line[5].record_id == "line:5"
    assert by_line[13].record_id == "line:13"                        # not the first "a"


def test_questions_file_that_cannot_be_used(tmp_path, capsys, bags, tiny_dir):
    blank = write_questions(tmp_path / "blank.jsonl", ["", "  "])
    for path, text in ((tmp_path / "missing.jsonl", "does not exist"),
                       (blank, "holds no questions")):
        rc, _, err = run_cli(capsys, "eval-bag", "--bag", str(bags["sqlite3"]), "--questions",
                             str(path), "--model-path", str(tiny_dir), "--out",
                             str(tmp_path / "o"), "--no-progress")
        assert rc == 2 and text in err and "Traceback" not in err


# -------------------------------------------------------------------------------------------------
# end to end with the tiny model


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_eval_bag_end_to_end(tmp_path, capsys, bags, tiny_dir, storage):
    qfile = write_questions(tmp_path / "questions.jsonl", [
        question("raw_box", stamp_ns=START + PERIOD),
        question("raw_near", stamp={"sec": (START + 2 * PERIOD) // S,
                                    "nanosec": (START + 2 * PERIOD) % S + 20 * MS}),
        question("comp_mask", topic=COMPRESSED, frame_index=3,
                 question="Is Region [0] to the left of Region [1]?",
                 regions=[{"mask_rle": mask_rle()}, {"box": BOX0}],
                 reference="Yes, Region [0] is to the left.", category="left_predicate",
                 type="qualitative"),
        question("same_frame", stamp_ns=START + PERIOD, question="What is the height of "
                 "Region [0]?", category="height_data", reference="About 30 cm."),
        question("no_frame", stamp_ns=START + 10 * PERIOD),
        question("outside", stamp_ns=START, regions=[{"box": [0, 0, W + 10, 10]}]),
        "{broken",
    ])
    out = tmp_path / "out"
    rc, stdout, err = run_cli(capsys, "eval-bag", "--bag", str(bags[storage]), "--questions",
                              str(qfile), "--model-path", str(tiny_dir), "--out", str(out),
                              "--max-new-tokens", "4")
    assert rc == 0, err
    assert "4 of 7 questions answered, 3 errors" in stdout
    assert "eval-bag" in err                                           # the progress bar
    res = results(out)
    assert list(res) == ["raw_box", "raw_near", "comp_mask", "same_frame", "no_frame",
                         "outside", "line:7"]                         # the file's order
    for qid, stamp in (("raw_box", START + PERIOD), ("raw_near", START + 2 * PERIOD),
                       ("comp_mask", START + 3 * PERIOD), ("same_frame", START + PERIOD)):
        r = res[qid]
        assert r["status"] == "ok" and isinstance(r["pred"], str), r
        assert r["frame_stamp_ns"] == stamp and r["frame_id"] == "cam_optical"
        assert r["latency_ms"] > 0 and r["num_tokens"] <= 4 and "score" in r
        assert r["model_id"] == str(tiny_dir)
    assert res["comp_mask"]["topic"] == COMPRESSED and res["comp_mask"]["frame_index"] == 3
    assert res["no_frame"]["error_kind"] == "NoFrameError"
    assert res["outside"]["error_kind"] == "InvalidRegionError"
    assert "Region [0]" in res["outside"]["error"]
    assert res["line:7"]["error_kind"] == "QuestionFormatError"

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_items"] == 4 and metrics["num_questions"] == 7
    assert metrics["errors"] == {"total": 3, "by_kind": {
        "InvalidRegionError": 1, "NoFrameError": 1, "QuestionFormatError": 1}}
    assert metrics["qualitative"]["groups"]["left/right"]["total"] == 1
    assert set(metrics["quantitative"]["categories"]) == {"distance_data", "height_data"}
    assert metrics["run"]["bag"] == str(bags[storage]) and "incomplete" not in metrics["run"]
    report = (out / "report.md").read_text()
    assert report.startswith("# SpatialGeo rosbag evaluation")
    assert "## Errors" in report and "`no_frame`: no frame of /cam/image_raw" in report
    for plot in ("qualitative_accuracy.png", "quantitative_success.png", "latency_hist.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"


def test_resume_skips_answered_questions_and_retries_errors(tmp_path, capsys, bags,
                                                            tiny_pipeline):
    calls = []

    class Counting:
        """The tiny pipeline, counting answers."""
        model_path = "tiny"

        def frame(self, *a, **k):
            return tiny_pipeline.frame(*a, **k)

        def answer(self, frame, question, *a, **k):
            calls.append(question)
            return tiny_pipeline.answer(frame, question, *a, **k)

    qpath = tmp_path / "q.jsonl"
    first = [question("q0", stamp_ns=START), question("q1", stamp_ns=START + PERIOD),
             question("late", stamp_ns=START + 30 * PERIOD)]
    write_questions(qpath, first)
    out = tmp_path / "out"
    kwargs = dict(options=GenerationOptions(max_new_tokens=2), progress=False)
    evaluate_bag(bags["sqlite3"], qpath, out, Counting, **kwargs)
    assert len(calls) == 2
    # without --resume an output directory with results is refused
    rc, _, err = run_cli(capsys, "eval-bag", "--bag", str(bags["sqlite3"]), "--questions",
                         str(qpath), "--out", str(out), "--no-progress")
    assert rc == 2 and "pass --resume" in err
    # more questions; "late" (an error) is tried again and now has a frame (wider tolerance)
    write_questions(qpath, [*first[:2], question("late", stamp_ns=START + 4 * PERIOD),
                            question("q2", stamp_ns=START + 2 * PERIOD)])
    calls.clear()
    metrics = evaluate_bag(bags["sqlite3"], qpath, out, Counting, resume=True, **kwargs)
    assert len(calls) == 2                                           # late and q2 only
    res = results(out)
    assert list(res) == ["q0", "q1", "late", "q2"]                   # one record per question
    assert all(r["status"] == "ok" for r in res.values())
    assert metrics["num_questions"] == 4 and metrics["errors"]["total"] == 0
    # a question dropped from the file: its result is kept, but no longer scored
    write_questions(qpath, first[:1])
    metrics = evaluate_bag(bags["sqlite3"], qpath, out, Counting, resume=True, **kwargs)
    assert len(calls) == 2 and metrics["num_questions"] == 1
    assert list(results(out)) == ["q0", "q1", "late", "q2"]


# -------------------------------------------------------------------------------------------------
# bags that cannot be used


def test_bag_without_image_topic(tmp_path, capsys, tiny_dir):
    bag = write_bag(tmp_path / "text_only", image_topics=False)
    qfile = write_questions(tmp_path / "q.jsonl", [question("a", stamp_ns=START)])
    rc, _, err = run_cli(capsys, "eval-bag", "--bag", str(bag), "--questions", str(qfile),
                         "--model-path", str(tiny_dir), "--out", str(tmp_path / "o"),
                         "--no-progress")
    assert rc == 2 and "Traceback" not in err
    assert "has no sensor_msgs/msg/Image or CompressedImage topic" in err
    assert "/chatter (std_msgs/msg/String)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", ["missing", "garbage_mcap", "truncated_sqlite"])
def test_unreadable_bag(tmp_path, capsys, tiny_dir, damage):
    bag = tmp_path / "bag"
    if damage == "garbage_mcap":
        write_bag(bag, "mcap")
        (f,) = bag.glob("*.mcap")
        f.write_bytes(b"not an mcap file" * 100)
    elif damage == "truncated_sqlite":
        write_bag(bag, "sqlite3")
        (f,) = bag.glob("*.db3")
        f.write_bytes(f.read_bytes()[:1000])
    qfile = write_questions(tmp_path / "q.jsonl", [question("a", stamp_ns=START)])
    rc, _, err = run_cli(capsys, "eval-bag", "--bag", str(bag), "--questions", str(qfile),
                         "--model-path", str(tiny_dir), "--out", str(tmp_path / "o"),
                         "--no-progress")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("does not exist" if damage == "missing" else "cannot open bag") in err


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_corrupt_message_midway_keeps_the_results(tmp_path, capsys, tiny_dir, storage):
    bag = write_bag(tmp_path / "bag", storage, corrupt_raw_index=3)
    qfile = write_questions(tmp_path / "q.jsonl", [
        question("f0", stamp_ns=START), question("f1", stamp_ns=START + PERIOD),
        # the last frame read before the corrupt one: still pending (within the tolerance of
        # the next frame) when the bag breaks, and answered from what was read
        question("f2", stamp_ns=START + 2 * PERIOD),
        question("f3", stamp_ns=START + 3 * PERIOD), question("i4", frame_index=4)])
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "eval-bag", "--bag", str(bag), "--questions", str(qfile),
                         "--model-path", str(tiny_dir), "--out", str(out), "--no-progress",
                         "--max-new-tokens", "2")
    assert rc == 2 and "Traceback" not in err
    assert "is corrupt" in err and "kept in" in err
    res = results(out)
    # every question of the file has its record: nothing read is lost, nothing unread is silent
    assert sorted(res) == ["f0", "f1", "f2", "f3", "i4"]
    assert [res[q]["status"] for q in ("f0", "f1", "f2")] == ["ok"] * 3
    assert res["f2"]["frame_message_index"] == 2
    for q in ("f3", "i4"):
        assert res[q]["error_kind"] == "BagError" and "not reached" in res[q]["error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "is corrupt" in metrics["run"]["incomplete"] and metrics["num_answered"] == 3
    assert metrics["num_questions"] == 5 and metrics["errors"]["total"] == 2
    assert (out / "report.md").exists()


def test_bag_error_is_a_spatialgeo_error():
    from spatialgeo_core.errors import SpatialGeoError
    assert issubclass(BagError, SpatialGeoError)
