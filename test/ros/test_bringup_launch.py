"""Launch test: bringup.launch.py starts spatialgeo_node on a tiny model (the embedded default, or
$SPATIALGEO_TEST_MODEL), configures and activates it; the test publishes camera images, calls
/sgtest/spatial_query and the /sgtest/spatial_query_stream action, and checks answers, statuses,
the `answers` topic and /diagnostics.

Needs a sourced ROS 2 (Jazzy or Humble) workspace with this package built:
    colcon test --packages-select spatialgeo_ros --event-handlers console_direct+
    launch_test src/spatialgeo/test/ros/test_bringup_launch.py      # alone
Without rclpy (CI, pip installs) the module is skipped.
"""
from __future__ import annotations

import os
import time
import unittest

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip(
    "rclpy", reason="needs a ROS 2 runtime (rclpy is not on PyPI): source a ROS 2 workspace")
pytest.importorskip("launch_testing", reason="needs ROS 2's launch_testing")

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import launch_testing.markers  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description import LaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from lifecycle_msgs.msg import State  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from spatialgeo_ros.action import SpatialQueryStream  # noqa: E402
from spatialgeo_ros.msg import QueryStatus, Region, SpatialAnswer  # noqa: E402
from spatialgeo_ros.srv import SpatialQuery  # noqa: E402

NS = "sgtest"
IMAGE_TOPIC = "test_camera/image"                  # relative: /sgtest/test_camera/image
MODEL = os.environ.get("SPATIALGEO_TEST_MODEL", "")  # "" = the embedded default (tiny) model
STARTUP_S = 600.0                                  # first run builds the tiny model
WIDTH, HEIGHT = 64, 48


@pytest.mark.launch_test
@launch_testing.markers.keep_alive
def generate_test_description():
    bringup = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory("spatialgeo_ros"), "launch", "bringup.launch.py")),
        launch_arguments={
            "namespace": NS,
            "model_path": MODEL,
            "device": "cpu",
            "image_topic": IMAGE_TOPIC,
            "camera_info_topic": "test_camera/camera_info",
            "autostart": "true",
        }.items())
    return LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]), {}


def stamp_msg(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class TestSpatialQuery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("spatialgeo_launch_test", namespace=NS)
        cls.image_pub = cls.node.create_publisher(Image, IMAGE_TOPIC, 10)
        cls.query = cls.node.create_client(SpatialQuery, "spatial_query")
        cls.get_state = cls.node.create_client(GetState, "spatialgeo_node/get_state")
        cls.stream = ActionClient(cls.node, SpatialQueryStream, "spatial_query_stream")
        cls.answers = []
        cls.diagnostics = []
        cls.node.create_subscription(SpatialAnswer, "answers", cls.answers.append, 10)
        cls.node.create_subscription(DiagnosticArray, "/diagnostics", cls.diagnostics.append, 10)
        cls.frame_ns = 0

    @classmethod
    def tearDownClass(cls):
        cls.stream.destroy()
        cls.node.destroy_node()
        rclpy.shutdown()

    # ---- helpers -------------------------------------------------------------------------
    def result(self, future, timeout: float):
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        self.assertTrue(future.done(), f"no reply within {timeout} s")
        return future.result()

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def wait_until_active(self) -> None:
        self.assertTrue(self.get_state.wait_for_service(timeout_sec=60.0), "node did not start")
        end = time.monotonic() + STARTUP_S
        while time.monotonic() < end:
            state = self.result(self.get_state.call_async(GetState.Request()), 10.0)
            if state.current_state.id == State.PRIMARY_STATE_ACTIVE:
                return
            self.spin_for(1.0)
        self.fail(f"spatialgeo_node not active after {STARTUP_S} s")

    def publish_frame(self) -> int:
        """Publish one rgb8 frame (a few times: the node subscribes best effort); its stamp."""
        ns = self.node.get_clock().now().nanoseconds
        msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0,
                    step=WIDTH * 3)
        msg.header.stamp = stamp_msg(ns)
        msg.header.frame_id = "test_camera_optical"
        msg.data = bytes((x * 4 + y) % 256 for y in range(HEIGHT) for x in range(WIDTH)
                         for _ in range(3))
        for _ in range(3):
            self.image_pub.publish(msg)
            self.spin_for(0.1)
        self.spin_for(0.3)
        type(self).frame_ns = ns
        return ns

    def ask(self, question: str, stamp_ns: int = 0, camera: str = "", regions=(),
            timeout_s: float = 120.0):
        request = SpatialQuery.Request(question=question, camera=camera, regions=list(regions))
        request.stamp = stamp_msg(stamp_ns)
        request.limits.max_new_tokens = 8
        request.limits.timeout_s = timeout_s
        self.assertTrue(self.query.wait_for_service(timeout_sec=30.0))
        return self.result(self.query.call_async(request), timeout_s + 30.0)

    @staticmethod
    def box(x1, y1, x2, y2) -> Region:
        return Region(has_box=True, x_min=float(x1), y_min=float(y1), x_max=float(x2),
                      y_max=float(y2))

    # ---- tests (unittest runs them in name order) ----------------------------------------
    def test_1_answers_about_the_published_frame(self):
        self.wait_until_active()
        ns = self.publish_frame()
        resp = self.ask("How far is Region [0] from Region [1]?", stamp_ns=ns,
                        regions=[self.box(2, 10, 20, 30), self.box(30, 12, 60, 40)])
        self.assertEqual(resp.status.code, QueryStatus.OK, resp.status.message)
        self.assertIsInstance(resp.answer, str)
        self.assertEqual((resp.header.stamp.sec, resp.header.stamp.nanosec),
                         (ns // 1_000_000_000, ns % 1_000_000_000))
        self.assertEqual(resp.header.frame_id, "test_camera_optical")
        self.assertGreater(resp.latency.sec + resp.latency.nanosec * 1e-9, 0.0)
        if resp.has_value:
            self.assertIn(resp.unit, ("m", "o'clock"))
        # stamp zero: the latest frame, which is fresh
        resp = self.ask("What is in front of the camera?")
        self.assertEqual(resp.status.code, QueryStatus.OK, resp.status.message)

    def test_2_statuses(self):
        self.wait_until_active()
        ns = self.publish_frame()
        cases = [
            (dict(question="   "), QueryStatus.INVALID_REQUEST),
            (dict(question="Where?", camera="no_such_camera"), QueryStatus.INVALID_REQUEST),
            (dict(question="Is Region [0] big?", regions=[self.box(10, 10, 500, 20)]),
             QueryStatus.INVALID_REQUEST),
            (dict(question="Is Region [1] big?", regions=[self.box(1, 1, 5, 5)]),
             QueryStatus.INVALID_REQUEST),
            (dict(question="Where?", stamp_ns=ns + 60 * 1_000_000_000), QueryStatus.NO_FRAME),
            (dict(question="Where?", stamp_ns=ns - 3600 * 1_000_000_000),
             QueryStatus.STALE_FRAME),
        ]
        for kwargs, expected in cases:
            resp = self.ask(**kwargs)
            self.assertEqual(resp.status.code, expected, f"{kwargs}: {resp.status.message}")
            self.assertTrue(resp.status.message)
            self.assertEqual(resp.answer, "")

    def test_3_answers_topic_and_diagnostics(self):
        self.wait_until_active()
        self.publish_frame()
        self.ask("Which object is closer?")
        end = time.monotonic() + 10.0
        while time.monotonic() < end and not (self.answers and self.diagnostics):
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(self.answers, "nothing on /sgtest/answers")
        self.assertIn(self.answers[-1].status.code, (QueryStatus.OK, QueryStatus.BUSY))
        statuses = [s for array in self.diagnostics for s in array.status
                    if "spatialgeo_node" in s.name]
        self.assertTrue(statuses, "no spatialgeo_node status on /diagnostics")
        keys = {kv.key for kv in statuses[-1].values}
        self.assertTrue({"model_state", "queue_depth", "latency_p50_s", "latency_p95_s"} <= keys)

    def test_4_action_streams_and_finishes(self):
        self.wait_until_active()
        self.publish_frame()
        self.assertTrue(self.stream.wait_for_server(timeout_sec=30.0))
        goal = SpatialQueryStream.Goal(question="Describe Region [0].",
                                       regions=[self.box(4, 4, 40, 40)])
        goal.limits.max_new_tokens = 8
        goal.limits.timeout_s = 120.0
        feedback = []
        handle = self.result(self.stream.send_goal_async(
            goal, feedback_callback=lambda fb: feedback.append(fb.feedback.partial_answer)),
            30.0)
        self.assertTrue(handle.accepted)
        result = self.result(handle.get_result_async(), 150.0).result
        self.assertEqual(result.status.code, QueryStatus.OK, result.status.message)
        for partial in feedback:
            self.assertTrue(result.answer.startswith(partial.strip()) or not partial)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
