"""The node run for real: spatialgeo_node started from its installed executable with
launch/spatialgeo_params.yaml and the embedded model, driven over DDS by an rclpy client
(discovery on localhost only, a domain id of this run's own; helpers in live_ros.py).

Needs a sourced ROS 2 environment with this package built: `scripts/ros2_env.sh DIR` makes one
from PyPI's wheels. Skipped with a reason elsewhere; .ci/run runs these through `colcon test` and
fails when they did not run. The tests share four node processes and run in file order:
/sglive (lifecycle, queries, action, bad input, the burst, cleanup, one Ctrl-C), /sgcomp
(cameras.transport compressed, annotated image and markers off, two Ctrl-C), /sgfin (finalized)
and /sgdepth (cameras.depth: region positions, annotated_image, markers, bad depth input).
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
    camera_info_msg,
    depth_msg,
    image_msg,
    rgb_frame,
    seconds,
    stamp_ns,
    wait_future,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from spatialgeo_ros.action import SpatialQueryStream  # noqa: E402
from spatialgeo_ros.msg import PositionStatus, QueryStatus, Region  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from spatialgeo_ros.params import PARAMS  # noqa: E402

CONFIGURE, ACTIVATE = Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE
DEACTIVATE, CLEANUP = Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP
SHUTDOWN = Transition.TRANSITION_UNCONFIGURED_SHUTDOWN
OK, BUSY = QueryStatus.OK, QueryStatus.BUSY
INVALID, NOT_READY = QueryStatus.INVALID_REQUEST, QueryStatus.MODEL_NOT_READY
NO_FRAME, STALE = QueryStatus.NO_FRAME, QueryStatus.STALE_FRAME
INFERENCE_ERROR, CANCELLED = QueryStatus.INFERENCE_ERROR, QueryStatus.CANCELLED
LIVE, COMP, FIN, DEPTH = "sglive", "sgcomp", "sgfin", "sgdepth"
BURST_SERVICE_CALLS, BURST_GOALS = 64, 16
DEFAULTS = {p.name: p.default for p in PARAMS}


def box(x1, y1, x2, y2) -> Region:
    return Region(has_box=True, x_min=float(x1), y_min=float(y1), x_max=float(x2),
                  y_max=float(y2))


def two_boxes() -> list[Region]:
    """Region [0] and Region [1] of the two-region questions asked of the live node."""
    return [box(2, 10, 20, 30), box(30, 12, 60, 40)]


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
    answer = client.query(LIVE, "Where is it?", resend_every=5.0)     # the node's first query
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
    regions = two_boxes()
    exact = client.query(LIVE, "How far is Region [0] from Region [1]?", stamp=ns,
                         regions=regions, max_new_tokens=24)
    assert exact.status.code == OK, exact.status.message
    assert exact.answer and stamp_ns(exact.header.stamp) == ns
    assert exact.header.frame_id == "test_camera_optical"
    assert seconds(exact.latency) > 0.0
    if exact.has_value:
        assert exact.unit in ("m", "o'clock") and math.isfinite(exact.value)
    # cameras.depth is off: the position fields say so, one entry per region
    assert exact.positions_status.code == PositionStatus.NO_DEPTH
    assert [p.valid for p in exact.positions] == [False, False]
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
        goal("How far is Region [0] from Region [1]?", 24, ns, two_boxes()),
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
    regions = two_boxes()
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
    whose result says so. The goals are all sent before any acceptance is awaited, and each
    asks for a long answer: sent one by one on a loaded machine, short answers finished before
    the last goal arrived and none was BUSY."""
    activate(client, live)
    camera.stop()
    ns = publish_frame(client, f"/{LIVE}/image")
    action = client.action(LIVE)
    n = DEFAULTS["query.max_pending"] + 2
    long = goal("How far is Region [0] from Region [1]?", 24, ns, two_boxes())
    sent = [action.send_goal_async(long) for _ in range(n)]
    handles = [wait_future(f, 60.0) for f in sent]
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
        "How far is Region [0] from Region [1]?", regions=two_boxes(),
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
    node = NodeProcess(COMP, tmp_path / "sgcomp.log", {"cameras.transport": "compressed",
                                                       "output.publish_annotated": "false",
                                                       "output.publish_markers": "false"})
    try:
        activate(client, node)
        # the annotated image and the markers are off by parameter: no publisher at all
        assert client.node.count_publishers(f"/{COMP}/answers") == 1
        assert client.node.count_publishers(f"/{COMP}/annotated_image") == 0
        assert client.node.count_publishers(f"/{COMP}/markers") == 0
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
        reply = client.query(FIN, "Where?", resend_every=5.0)
        assert reply.status.code == NOT_READY and "finalized" in reply.status.message
        node.sigint()
        assert_clean_exit(node, node.wait(60.0))
    finally:
        node.stop()


# ---- depth: region positions, the annotated image, markers --------------------------------------
@pytest.fixture(scope="module")
def scene():
    """A 128x128 frame of the synthetic world, its registered depth (16UC1 and 32FC1), two
    regions (an object's mask, another's box) and the positions the core gives them."""
    from types import SimpleNamespace

    from spatialgeo_core.depth import depth_from_array
    from spatialgeo_core.intrinsics import CameraIntrinsics
    from spatialgeo_core.region_positions import region_positions
    from spatialgeo_core.synthetic.depth_truth import depth_array
    from spatialgeo_core.synthetic.world import make_sample
    from spatialgeo_core.types import Region as CoreRegion

    sample = make_sample(0, "test", 2)
    r, cam = sample.rendering, sample.rendering.camera
    a, b = sample.regions[:2]
    mask, box2d = r.mask(a), r.objects[b].box2d
    core = [CoreRegion(mask=mask), CoreRegion(box=tuple(float(v) for v in box2d))]
    depth16 = depth_array(r, "16UC1")
    intr = CameraIntrinsics(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    mask_msg = Image(height=cam.height, width=cam.width, encoding="mono8", step=cam.width,
                     data=(mask.astype(np.uint8) * 255).tobytes())
    return SimpleNamespace(
        rgb=sample.rgb, cam=cam, depth16=depth16, depth32=depth_array(r, "32FC1"),
        regions=[Region(mask=mask_msg), box(*box2d)], core_regions=core,
        expected=region_positions(depth_from_array(depth16), core, intr),
        info=camera_info_msg(cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy))


@pytest.fixture(scope="module")
def depth_node(client, tmp_path_factory):
    node = NodeProcess(DEPTH, tmp_path_factory.mktemp("depth") / "sgdepth.log",
                       {"cameras.depth": "true"})
    yield node
    node.stop()


def publish(client: Client, kind, topic: str, msg, times: int = 3) -> None:
    pub = client.publisher(kind, topic)
    for _ in range(times):
        pub.publish(msg)
        time.sleep(0.05)


def send_frame(client: Client, scene, depth=None, encoding: str = "16UC1") -> int:
    """A colour frame stamped now, after its depth image (if any); its stamp."""
    ns = client.now_ns()
    if depth is not None:
        publish(client, Image, f"/{DEPTH}/depth", depth_msg(depth, ns, encoding))
    publish(client, Image, f"/{DEPTH}/image", image_msg(scene.rgb, ns))
    time.sleep(0.3)
    return ns


def ask_depth(client: Client, scene, ns: int):
    return client.query(DEPTH, "How far is Region [0] from Region [1]?", stamp=ns,
                        regions=scene.regions, max_new_tokens=8)


def wait_for(collected, t0: float, stamp: int, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hits = [m for m in collected.since(t0) if stamp_ns(header_of(m).stamp) == stamp]
        if hits:
            return hits[-1]
        time.sleep(0.1)
    return None


def header_of(msg):
    return msg.markers[0].header if isinstance(msg, MarkerArray) else msg.header


def test_depth_positions_need_camera_info_then_arrive(client, depth_node, scene):
    """Without CameraInfo the answer comes with NO_CAMERA_INFO; with it, every region has the
    position the core computes from the same depth, in the frame answered about."""
    activate(client, depth_node)
    assert client.node.count_publishers(f"/{DEPTH}/annotated_image") == 1
    assert client.node.count_publishers(f"/{DEPTH}/markers") == 1
    deadline = time.monotonic() + 30.0
    while True:                     # a new best-effort subscription matches within a second
        ns = send_frame(client, scene, scene.depth16)
        reply = ask_depth(client, scene, ns)
        if reply.status.code == OK or time.monotonic() > deadline:
            break
    assert reply.status.code == OK, reply.status.message
    assert reply.positions_status.code == PositionStatus.NO_CAMERA_INFO
    assert reply.answer and [p.valid for p in reply.positions] == [False, False]

    publish(client, CameraInfo, f"/{DEPTH}/camera_info", scene.info)
    time.sleep(0.3)
    reply = ask_depth(client, scene, ns)
    assert reply.status.code == OK and reply.positions_status.code == PositionStatus.OK, \
        reply.positions_status.message
    for got, expected in zip(reply.positions, scene.expected, strict=True):
        assert got.valid and got.valid_pixels == expected.valid_pixels > 0
        assert got.region_pixels == expected.region_pixels
        np.testing.assert_allclose([got.center.x, got.center.y, got.center.z],
                                   expected.center_m, atol=1e-4)
        np.testing.assert_allclose([got.size.x, got.size.y, got.size.z], expected.size_m,
                                   atol=1e-4)
        assert stamp_ns(got.header.stamp) == ns
        assert got.header.frame_id == "test_camera_optical"


def test_annotated_image_markers_and_answers_carry_them(client, depth_node, scene):
    from spatialgeo_core.regions import PALETTE, draw_regions

    activate(client, depth_node)
    annotated = client.watch(Image, f"/{DEPTH}/annotated_image")
    markers = client.watch(MarkerArray, f"/{DEPTH}/markers")
    answers = client.watch_answers(DEPTH)
    publish(client, CameraInfo, f"/{DEPTH}/camera_info", scene.info)
    time.sleep(1.0)                                  # the subscriptions are matched
    t0 = time.monotonic()
    ns = send_frame(client, scene, scene.depth32, "32FC1")
    reply = ask_depth(client, scene, ns)
    assert reply.status.code == OK and reply.positions_status.code == PositionStatus.OK

    image = wait_for(annotated, t0, ns)
    assert image is not None, "no annotated image"
    assert image.header.frame_id == "test_camera_optical" and image.encoding == "rgb8"
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
    h = scene.rgb.shape[0]
    assert image.height > h and image.width == scene.rgb.shape[1]
    np.testing.assert_array_equal(pixels[:h], np.asarray(draw_regions(scene.rgb,
                                                                      scene.core_regions)))

    array = wait_for(markers, t0, ns)
    assert array is not None, "no markers"
    kinds = [(m.action, m.type, m.id) for m in array.markers]
    assert kinds[0][0] == Marker.DELETEALL
    cubes = [m for m in array.markers if m.type == Marker.CUBE]
    texts = [m.text for m in array.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert [c.id for c in cubes] == [0, 1] and texts[:2] == ["[0]", "[1]"]
    for cube, position in zip(cubes, reply.positions, strict=True):
        assert (cube.pose.position.x, cube.pose.position.y, cube.pose.position.z) == (
            position.center.x, position.center.y, position.center.z)
        assert cube.header.frame_id == "test_camera_optical"
    assert (round(cubes[1].color.r * 255), round(cubes[1].color.g * 255),
            round(cubes[1].color.b * 255)) == PALETTE[1]
    assert texts[-1].split() == reply.answer.split()                  # wrapped into lines

    end = time.monotonic() + 10.0
    while time.monotonic() < end and not [a for a in answers.since(t0)
                                          if stamp_ns(a.header.stamp) == ns]:
        time.sleep(0.1)
    published = [a for a in answers.since(t0) if stamp_ns(a.header.stamp) == ns][-1]
    assert published.positions_status.code == PositionStatus.OK
    assert [p.center.z for p in published.positions] == [p.center.z for p in reply.positions]


def test_action_result_carries_positions(client, depth_node, scene):
    activate(client, depth_node)
    publish(client, CameraInfo, f"/{DEPTH}/camera_info", scene.info)
    ns = send_frame(client, scene, scene.depth16)
    action = client.action(DEPTH)
    handle = wait_future(action.send_goal_async(
        goal("How far is Region [0] from Region [1]?", 8, ns, scene.regions)), 60.0)
    result = wait_future(handle.get_result_async(), 180.0)
    assert result is not None and result.result.status.code == OK
    assert result.result.positions_status.code == PositionStatus.OK
    np.testing.assert_allclose([p.center.z for p in result.result.positions],
                               [p.center_m[2] for p in scene.expected], atol=1e-4)


BAD_DEPTH = {
    "wrong size": (lambda s: (s.depth16[::2, ::2], "16UC1"), PositionStatus.INVALID_DEPTH,
                   "registered to the colour image"),
    "wrong encoding": (lambda s: (s.depth16, "mono16"), PositionStatus.INVALID_DEPTH,
                       "16UC1 or 32FC1, got 'mono16'"),
    "all pixels invalid": (lambda s: (np.zeros_like(s.depth16), "16UC1"),
                           PositionStatus.NO_VALID_DEPTH, "Region [0]: none of its"),
    "no depth image": (lambda s: (None, ""), PositionStatus.NO_DEPTH_FRAME,
                       "frames.depth_tolerance"),
}


def test_every_bad_depth_input_gets_a_status_and_the_answer_still_comes(client, depth_node,
                                                                        scene):
    activate(client, depth_node)
    publish(client, CameraInfo, f"/{DEPTH}/camera_info", scene.info)
    for what, (make, code, match) in BAD_DEPTH.items():
        depth, encoding = make(scene)
        ns = send_frame(client, scene, depth, encoding)
        reply = ask_depth(client, scene, ns)
        assert reply.status.code == OK and reply.answer, f"{what}: {reply.status.message}"
        assert reply.positions_status.code == code, f"{what}: {reply.positions_status.message}"
        assert match in reply.positions_status.message, what
        assert len(reply.positions) == 2 and not all(p.valid for p in reply.positions), what
    bad_info = CameraInfo(width=scene.cam.width, height=scene.cam.height)  # not calibrated
    publish(client, CameraInfo, f"/{DEPTH}/camera_info", bad_info)
    time.sleep(0.3)
    ns = send_frame(client, scene, scene.depth16)
    reply = ask_depth(client, scene, ns)
    assert reply.status.code == OK
    assert reply.positions_status.code == PositionStatus.INVALID_CAMERA_INFO
    assert "K is zero" in reply.positions_status.message
    publish(client, CameraInfo, f"/{DEPTH}/camera_info", scene.info)       # good again
    time.sleep(0.3)
    reply = ask_depth(client, scene, ns)
    assert reply.positions_status.code == PositionStatus.OK
    out = depth_node.output()
    assert depth_node.alive() and "Traceback" not in out
    depth_node.sigint()
    assert_clean_exit(depth_node, depth_node.wait(60.0))
