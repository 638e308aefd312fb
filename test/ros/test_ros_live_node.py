"""The node run for real: spatialgeo_node started from its installed executable with
launch/spatialgeo_params.yaml and the embedded model, driven over DDS by an rclpy client
(discovery on localhost only, a domain id of this run's own; helpers in live_ros.py).

Needs a sourced ROS 2 environment with this package built: `scripts/ros2_env.sh DIR` makes one
from PyPI's wheels. Skipped with a reason elsewhere; .ci/run runs these through `colcon test` and
fails when they did not run. The tests share three node processes and run in file order:
/sglive (lifecycle, queries, action, bad input, the burst, cleanup, one Ctrl-C), /sgcomp
(cameras.transport compressed, two Ctrl-C) and /sgfin (finalized).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip(
    "rclpy", reason="needs a ROS 2 runtime (rclpy): source a workspace, or scripts/ros2_env.sh")
try:
    import spatialgeo_ros.msg  # noqa: F401  (the generated interfaces: a built workspace)
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    get_package_prefix("spatialgeo_ros")
except (ImportError, PackageNotFoundError) as exc:
    pytest.skip(f"spatialgeo_ros is not built in the sourced environment ({exc}): colcon build "
                "it, or run scripts/ros2_env.sh", allow_module_level=True)

from lifecycle_msgs.msg import Transition  # noqa: E402
from live_ros import (  # noqa: E402
    HEIGHT,
    WIDTH,
    Camera,
    Client,
    NodeProcess,
    image_msg,
    rgb_frame,
    seconds,
    stamp_ns,
    wait_future,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from spatialgeo_ros.action import SpatialQueryStream  # noqa: E402
from spatialgeo_ros.msg import QueryStatus, Region  # noqa: E402

from spatialgeo_ros.params import PARAMS  # noqa: E402

CONFIGURE, ACTIVATE = Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE
DEACTIVATE, CLEANUP = Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP
SHUTDOWN = Transition.TRANSITION_UNCONFIGURED_SHUTDOWN
OK, BUSY = QueryStatus.OK, QueryStatus.BUSY
INVALID, NOT_READY = QueryStatus.INVALID_REQUEST, QueryStatus.MODEL_NOT_READY
NO_FRAME, STALE = QueryStatus.NO_FRAME, QueryStatus.STALE_FRAME
INFERENCE_ERROR, CANCELLED = QueryStatus.INFERENCE_ERROR, QueryStatus.CANCELLED
LIVE, COMP, FIN = "sglive", "sgcomp", "sgfin"
BURST_SERVICE_CALLS, BURST_GOALS = 64, 16
DEFAULTS = {p.name: p.default for p in PARAMS}


def box(x1, y1, x2, y2) -> Region:
    return Region(has_box=True, x_min=float(x1), y_min=float(y1), x_max=float(x2),
                  y_max=float(y2))


def assert_clean_exit(node: NodeProcess, code) -> None:
    out = node.output()
    assert code == 0, f"{node.name} exited with {code}:\n{out[-3000:]}"
    assert "Traceback" not in out and "process has died" not in out, out[-3000:]


@pytest.fixture(scope="module")
def client():
    c = Client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    node = NodeProcess(LIVE, tmp_path_factory.mktemp("live") / "sglive.log")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def camera(client):
    cam = Camera(client, f"/{LIVE}/image")
    yield cam
    cam.stop()


def activate(client: Client, node: NodeProcess) -> None:
    """Whatever the node's state, make it active (configure loads the embedded model)."""
    state = client.state(node.name)
    if state == "active":
        return
    if state == "unconfigured":
        assert client.transition(node.name, CONFIGURE), node.output()[-3000:]
    assert client.transition(node.name, ACTIVATE), node.output()[-3000:]
    assert client.state(node.name) == "active"


def query_once_frames_arrive(client: Client, ns: str, question: str = "Where is it?"):
    """A stamp-zero query, asked again while the camera's frames have not arrived yet (a new
    best-effort subscription matches the camera's publisher within a second or two)."""
    end = time.monotonic() + 30.0
    while True:
        reply = client.query(ns, question)
        if reply.status.code not in (NO_FRAME, STALE) or time.monotonic() > end:
            return reply
        time.sleep(0.2)


def publish_frame(client: Client, topic: str, rgb: np.ndarray | None = None, **kwargs) -> int:
    """One frame stamped now, published a few times (best effort); its stamp."""
    ns = client.now_ns()
    msg = image_msg(rgb if rgb is not None else rgb_frame(99), ns, **kwargs)
    pub = client.publisher(Image, topic)
    for _ in range(3):
        pub.publish(msg)
        time.sleep(0.05)
    time.sleep(0.3)
    return ns


# ---- lifecycle ----------------------------------------------------------------------------------
def test_failed_configure_leaves_the_node_alive_and_says_why(client, live):
    assert client.state(live.name) == "unconfigured"
    answer = client.query(LIVE, "Where is it?")
    assert answer.status.code == NOT_READY and "not configured" in answer.status.message
    assert client.set_string(live.name, "model.path", "/nonexistent/spatialgeo-model")
    assert not client.transition(live.name, CONFIGURE)
    assert live.alive() and client.state(live.name) == "unconfigured"
    answer = client.query(LIVE, "Where is it?")
    assert answer.status.code == NOT_READY and "failed to load" in answer.status.message
    assert "/nonexistent/spatialgeo-model" in live.output()
    assert client.set_string(live.name, "model.path", "")      # the embedded model again


def test_every_lifecycle_transition(client, live, camera):
    name = live.name
    assert client.transition(name, CONFIGURE)
    assert client.state(name) == "inactive"
    camera.start()
    time.sleep(0.5)
    inactive = client.query(LIVE, "Where is it?")
    assert inactive.status.code == NOT_READY and "not active" in inactive.status.message
    assert client.transition(name, ACTIVATE) and client.state(name) == "active"
    assert query_once_frames_arrive(client, LIVE).status.code == OK
    assert client.transition(name, DEACTIVATE) and client.state(name) == "inactive"
    assert client.query(LIVE, "Where is it?").status.code == NOT_READY
    assert client.transition(name, CLEANUP) and client.state(name) == "unconfigured"
    assert "model released" in live.output()
    assert client.transition(name, CONFIGURE) and client.state(name) == "inactive"
    assert client.transition(name, ACTIVATE) and client.state(name) == "active"
    assert query_once_frames_arrive(client, LIVE).status.code == OK


# ---- queries ------------------------------------------------------------------------------------
def test_latest_and_stamped_queries(client, live, camera):
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    regions = [box(2, 10, 20, 30), box(30, 12, 60, 40)]
    exact = client.query(LIVE, "How far is Region [0] from Region [1]?", stamp=ns,
                         regions=regions, max_new_tokens=24)
    assert exact.status.code == OK, exact.status.message
    assert exact.answer and stamp_ns(exact.header.stamp) == ns
    assert exact.header.frame_id == "test_camera_optical"
    assert seconds(exact.latency) > 0.0
    if exact.has_value:
        assert exact.unit in ("m", "o'clock") and math.isfinite(exact.value)
    near = client.query(LIVE, "How far is Region [0] from Region [1]?", stamp=ns + 30_000_000,
                        regions=regions, max_new_tokens=24)
    assert near.status.code == OK and stamp_ns(near.header.stamp) == ns
    assert near.answer == exact.answer                    # the same frame, greedy decoding
    latest = client.query(LIVE, "What is in front of the camera?")
    assert latest.status.code == OK and stamp_ns(latest.header.stamp) == ns


def test_no_frame_and_stale_frame(client, live, camera):
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    future = client.query(LIVE, "Where?", stamp=ns + 60 * 1_000_000_000)
    assert future.status.code == NO_FRAME and future.status.message and not future.answer
    old = client.query(LIVE, "Where?", stamp=ns - 3600 * 1_000_000_000)
    assert old.status.code == STALE and old.status.message and not old.answer
    time.sleep(DEFAULTS["frames.max_age"] + 0.2)      # the latest frame is now too old
    latest = client.query(LIVE, "Where?")
    assert latest.status.code == STALE and "frames.max_age" in latest.status.message


def test_answers_topic_and_diagnostics(client, live, camera):
    activate(client, live)
    answers = client.watch_answers(LIVE)
    time.sleep(1.0)                      # the subscription is matched
    camera.start()
    t0 = time.monotonic()
    reply = query_once_frames_arrive(client, LIVE, "Which object is closer?")
    assert reply.status.code == OK
    end = time.monotonic() + 15.0
    while time.monotonic() < end and not (answers.since(t0) and mine(client.diagnostics.since(
            t0), live)):
        time.sleep(0.1)
    published = [a for a in answers.since(t0) if a.question == "Which object is closer?"]
    assert published and published[-1].status.code == OK
    assert published[-1].answer == reply.answer and published[-1].camera == "camera"
    status = mine(client.diagnostics.since(t0), live)[-1]
    values = {kv.key: kv.value for kv in status.values}
    assert values["model_state"] == "loaded" and values["serving"] == "true"
    assert {"queue_depth", "latency_p50_s", "latency_p95_s", "count_ok",
            "camera_camera_latest_age_s"} <= set(values)
    assert int(values["count_ok"]) >= 1


def mine(arrays, node: NodeProcess) -> list:
    return [s for a in arrays for s in a.status if s.name.startswith(f"{node.name}:")]


# ---- the action ---------------------------------------------------------------------------------
def goal(question: str, max_new_tokens: int, stamp: int = 0, regions=()):
    g = SpatialQueryStream.Goal(question=question, regions=list(regions))
    g.stamp.sec, g.stamp.nanosec = divmod(stamp, 1_000_000_000)
    g.limits.max_new_tokens = max_new_tokens
    g.limits.timeout_s = 120.0
    return g


def test_action_streams_feedback_and_finishes(client, live, camera):
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    feedback = []
    action = client.action(LIVE)
    handle = wait_future(action.send_goal_async(
        goal("How far is Region [0] from Region [1]?", 24, ns, [box(2, 10, 20, 30),
                                                                 box(30, 12, 60, 40)]),
        feedback_callback=lambda fb: feedback.append(fb.feedback.partial_answer)), 60.0)
    assert handle is not None and handle.accepted
    result = wait_future(handle.get_result_async(), 180.0)
    assert result is not None and result.result.status.code == OK, result
    assert feedback, "no feedback while the answer was generated"
    for partial in feedback:
        assert result.result.answer.startswith(partial.strip())


def test_action_cancel(client, live, camera):
    """A goal queued behind three long answers is cancelled while it waits: CANCELLED, and the
    goal ends canceled; the answers before it are not disturbed."""
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    regions = [box(2, 10, 20, 30), box(30, 12, 60, 40)]
    ahead = [client.query_async(LIVE, client.query_request(
        "How far is Region [0] from Region [1]?", stamp=ns, regions=regions,
        max_new_tokens=24)) for _ in range(3)]
    action = client.action(LIVE)
    handle = wait_future(action.send_goal_async(goal("Describe the scene.", 24, ns)), 60.0)
    assert handle is not None and handle.accepted
    cancel = wait_future(handle.cancel_goal_async(), 30.0)
    assert cancel is not None and len(cancel.goals_canceling) == 1, cancel
    result = wait_future(handle.get_result_async(), 120.0)
    assert result is not None and result.result.status.code == CANCELLED, result
    assert result.status == 5                                # GoalStatus.STATUS_CANCELED
    assert [wait_future(f, 180.0).status.code for f in ahead] == [OK] * 3


def test_action_busy(client, live, camera):
    """More goals than query.max_pending admits at once: the others end BUSY, as an aborted goal
    whose result says so."""
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    action = client.action(LIVE)
    n = DEFAULTS["query.max_pending"] + 2
    handles = [wait_future(action.send_goal_async(goal("Describe the scene.", 8, ns)), 60.0)
               for _ in range(n)]
    assert all(h is not None and h.accepted for h in handles)
    results = [wait_future(h.get_result_async(), 180.0) for h in handles]
    codes = [r.result.status.code for r in results]
    assert set(codes) <= {OK, BUSY} and codes.count(BUSY) >= 1, codes
    busy = next(r for r in results if r.result.status.code == BUSY)
    assert "query.max_pending" in busy.result.status.message and busy.status == 6  # ABORTED


# ---- bad input ----------------------------------------------------------------------------------
def mask(encoding: str = "mono8", width: int = WIDTH, height: int = HEIGHT,
         data_bytes: int | None = None) -> Image:
    n = width * height if data_bytes is None else data_bytes
    return Image(height=height, width=width, encoding=encoding, step=width,
                 data=bytes([255]) * n)


BAD_REQUESTS = {
    "empty question": (dict(question="   "), INVALID),
    "question too long": (dict(question="x" * (DEFAULTS["query.max_question_chars"] + 1)),
                          INVALID),
    "unknown camera": (dict(question="Where?", camera="no_such_camera"), INVALID),
    "too many regions": (dict(question="Where?", regions=[box(1, 1, 5, 5)] * (
        DEFAULTS["query.max_regions"] + 1)), INVALID),
    "missing Region [1]": (dict(question="Is Region [1] big?", regions=[box(1, 1, 5, 5)]),
                           INVALID),
    "region with neither box nor mask": (dict(question="Where is Region [0]?",
                                              regions=[Region()]), INVALID),
    "non-finite box": (dict(question="Where is Region [0]?",
                            regions=[box(1, 1, float("nan"), 5)]), INVALID),
    "box outside the image": (dict(question="Is Region [0] big?", regions=[
        box(10, 10, 500, 20)]), INVALID),
    "inverted box": (dict(question="Is Region [0] big?", regions=[box(20, 20, 10, 10)]),
                     INVALID),
    "mask of a colour encoding": (dict(question="Where is Region [0]?",
                                       regions=[Region(mask=mask("rgb8"))]), INVALID),
    "mask data too short": (dict(question="Where is Region [0]?",
                                 regions=[Region(mask=mask(data_bytes=10))]), INVALID),
    "mask of another size": (dict(question="Where is Region [0]?",
                                  regions=[Region(mask=mask(width=8, height=8))]), INVALID),
    "max_new_tokens over the limit": (dict(question="Where?", max_new_tokens=DEFAULTS[
        "query.max_new_tokens_limit"] + 1), INVALID),
    "temperature not finite": (dict(question="Where?", temperature=float("nan")), INVALID),
    "negative temperature": (dict(question="Where?", temperature=-1.0), INVALID),
    "timeout over the limit": (dict(question="Where?", timeout_s=DEFAULTS[
        "query.max_timeout"] + 1), INVALID),
    "negative timeout": (dict(question="Where?", timeout_s=-1.0), INVALID),
    "stamp in the future": (dict(question="Where?", stamp_offset=60 * 1_000_000_000), NO_FRAME),
    "stamp before every frame": (dict(question="Where?", stamp_offset=-3600 * 1_000_000_000),
                                 STALE),
}


def test_every_bad_request_gets_a_status_and_the_next_good_one_an_answer(client, live, camera):
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    for what, (kwargs, expected) in BAD_REQUESTS.items():
        kwargs = dict(kwargs)
        offset = kwargs.pop("stamp_offset", None)
        kwargs.setdefault("stamp", ns + offset if offset is not None else ns)
        reply = client.query(LIVE, **kwargs)
        assert reply.status.code == expected, f"{what}: {reply.status.message}"
        assert reply.status.message and not reply.answer, what
        good = client.query(LIVE, "Where is Region [0]?", stamp=ns, regions=[box(2, 2, 30, 30)])
        assert good.status.code == OK, f"after {what}: {good.status.message}"
    assert live.alive() and "Traceback" not in live.output()


BAD_FRAMES = {
    "step shorter than a row": dict(step=WIDTH * 3 - 1),
    "unknown encoding": dict(encoding="bayer_grbg8_unknown"),
    "depth encoding": dict(encoding="32FC1", step=WIDTH * 4),
    "data shorter than its rows": dict(step=WIDTH * 6),
}


def test_every_bad_camera_message_gets_a_status(client, live, camera):
    activate(client, live)
    camera.stop()
    for what, kwargs in BAD_FRAMES.items():
        ns = publish_frame(client, f"/{LIVE}/image", **kwargs)
        reply = client.query(LIVE, "Where?", stamp=ns)
        assert reply.status.code == INFERENCE_ERROR, f"{what}: {reply.status.message}"
        assert "frame could not be used" in reply.status.message and not reply.answer, what
        good_ns = publish_frame(client, f"/{LIVE}/image")
        good = client.query(LIVE, "Where?", stamp=good_ns)
        assert good.status.code == OK, f"after {what}: {good.status.message}"
    out = live.output()
    assert live.alive() and "Traceback" not in out
    assert "frame could not be used: step" in out            # one line per bad frame


# ---- the burst ----------------------------------------------------------------------------------
def test_burst_every_request_answered_none_lost(client, live, camera):
    """64 service calls and 16 action goals sent at once, while the camera streams at 10 Hz:
    every one ends OK or BUSY within its timeout, and frames keep being stored."""
    activate(client, live)
    camera.start()
    time.sleep(1.0)
    action = client.action(LIVE)
    t0 = time.monotonic()
    done_at = {}
    calls = [client.query_async(LIVE, client.query_request(
        "How far is Region [0] from Region [1]?", regions=[box(2, 10, 20, 30),
                                                            box(30, 12, 60, 40)],
        max_new_tokens=2, timeout_s=120.0)) for _ in range(BURST_SERVICE_CALLS)]
    for i, call in enumerate(calls):
        call.add_done_callback(lambda _, i=i: done_at.setdefault(i, time.monotonic()))
    goals = [action.send_goal_async(goal("Describe the scene.", 2))
             for _ in range(BURST_GOALS)]
    deadline = t0 + 240.0              # each request's timeout is 120 s
    replies = [wait_future(c, deadline - time.monotonic()) for c in calls]
    handles = [wait_future(g, deadline - time.monotonic()) for g in goals]
    results = [wait_future(h.get_result_async(), deadline - time.monotonic())
               if h is not None else None for h in handles]
    t_end = time.monotonic()
    time.sleep(1.5)                               # the last diagnostics of the burst arrive
    camera.stop()

    lost = sum(r is None for r in replies) + sum(r is None for r in results)
    codes = [r.status.code for r in replies if r is not None] + [
        r.result.status.code for r in results if r is not None]
    client_latency = sorted(done_at[i] - t0 for i in done_at)
    node_latency = sorted(seconds(r.latency) for r in replies if r is not None)
    report = (f"burst: {len(codes)} of {BURST_SERVICE_CALLS + BURST_GOALS} answered, "
              f"{codes.count(OK)} OK, {codes.count(BUSY)} BUSY, {lost} lost; service calls "
              f"client p50/p95 {pct(client_latency, 50):.2f}/{pct(client_latency, 95):.2f} s, "
              f"node-reported p50/p95 {pct(node_latency, 50):.2f}/{pct(node_latency, 95):.2f} s")
    print(report)
    assert lost == 0, report
    assert set(codes) <= {OK, BUSY} and codes.count(OK) >= 1, report
    assert all(h.accepted for h in handles)

    ages = [float(kv.value) for s in mine(client.diagnostics.since(t0), live) for kv in s.values
            if kv.key == "camera_camera_latest_age_s" and kv.value != "n/a"]
    during = t_end - t0
    assert ages, f"no /diagnostics status during the {during:.1f} s burst"
    assert max(ages) < 0.5, f"latest frame ages during the burst: {ages}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


# ---- cleanup and Ctrl-C -------------------------------------------------------------------------
def test_cleanup_releases_the_model(client, live, camera):
    activate(client, live)
    camera.stop()
    released = live.output().count("model released")
    assert client.transition(live.name, DEACTIVATE) and client.transition(live.name, CLEANUP)
    assert live.output().count("model released") == released + 1
    reply = client.query(LIVE, "Where?")
    assert reply.status.code == NOT_READY and "not configured" in reply.status.message
    t0 = time.monotonic()
    time.sleep(DEFAULTS["output.diagnostics_period"] * 2 + 0.5)
    status = mine(client.diagnostics.since(t0), live)[-1]
    assert {kv.key: kv.value for kv in status.values}["model_state"] == "unloaded"


def test_one_ctrl_c_ends_an_active_node_cleanly(client, live, camera):
    activate(client, live)                       # the model loaded again
    released = live.output().count("model released")
    camera.start()
    time.sleep(0.5)
    live.sigint()
    code = live.wait(60.0)
    camera.stop()
    assert_clean_exit(live, code)
    assert live.output().count("model released") == released + 1


# ---- compressed images, two Ctrl-C --------------------------------------------------------------
def encode(rgb: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]))   # [H, W, 3] BGR
    assert ok
    return data.tobytes()


def test_compressed_images_and_two_ctrl_c(client, tmp_path):
    node = NodeProcess(COMP, tmp_path / "sgcomp.log", {"cameras.transport": "compressed"})
    try:
        activate(client, node)
        pub = client.publisher(CompressedImage, f"/{COMP}/image")

        def send(data: bytes, fmt: str) -> int:
            ns = client.now_ns()
            msg = CompressedImage(format=fmt, data=data)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            for _ in range(3):
                pub.publish(msg)
                time.sleep(0.05)
            time.sleep(0.3)
            return ns

        rgb = rgb_frame(5)
        for what, data, fmt, expected in [
                ("png", encode(rgb, ".png"), "png", OK),
                ("empty", b"", "jpeg", INFERENCE_ERROR),
                ("garbage", bytes(range(256)) * 4, "jpeg", INFERENCE_ERROR),
                ("jpeg", encode(rgb, ".jpg"), "rgb8; jpeg compressed bgr8", OK)]:
            reply = client.query(COMP, "Where?", stamp=send(data, fmt))
            assert reply.status.code == expected, f"{what}: {reply.status.message}"
            if expected != OK:
                assert "frame could not be used" in reply.status.message, what
                good = client.query(COMP, "Where?", stamp=send(encode(rgb, ".png"), "png"))
                assert good.status.code == OK, f"after {what}: {good.status.message}"
        out = node.output()
        assert "has no data" in out and "not an image that OpenCV can decode" in out
        assert "Traceback" not in out
        node.sigint(times=2)                    # a terminal and `ros2 launch` each send one
        assert_clean_exit(node, node.wait(60.0))
    finally:
        node.stop()


# ---- finalized ----------------------------------------------------------------------------------
def test_a_finalized_node_says_so(client, tmp_path):
    node = NodeProcess(FIN, tmp_path / "sgfin.log")
    try:
        assert client.transition(node.name, SHUTDOWN)
        assert client.state(node.name) == "finalized"
        reply = client.query(FIN, "Where?")
        assert reply.status.code == NOT_READY and "finalized" in reply.status.message
        node.sigint()
        assert_clean_exit(node, node.wait(60.0))
    finally:
        node.stop()
