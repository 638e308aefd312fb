"""Helpers of the real-ROS tests (test_ros_live_node.py): the installed node as a process, and an
rclpy client spinning in a thread of its own. Imported only where rclpy is.

Every process and the client use one domain id of this test run (from its process id) and
discover peers on localhost only.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image
from spatialgeo_ros.action import SpatialQueryStream
from spatialgeo_ros.msg import SpatialAnswer
from spatialgeo_ros.srv import SpatialQuery

PACKAGE = "spatialgeo_ros"
NS_PER_S = 1_000_000_000
DOMAIN_ID = 1 + os.getpid() % 100        # 1..100: ports stay below the ephemeral range
WIDTH, HEIGHT = 64, 48
# the primary state each lifecycle transition leads to when it succeeds
TRANSITION_GOAL = {Transition.TRANSITION_CONFIGURE: "inactive",
                   Transition.TRANSITION_ACTIVATE: "active",
                   Transition.TRANSITION_DEACTIVATE: "inactive",
                   Transition.TRANSITION_CLEANUP: "unconfigured",
                   Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: "finalized",
                   Transition.TRANSITION_INACTIVE_SHUTDOWN: "finalized",
                   Transition.TRANSITION_ACTIVE_SHUTDOWN: "finalized"}
REPLIES = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                     reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def ros_environment() -> dict[str, str]:
    """The environment of the node processes (and, set before rclpy.init, of the client)."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    env.pop("ROS_LOCALHOST_ONLY", None)                 # deprecated in Jazzy, clashes with it
    return env


def stamp_msg(ns: int) -> Time:
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def stamp_ns(stamp) -> int:
    return stamp.sec * NS_PER_S + stamp.nanosec


def seconds(duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


class NodeProcess:
    """spatialgeo_node started from its installed executable with the default parameters file
    (model.path "" = the embedded model), in namespace `ns`, its output in `log`."""

    def __init__(self, ns: str, log: Path, params: dict[str, str] | None = None):
        self.ns, self.log = ns, log
        exe = Path(get_package_prefix(PACKAGE)) / "lib" / PACKAGE / "spatialgeo_node"
        yaml = Path(get_package_share_directory(PACKAGE)) / "launch" / "spatialgeo_params.yaml"
        cmd = [str(exe), "--ros-args", "--params-file", str(yaml), "-r", f"__ns:=/{ns}",
               "-p", "model.device:=cpu"]
        for name, value in (params or {}).items():
            cmd += ["-p", f"{name}:={value}"]
        self._out = open(log, "wb")
        # a session of its own: a Ctrl-C of the test run does not reach it, only our signals
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=ros_environment(), start_new_session=True)

    @property
    def name(self) -> str:
        return f"/{self.ns}/spatialgeo_node"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def sigint(self, times: int = 1, gap_s: float = 0.05) -> None:
        for i in range(times):
            if i:
                time.sleep(gap_s)
            if self.alive():
                os.kill(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """End the process (SIGINT, then SIGKILL after 30 s) if a test left it running."""
        if self.alive():
            self.sigint()
            if self.wait(30.0) is None:
                self.proc.kill()
                self.proc.wait(10.0)
        self._out.close()


@dataclass
class Collected:
    """Messages a subscription received, with their receive times (monotonic)."""

    items: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, msg) -> None:
        with self.lock:
            self.items.append((time.monotonic(), msg))

    def since(self, t0: float) -> list:
        with self.lock:
            return [msg for t, msg in self.items if t >= t0]


def wait_future(future, timeout: float):
    """The future's result, or None when it is not done within `timeout` seconds."""
    if not future.done():
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(max(0.0, timeout)) and not future.done():
            return None
    return future.result()


def rgb_frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def image_msg(rgb: np.ndarray, ns: int, encoding: str = "rgb8", step: int | None = None,
              frame_id: str = "test_camera_optical") -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
                step=step if step is not None else rgb.shape[1] * 3)
    msg.header.stamp = stamp_msg(ns)
    msg.header.frame_id = frame_id
    msg.data = rgb.tobytes()
    return msg


def depth_msg(depth: np.ndarray, ns: int, encoding: str,
              frame_id: str = "test_camera_optical") -> Image:
    """A depth image (16UC1 uint16 or 32FC1 float32 [H, W]), little-endian, rows unpadded."""
    arr = np.ascontiguousarray(depth)
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
                step=arr.shape[1] * arr.itemsize)
    msg.header.stamp = stamp_msg(ns)
    msg.header.frame_id = frame_id
    msg.data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return msg


def camera_info_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                    ns: int = 0, frame_id: str = "test_camera_optical") -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5,
                     k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                     p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    msg.header.stamp = stamp_msg(ns)
    msg.header.frame_id = frame_id
    return msg


class Client:
    """An rclpy node of the tests, spun by a multi-threaded executor in a background thread."""

    def __init__(self):
        os.environ.update({k: v for k, v in ros_environment().items()
                           if k.startswith(("ROS_", "RCUTILS_"))})
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("spatialgeo_live_test", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._clients: dict = {}
        self._publishers: dict = {}
        self.diagnostics = Collected()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.add, 50)
        self.answers: dict[str, Collected] = {}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ---- endpoints (made once per name) ----------------------------------------------------
    def _client(self, kind, name: str):
        key = (kind, name)
        if key not in self._clients:
            # replies to a burst wait in the client's response queues until its executor takes
            # them: as deep as the node's request queues (the default keeps 10 and drops more)
            if kind is SpatialQueryStream:
                self._clients[key] = ActionClient(
                    self.node, kind, name, goal_service_qos_profile=REPLIES,
                    result_service_qos_profile=REPLIES, cancel_service_qos_profile=REPLIES)
            else:
                self._clients[key] = self.node.create_client(kind, name, qos_profile=REPLIES)
        return self._clients[key]

    def _send(self, kind, name: str, request):
        """The future of one request to service `name`, once it is served."""
        client = self._client(kind, name)
        assert client.wait_for_service(timeout_sec=60.0), f"{name} is not served"
        return client.call_async(request)

    def publisher(self, kind, topic: str):
        key = (kind, topic)
        if key not in self._publishers:
            self._publishers[key] = self.node.create_publisher(
                kind, topic, qos_profile_sensor_data)
        return self._publishers[key]

    def watch_answers(self, ns: str) -> Collected:
        if ns not in self.answers:
            self.answers[ns] = Collected()
            self.node.create_subscription(SpatialAnswer, f"/{ns}/answers",
                                          self.answers[ns].add, 100)
        return self.answers[ns]

    def watch(self, kind, topic: str) -> Collected:
        """Every message of `topic` from now on (a reliable subscription, depth 100)."""
        collected = Collected()
        self.node.create_subscription(kind, topic, collected.add, 100)
        return collected

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    # ---- lifecycle and parameters -----------------------------------------------------------
    # A reply can be lost when the server is new: Fast DDS drops a response whose writer has not
    # matched this client's reader within 100 ms of the request (rmw_fastrtps' "client will not
    # receive response"), which a node still starting on a loaded machine can take longer for.
    # So requests that are safe to repeat are sent again while no reply comes, and a transition
    # without a reply is judged by the state the node reached.
    def call(self, kind, name: str, request, timeout: float = 60.0,
             resend_every: float | None = 5.0):
        """The first reply to `request`, or None when none came within `timeout` s; sent again
        every `resend_every` s meanwhile (None: once, for requests not safe to repeat)."""
        end = time.monotonic() + timeout
        done = threading.Event()
        futures = []
        while True:
            futures.append(self._send(kind, name, request))
            futures[-1].add_done_callback(lambda _: done.set())
            left = end - time.monotonic()
            done.wait(max(0.0, left if resend_every is None else min(resend_every, left)))
            for future in futures:
                if future.done():
                    return future.result()
            if time.monotonic() >= end:
                return None

    def state(self, node: str) -> str:
        reply = self.call(GetState, f"{node}/get_state", GetState.Request())
        assert reply is not None, f"no reply from {node}/get_state within 60 s"
        return reply.current_state.label

    def transition(self, node: str, transition: int, timeout: float = 300.0) -> bool:
        """Whether the node carried out the transition (its reply; or, when no reply came within
        10 s, whether get_state already shows the state the transition leads to)."""
        request = ChangeState.Request(transition=Transition(id=transition))
        future = self._send(ChangeState, f"{node}/change_state", request)
        end = time.monotonic() + timeout
        while True:
            reply = wait_future(future, min(10.0, max(0.0, end - time.monotonic())))
            if reply is not None:
                return reply.success
            if self.state(node) == TRANSITION_GOAL[transition]:
                return True                 # carried out, its reply lost
            assert time.monotonic() < end, f"{node}: no reply to transition {transition} " \
                                           f"within {timeout} s"

    def set_string(self, node: str, name: str, value: str) -> bool:
        param = Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))
        reply = self.call(SetParameters, f"{node}/set_parameters",
                          SetParameters.Request(parameters=[param]))
        assert reply is not None, f"no reply from {node}/set_parameters within 60 s"
        return reply.results[0].successful

    # ---- queries ---------------------------------------------------------------------------
    def query_request(self, question: str, stamp: int = 0, camera: str = "", regions=(),
                      max_new_tokens: int = 2, timeout_s: float = 120.0,
                      temperature: float = 0.0) -> SpatialQuery.Request:
        request = SpatialQuery.Request(question=question, camera=camera, regions=list(regions))
        request.stamp = stamp_msg(stamp)
        request.limits.max_new_tokens = max_new_tokens
        request.limits.timeout_s = timeout_s
        request.limits.temperature = temperature
        return request

    def query_async(self, ns: str, request):
        return self._send(SpatialQuery, f"/{ns}/spatial_query", request)

    def query(self, ns: str, question: str, resend_every: float | None = None, **kwargs):
        """The node's reply; resend_every: for a node that answers at once (not configured,
        finalized), sent again while no reply comes, as `call` does."""
        request = self.query_request(question, **kwargs)
        timeout = request.limits.timeout_s + 60.0 if math.isfinite(
            request.limits.timeout_s) and request.limits.timeout_s > 0 else 200.0
        reply = self.call(SpatialQuery, f"/{ns}/spatial_query", request, timeout, resend_every)
        assert reply is not None, f"no reply to {question!r} within {timeout} s"
        return reply

    def action(self, ns: str) -> ActionClient:
        client = self._client(SpatialQueryStream, f"/{ns}/spatial_query_stream")
        assert client.wait_for_server(timeout_sec=60.0)
        return client


class Camera:
    """Publishes a fresh rgb8 frame, stamped now, every `period` seconds from its own thread."""

    def __init__(self, client: Client, topic: str, period: float = 0.1):
        self.client, self.period = client, period
        self.pub = client.publisher(Image, topic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pub.publish(image_msg(rgb_frame(self.sent % 8), self.client.now_ns()))
            self.sent += 1
            self._stop.wait(self.period)
