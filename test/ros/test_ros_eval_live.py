"""`ros2 run spatialgeo_ros eval_live`: the ROS-free parts of the client (live_eval.py: requests
built field for field as srv/SpatialQuery.srv and msg/*.msg declare them, responses turned into
result records, stamps of frame_index questions looked up in a bag), the executable's error
without ROS, and, where a ROS 2 runtime with the built interfaces is present, the client
(live_eval_client.py) against a live SpatialQuery service."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra: pip install -e .[test]")

from spatialgeo_core.eval.questions import parse_question  # noqa: E402
from spatialgeo_core.eval.spatialrgpt.format import encode_rle  # noqa: E402
from spatialgeo_core.optional import available  # noqa: E402
from spatialgeo_ros.live_eval import (  # noqa: E402
    fill_request,
    resolve_stamps,
    response_record,
)
from spatialgeo_ros.live_eval_client import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000
START = 1_700_000_000 * S
PERIOD = 100_000_000
TOPIC = "/camera/image_raw"
NO_RCLPY = "needs a ROS 2 runtime (rclpy is not on PyPI): source a ROS 2 workspace"


def _q(qid="q", **fields):
    q = {"id": qid, "topic": TOPIC, "question": "How far is Region [0] from Region [1]?",
         "regions": [{"box": [1, 2, 20, 30]}], "reference": "About 2 meters.",
         "category": "distance_data", "stamp_ns": START}
    q.update(fields)
    return parse_question(q, 3)


# -------------------------------------------------------------------------------------------------
# messages as the interface files declare them: unknown fields cannot be set


def _typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name in ("GenerationLimits", "QueryStatus", "Region"):
        types.update(get_types_from_msg((ROOT / "msg" / f"{name}.msg").read_text(),
                                        f"spatialgeo_ros/msg/{name}"))
    request, response = (ROOT / "srv" / "SpatialQuery.srv").read_text().split("\n---\n")
    types.update(get_types_from_msg(request, "spatialgeo_ros/msg/SpatialQuery_Request"))
    types.update(get_types_from_msg(response, "spatialgeo_ros/msg/SpatialQuery_Response"))
    ts.register(types)
    return ts


def strict_type(ts, name: str):
    """A class with exactly the message's fields (nested messages built, the rest None)."""
    from rosbags.interfaces import Nodetype

    msgdef = ts.get_msgdef(name)

    class Strict:
        __slots__ = tuple(f for f, _ in msgdef.fields)

        def __init__(self):
            for field, (kind, spec) in msgdef.fields:
                setattr(self, field, strict_type(ts, spec)() if kind == Nodetype.NAME else None)

    Strict.__name__ = name.rsplit("/", 1)[-1]
    return Strict


def test_request_is_filled_as_the_interfaces_declare():
    ts = _typestore()
    mask = np.zeros((24, 32), bool)
    mask[5:10, 8:20] = True
    q = _q(regions=[{"box": [1, 2, 20, 30]}, {"mask_rle": encode_rle(mask)},
                    {"box": [0, 0, 4, 4], "mask_rle": encode_rle(mask)}])
    request = fill_request(strict_type(ts, "spatialgeo_ros/msg/SpatialQuery_Request")(), q,
                           START + 7, "front", 64, 12.5,
                           strict_type(ts, "spatialgeo_ros/msg/Region"),
                           strict_type(ts, "sensor_msgs/msg/Image"))
    assert request.question == q.question and request.camera == "front"
    assert (request.stamp.sec, request.stamp.nanosec) == (START // S, 7)
    assert (request.limits.max_new_tokens, request.limits.temperature,
            request.limits.timeout_s) == (64, 0.0, 12.5)
    box, masked, both = request.regions
    assert box.has_box and (box.x_min, box.y_min, box.x_max, box.y_max) == (1, 2, 20, 30)
    assert box.mask.width is None                     # untouched: the default empty image
    assert masked.has_box is None and masked.mask.encoding == "mono8"
    m = masked.mask
    assert (m.height, m.width, m.step, m.is_bigendian) == (24, 32, 32, 0)
    data = np.frombuffer(bytes(m.data), np.uint8).reshape(24, 32)
    np.testing.assert_array_equal(data != 0, mask)
    assert set(np.unique(data)) == {0, 255}
    assert both.has_box and both.mask.height == 24


def _response(code: int, answer: str = "", message: str = "", stamp_ns: int = START):
    return SimpleNamespace(
        status=SimpleNamespace(code=code, message=message), answer=answer,
        header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S),
                               frame_id="cam"),
        latency=SimpleNamespace(sec=1, nanosec=250_000_000))


def test_responses_become_result_records():
    q = _q()
    ok = response_record(q, _response(0, "It is 2.2 meters away."), "node", 1300.0,
                         topic=TOPIC, requested_stamp_ns=START)
    assert ok["status"] == "ok" and ok["pred"] == "It is 2.2 meters away."
    assert ok["score"]["success"] and ok["latency_ms"] == 1250.0 and ok["roundtrip_ms"] == 1300.0
    assert ok["frame_stamp_ns"] == START and ok["frame_id"] == "cam" and ok["line"] == 3
    err = response_record(q, _response(2, message="evicted"), "node", 5.0, topic=TOPIC)
    assert err["status"] == "error" and err["error_kind"] == "STALE_FRAME"
    assert err["error"] == "evicted" and err["pred"] is None
    assert response_record(q, _response(42), "node", 1.0)["error_kind"] == "STATUS_42"


def _tiny_bag(path: Path) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    with Writer(path, version=8) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        for i in range(3):
            stamp = START + i * PERIOD
            header = T["std_msgs/msg/Header"](
                stamp=T["builtin_interfaces/msg/Time"](sec=stamp // S, nanosec=stamp % S),
                frame_id="cam")
            msg = T["sensor_msgs/msg/Image"](header=header, height=2, width=2, encoding="rgb8",
                                             is_bigendian=0, step=6,
                                             data=np.zeros(12, np.uint8))
            writer.write(conn, stamp, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_stamps_of_frame_index_questions_come_from_the_bag(tmp_path):
    qs = [_q("late", stamp_ns=START + 5 * S), _q("idx", stamp_ns=None, frame_index=2),
          _q("idx_out", stamp_ns=None, frame_index=9), _q("no_topic", topic=None)]
    ready, failed = resolve_stamps(qs, None, _tiny_bag(tmp_path / "bag"))
    assert [(q.id, q.stamp_ns) for q in ready] == [("idx", START + 2 * PERIOD),
                                                   ("late", START + 5 * S)]     # by stamp
    errors = {q.id: error for q, error in failed}
    assert type(errors["idx_out"]).__name__ == "NoFrameError"
    assert "no message 9" in str(errors["idx_out"]) and "--topic" in str(errors["no_topic"])
    ready, failed = resolve_stamps(qs[1:2], None, None)
    assert not ready and "pass --bag" in str(failed[0][1])
    ready, _ = resolve_stamps(qs[3:], "/other", None)
    assert ready[0].topic == "/other"


@pytest.mark.skipif(available("rclpy"), reason="checks the error shown where ROS is absent")
def test_eval_live_without_ros_is_a_clear_error(tmp_path, capsys):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"id": "a", "stamp_ns": START, "question": "Where?",
                                 "reference": "Yes.", "category": "left_predicate"}) + "\n")
    rc = main(["--questions", str(qfile), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a ROS 2 runtime" in err and "Traceback" not in err


# -------------------------------------------------------------------------------------------------
# with ROS 2: the client against a SpatialQuery service and an image publisher


@pytest.mark.ros
def test_live_client_against_a_running_service(tmp_path, capsys):
    rclpy = pytest.importorskip("rclpy", reason=NO_RCLPY)
    srv = pytest.importorskip(
        "spatialgeo_ros.srv",
        reason="needs the generated spatialgeo_ros interfaces: colcon build, then source "
               "install/setup.bash")
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    ns = "/sg_live_eval_test"
    asked = []

    def handle(request, response):
        asked.append(request)
        response.status.code = 0
        response.answer = "Region [0] is 2.1 meters from Region [1]."
        response.header.stamp = request.stamp
        response.header.frame_id = "cam"
        return response

    context = rclpy.Context()
    rclpy.init(context=context)
    server = rclpy.create_node("fake_spatialgeo_node", context=context)
    server.create_service(srv.SpatialQuery, f"{ns}/spatial_query", handle)
    publisher = server.create_publisher(Image, f"{ns}/image", 10)
    tick = {"i": 0}

    def publish():
        i = tick["i"] % 5
        tick["i"] += 1
        msg = Image(height=4, width=4, encoding="rgb8", is_bigendian=0, step=12,
                    data=bytes(48))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(START + i * PERIOD, S)
        publisher.publish(msg)

    server.create_timer(0.05, publish)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(server)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        mask = np.zeros((4, 4), bool)
        mask[1:3, 1:3] = True
        lines = [
            {"id": "a", "stamp_ns": START + PERIOD, "question": "How far is Region [0] from "
             "Region [1]?", "regions": [{"box": [0, 0, 2, 2]}, {"mask_rle": encode_rle(mask)}],
             "reference": "2 meters.", "category": "distance_data"},
            {"id": "by_index", "frame_index": 1, "question": "Where?", "reference": "Yes.",
             "category": "left_predicate"},
            {"id": "never", "stamp_ns": START + 100 * S, "question": "Where?",
             "reference": "Yes.", "category": "left_predicate"},
        ]
        qfile = tmp_path / "q.jsonl"
        qfile.write_text("".join(json.dumps(x) + "\n" for x in lines))
        out = tmp_path / "out"
        t0 = time.monotonic()
        rc = main(["--questions", str(qfile), "--out", str(out),
                   "--service", f"{ns}/spatial_query", "--topic", f"{ns}/image",
                   "--wait-s", "3", "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        assert time.monotonic() - t0 < 60
    finally:
        executor.shutdown()
        server.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)
    res = {r["question_id"]: r for r in map(json.loads, (out / "results.jsonl").open())}
    assert res["a"]["status"] == "ok" and res["a"]["score"]["success"]
    assert res["a"]["frame_stamp_ns"] == START + PERIOD
    assert res["by_index"]["status"] == "error" and "pass --bag" in res["by_index"]["error"]
    assert res["never"]["status"] == "error" and "no frame stamped" in res["never"]["error"]
    (request,) = asked
    assert len(request.regions) == 2 and request.regions[1].mask.encoding == "mono8"
    assert (request.stamp.sec, request.stamp.nanosec) == divmod(START + PERIOD, S)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_answered"] == 1 and metrics["errors"]["total"] == 2
