"""spatialgeo_node: a ROS 2 lifecycle node that answers spatial questions about camera frames.

One of the two executables of the ROS layer (with live_eval_client.py, the eval_live client),
and the only module of the node that imports rclpy. Everything it decides is in plain-Python
modules tested without ROS: parameters (params.py), message conversions (conversions.py,
geometry_conversions.py), request validation (request_validation.py), frame selection
(spatialgeo_core.frames), the bounded queue (inference_queue.py), the request path and timeouts
(query_service.py), statuses (outcomes.py), region positions (position_source.py) and
diagnostics (diagnostics.py). The answer itself is the core's: spatialgeo_core.serving.

Lifecycle:
- configure: read parameters, load the pipeline (a failure is a logged FAILURE transition),
  subscribe the cameras, create the `answers` publisher.
- activate: serve. Before that, and when inactive, queries get MODEL_NOT_READY.
- deactivate: stop serving; running requests finish.
- cleanup / shutdown: stop the worker, drop frames and features, release the model (GPU memory).

Topics, relative so launch remaps them: per camera `image` (sensor_msgs/Image, or CompressedImage
with cameras.transport=compressed), `camera_info` and, with cameras.depth, `depth` (a
sensor_msgs/Image registered to the colour image, 16UC1 or 32FC1); `answers` (SpatialAnswer),
`annotated_image` (sensor_msgs/Image, output.publish_annotated) and `markers`
(visualization_msgs/MarkerArray, output.publish_markers) out; /diagnostics (diagnostic_msgs).
Service `spatial_query` (SpatialQuery), action `spatial_query_stream` (SpatialQueryStream).

Threads: camera callbacks run in their own callback group and only store the message (decoding
happens later, on the inference worker, for the frames asked about). Queries run in a reentrant
group on a multi-threaded executor and wait for the queue's single inference worker. The
executor has a thread for every request query.max_pending can ever admit (its range's maximum)
plus spares, created only when needed, so however max_pending is set, an admitted request never
waits for a thread and never takes the threads that camera callbacks, BUSY replies and
diagnostics need. Requests that arrive together wait in the services' request queues
(query.request_queue_depth deep, read at start) until the executor takes them.

Ctrl-C: the first SIGINT stops the executor (rclpy's handler) and main() releases the model; a
second one (a terminal and `ros2 launch` each send one) is ignored, so nothing interrupts that.
"""
from __future__ import annotations

import gc
import logging
import signal
import sys
import time
from dataclasses import replace
from functools import partial

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import Marker, MarkerArray

from spatialgeo_core.image_msgs import depth_to_meters
from spatialgeo_core.intrinsics import from_camera_info
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_ros.action import SpatialQueryStream
from spatialgeo_ros.conversions import (
    check_compressed_decoding,
    decode_compressed,
    fill_result,
    image_to_rgb,
    request_from_msg,
    set_duration,
    stamp_to_ns,
)
from spatialgeo_ros.diagnostics import ModelState, build_diagnostics
from spatialgeo_ros.geometry_conversions import fill_markers, fill_positions, fill_rgb_image
from spatialgeo_ros.msg import RegionPosition, SpatialAnswer
from spatialgeo_ros.outcomes import QueryOutcome, Status, outcome_for_exception
from spatialgeo_ros.params import (
    PARAMS,
    NodeParams,
    ParamSpec,
    camera_topics,
    depth_topics,
    params_from_values,
)
from spatialgeo_ros.position_source import PositionSource
from spatialgeo_ros.query_service import QueryService
from spatialgeo_ros.srv import SpatialQuery

NODE_NAME = "spatialgeo_node"
logger = logging.getLogger(__name__)
# Executor threads: one for every request query.max_pending may admit, plus spares for camera
# callbacks, BUSY replies, the action's bookkeeping and diagnostics.
_SPARE_THREADS = 8
EXECUTOR_THREADS = int(next(p.max for p in PARAMS if p.name == "query.max_pending")) \
    + _SPARE_THREADS
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

_PARAM_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "float": ParameterType.PARAMETER_DOUBLE,
    "str": ParameterType.PARAMETER_STRING,
    "str_array": ParameterType.PARAMETER_STRING_ARRAY,
}
_DIAG_LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN,
                "ERROR": DiagnosticStatus.ERROR}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of one entry of params.PARAMS."""
    desc = ParameterDescriptor(
        name=spec.name, type=_PARAM_TYPES[spec.kind], description=spec.description,
        additional_constraints=spec.constraints_text())
    if spec.kind == "int" and spec.min is not None and spec.max is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max),
                                           step=1)]
    elif spec.kind == "float" and spec.min is not None and spec.max is not None:
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return desc


class SpatialGeoNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._param_errors: list[str] = []
        for spec in PARAMS:
            self._declare(spec)
        self._params: NodeParams | None = None
        self._pipeline = None
        self._service: QueryService | None = None
        self._model_state = ModelState.UNLOADED
        self._model_detail = ""
        self._device = ""
        self._camera_subs = []
        self._answers_pub = None
        self._annotated_pub = None
        self._markers_pub = None
        self._zero_stamp_warned: set[str] = set()
        self._finalized = False
        self._camera_info: dict[str, CameraInfo] = {}   # latest per camera

        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._query_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        # Served in every state, so a client never waits on a missing service: MODEL_NOT_READY
        # until the node is active. The request queues are deep enough for a burst: the default
        # services QoS keeps 10 requests, and the 11th of a burst was dropped unanswered.
        requests = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(self.get_parameter("query.request_queue_depth").value),
            reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self._query_srv = self.create_service(
            SpatialQuery, "spatial_query", self._on_query, qos_profile=requests,
            callback_group=self._query_group)
        self._action_server = ActionServer(
            self, SpatialQueryStream, "spatial_query_stream",
            execute_callback=self._on_stream_goal, goal_callback=self._on_goal_request,
            cancel_callback=self._on_cancel_request, callback_group=self._query_group,
            goal_service_qos_profile=requests, result_service_qos_profile=requests,
            cancel_service_qos_profile=requests)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("output.diagnostics_period").value
        self._diag_timer = self.create_timer(
            float(period), self._publish_diagnostics, callback_group=self._diag_group)

    def _declare(self, spec: ParamSpec) -> None:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        try:
            self.declare_parameter(spec.name, default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            # A bad override (wrong type, out of range) must not crash the process: keep the
            # default and fail the configure transition with this message.
            self._param_errors.append(f"{spec.name}: {exc}")
            self.declare_parameter(spec.name, default, descriptor(spec), ignore_override=True)

    # ---- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        if self._param_errors:
            log.error("configure failed: invalid parameters: " + "; ".join(self._param_errors))
            return FAILURE
        try:
            params = params_from_values(
                {spec.name: self.get_parameter(spec.name).value for spec in PARAMS})
        except ValueError as exc:
            log.error(f"configure failed: {exc}")
            return FAILURE
        self._model_state, self._model_detail = ModelState.LOADING, ""
        where = params.model.path or "the embedded default model"
        t0 = time.monotonic()
        try:
            pipeline, device = self._load_pipeline(params.model)
        except Exception as exc:  # any load failure is a failed transition, never a crash
            self._model_state = ModelState.FAILED
            self._model_detail = f"{type(exc).__name__}: {exc}"
            log.error(f"configure failed: cannot load {where}: {self._model_detail}")
            return FAILURE
        self._pipeline, self._device, self._params = pipeline, device, params
        self._model_state = ModelState.LOADED
        # Raw images: conversions.image_to_rgb, not cv_bridge's imgmsg_to_cv2, whose Python
        # passthrough misreads rows when `step` is not a multiple of the pixel size and calls
        # ndarray.newbyteorder (gone in NumPy 2) on big-endian data. Compressed:
        # conversions.decode_compressed (cv_bridge where installed, else OpenCV).
        compressed = params.cameras.transport == "compressed"
        decode = decode_compressed if compressed else image_to_rgb
        try:
            if compressed:
                check_compressed_decoding()      # MissingDependencyError naming the package
            self._service = QueryService(
                pipeline, params.cameras.names, params.frames, params.query,
                params.cameras.buffer_size, decode=decode,
                positions=self._position_source(params),
                annotate=params.output.publish_annotated and self._annotated_wanted)
            for camera, info in self._camera_info.items():   # received before this configure
                if camera in params.cameras.names:
                    self._service.set_camera_info(camera, info)
            self._subscribe_cameras(params)
            self._answers_pub = self.create_lifecycle_publisher(SpatialAnswer, "answers", 10)
            if params.output.publish_annotated:
                self._annotated_pub = self.create_lifecycle_publisher(
                    Image, "annotated_image", 10)
            if params.output.publish_markers:
                self._markers_pub = self.create_lifecycle_publisher(MarkerArray, "markers", 10)
        except Exception as exc:  # e.g. an invalid topic name: fail the transition, free the model
            log.error(f"configure failed: {type(exc).__name__}: {exc}")
            self.release_resources()
            return FAILURE
        log.info(f"configured: {where} loaded on {device} in {time.monotonic() - t0:.1f} s; "
                 f"cameras: {', '.join(params.cameras.names)}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._service.start()
        self.get_logger().info("active: serving spatial_query and spatial_query_stream")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._service.pause("the node is inactive: activate it to serve queries")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_resources()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._finalized = True
        self.release_resources()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in lifecycle state {state.label}: releasing the model")
        self.release_resources()
        return SUCCESS

    @staticmethod
    def _load_pipeline(options: LoadOptions):
        """The pipeline `options` (the model.* parameters) describe; model.path "" is the
        embedded default model."""
        from spatialgeo_core.default_model import embedded_model_path
        from spatialgeo_core.pipeline import SpatialGeoPipeline

        if options.path is None:
            options = replace(options, path=str(embedded_model_path()))
        pipeline = SpatialGeoPipeline.from_pretrained(options)
        return pipeline, str(pipeline.device)

    def _annotated_wanted(self) -> bool:
        """Whether an annotated image would reach anybody (it is drawn only then)."""
        pub = self._annotated_pub
        return pub is not None and pub.get_subscription_count() > 0

    @staticmethod
    def _position_source(params: NodeParams) -> PositionSource:
        cameras = params.cameras
        topics = depth_topics(cameras.names)
        return PositionSource(
            cameras.names, cameras.depth, cameras.buffer_size,
            round(params.frames.depth_tolerance * 1e9), decode_depth=depth_to_meters,
            decode_info=partial(from_camera_info, rectified=cameras.rectified),
            depth_topic=topics.__getitem__)

    def _subscribe_cameras(self, params: NodeParams) -> None:
        qos = qos_profile_sensor_data if params.cameras.qos == "sensor_data" else QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        image_type = CompressedImage if params.cameras.transport == "compressed" else Image
        for camera, (image_topic, info_topic) in camera_topics(params.cameras.names).items():
            self._camera_subs.append(self.create_subscription(
                image_type, image_topic, partial(self._on_image, camera), qos,
                callback_group=self._camera_group))
            self._camera_subs.append(self.create_subscription(
                CameraInfo, info_topic, partial(self._on_camera_info, camera), qos,
                callback_group=self._camera_group))
        if params.cameras.depth:
            for camera, topic in depth_topics(params.cameras.names).items():
                self._camera_subs.append(self.create_subscription(
                    Image, topic, partial(self._on_depth, camera), qos,
                    callback_group=self._camera_group))

    def release_resources(self, ros_entities: bool = True) -> None:
        """Unsubscribe (unless the context is already gone: ros_entities False), stop the
        worker, drop frames and features, release the model."""
        # without a context the node's logger would try rosout and say it cannot
        log = self.get_logger() if ros_entities else logger
        if ros_entities:
            for sub in self._camera_subs:
                self.destroy_subscription(sub)
            for pub in (self._answers_pub, self._annotated_pub, self._markers_pub):
                if pub is not None:
                    self.destroy_lifecycle_publisher(pub)
        self._camera_subs = []
        self._answers_pub = self._annotated_pub = self._markers_pub = None
        service, self._service = self._service, None
        if service is not None and not service.close(timeout=10.0):
            log.warning("the inference worker did not stop within 10 s")
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.release()
            del pipeline
            gc.collect()
            log.info("model released")
        self._model_state = ModelState.UNLOADED

    # ---- camera callbacks: store and return ----------------------------------------------------
    def _stamp(self, camera: str, msg, what: str = "") -> int:
        """The message's header stamp; the receive time (with one warning) when it is zero."""
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp == 0:
            key = camera + what
            if key not in self._zero_stamp_warned:
                self._zero_stamp_warned.add(key)
                self.get_logger().warning(
                    f"camera {camera!r} publishes zero{what} stamps: using the receive time "
                    f"instead")
            stamp = self.get_clock().now().nanoseconds
        return stamp

    def _on_image(self, camera: str, msg) -> None:
        service = self._service
        if service is None or camera not in service.buffers:
            return
        service.add_frame(camera, self._stamp(camera, msg), msg, msg.header.frame_id)

    def _on_depth(self, camera: str, msg: Image) -> None:
        service = self._service
        if service is None:
            return
        service.add_depth(camera, self._stamp(camera, msg, " depth"), msg, msg.header.frame_id)

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        self._camera_info[camera] = msg
        service = self._service
        if service is not None:
            service.set_camera_info(camera, msg)

    # ---- queries -----------------------------------------------------------------------------
    def _answer(self, msg, on_partial=None, is_cancelled=None) -> QueryOutcome:
        """validate -> convert -> core -> convert -> status; never raises."""
        service = self._service
        if service is None and self._finalized:
            return QueryOutcome(Status.MODEL_NOT_READY,
                                "the node is finalized (lifecycle shutdown): it serves no more "
                                "queries; start it again")
        if service is None:
            detail = {ModelState.FAILED: f"the model failed to load: {self._model_detail}",
                      ModelState.LOADING: "the model is loading"}.get(
                self._model_state, "the node is not configured: configure and activate it")
            return QueryOutcome(Status.MODEL_NOT_READY, detail)
        try:
            request = request_from_msg(msg)
        except Exception as exc:  # a malformed request is a status, never an escaped exception
            return outcome_for_exception(exc)
        return service.handle(request, self.get_clock().now().nanoseconds,
                              on_partial=on_partial, is_cancelled=is_cancelled)

    def _on_query(self, request, response):
        outcome = self._answer(request)
        fill_result(response, outcome)
        fill_positions(response, outcome, RegionPosition)
        self._publish_answer(request, outcome)
        return response

    def _on_goal_request(self, goal_request) -> GoalResponse:
        return GoalResponse.ACCEPT     # every goal ends with a status, BUSY included

    def _on_cancel_request(self, goal_handle) -> CancelResponse:
        return CancelResponse.ACCEPT

    def _on_stream_goal(self, goal_handle):
        t0 = time.monotonic()

        def on_partial(text: str) -> None:
            feedback = SpatialQueryStream.Feedback()
            feedback.partial_answer = text
            set_duration(feedback.elapsed, time.monotonic() - t0)
            goal_handle.publish_feedback(feedback)

        outcome = self._answer(goal_handle.request, on_partial,
                               lambda: goal_handle.is_cancel_requested)
        result = SpatialQueryStream.Result()
        fill_result(result, outcome)
        fill_positions(result, outcome, RegionPosition)
        if outcome.status == Status.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.ok:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        self._publish_answer(goal_handle.request, outcome)
        return result

    def _publish_answer(self, request, outcome: QueryOutcome) -> None:
        pub, params = self._answers_pub, self._params
        service = self._service
        if pub is None or params is None or not params.output.publish_answers:
            return
        if service is None or not service.serving:
            return
        msg = SpatialAnswer()
        fill_result(msg, outcome)
        fill_positions(msg, outcome, RegionPosition)
        msg.camera = outcome.camera
        msg.question = request.question
        msg.num_regions = len(request.regions)
        try:
            pub.publish(msg)
        except Exception as exc:  # e.g. destroyed by a concurrent cleanup; the reply still goes
            self.get_logger().warning(f"could not publish on answers: {exc}")
        if outcome.ok:
            self._publish_visuals(outcome)

    def _publish_visuals(self, outcome: QueryOutcome) -> None:
        """What the model saw (annotated_image) and the regions in 3D (markers), stamped with the
        frame answered about."""
        annotated, markers = self._annotated_pub, self._markers_pub
        try:
            if annotated is not None and outcome.annotated is not None:
                image = Image()
                fill_rgb_image(image, outcome.annotated, outcome.stamp_ns, outcome.frame_id)
                annotated.publish(image)
            if markers is not None:
                array = MarkerArray()
                fill_markers(array, Marker, outcome)
                markers.publish(array)
        except Exception as exc:  # like answers: a lost picture must not fail the reply
            self.get_logger().warning(f"could not publish the annotated image or markers: "
                                      f"{type(exc).__name__}: {exc}")

    # ---- diagnostics ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        try:
            pipeline = self._pipeline
            memory = pipeline.memory_stats() if pipeline is not None else {}
            report = build_diagnostics(self._service, self._model_state,
                                       self.get_clock().now().nanoseconds, memory,
                                       detail=self._model_detail)
        except Exception as exc:  # diagnostics must not take the node down
            self.get_logger().warning(f"diagnostics failed: {type(exc).__name__}: {exc}")
            return
        status = DiagnosticStatus(
            level=_DIAG_LEVELS[report.level], name=f"{self.get_fully_qualified_name()}: queries",
            message=report.message, hardware_id=self._device or "none",
            values=[KeyValue(key=k, value=v) for k, v in report.values])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def _ignore_sigint(signum, frame) -> None:
    """Python's part of SIGINT: nothing. rclpy's handler, which init() chains in front of this
    one, stops the executor; raising KeyboardInterrupt as well (Python's default) would land a
    second Ctrl-C in the middle of releasing the model, with a traceback and exit code -2."""


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    signal.signal(signal.SIGINT, _ignore_sigint)    # before init: rclpy chains to it
    rclpy.init(args=args)
    node = SpatialGeoNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release_resources(ros_entities=False)    # the context may be shut down already
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
