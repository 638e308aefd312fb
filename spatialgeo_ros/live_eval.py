"""Live evaluation: ask a running spatialgeo_node about a bag that `ros2 bag play` publishes.

    ros2 launch spatialgeo_ros bringup.launch.py image_topic:=/camera/image_raw
    ros2 bag play BAG --start-paused                     # the player node is /rosbag2_player
    python3 -m spatialgeo_ros.live_eval --questions questions.jsonl --out DIR \\
        --player /rosbag2_player                         # = spatialgeo eval-live ...

The questions are asked in stamp order. For each, the client waits until a frame stamped at or
after the question's stamp has been published on the question's topic (it subscribes to it
too), then calls the node's spatial_query service with that stamp, so the node picks the frame
by its own selection rule (frames.stamp_tolerance). With --player the client pauses the bag
player while it asks (and resumes it to wait for the next frame), so that inference slower than
the bag's rate cannot let the asked-about frame leave the node's buffer; without it, play the bag
slowly (`--rate`) or raise the node's cameras.buffer_size. Questions given only by frame_index
need --bag to look their stamps up. The results, metrics and report are those of eval-bag.

rclpy and the generated interfaces are imported by `run_live` only: the request/response
helpers here are plain Python and tested without ROS.
"""
from __future__ import annotations

import array
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from spatialgeo_core.eval.questions import QuestionFormatError, QuestionRecord
from spatialgeo_core.frames import NoFrameError
from spatialgeo_ros.conversions import set_stamp, stamp_to_ns
from spatialgeo_ros.service_logic import Status

logger = logging.getLogger(__name__)

SETTLE_S = 0.1            # after our subscription sees a frame, before asking the node about it
NO_FRAME_RETRY_S = 0.5    # one retry of a NO_FRAME answer (the node got the frame a bit later)
REPLY_MARGIN_S = 30.0     # waited for a reply beyond the request's own timeout
NODE_MAX_TIMEOUT_S = 120.0   # the node's query.max_timeout default, used when timeout_s is 0
POLL_S = 0.05


def fill_request(request, question: QuestionRecord, stamp_ns: int, camera: str,
                 max_new_tokens: int, timeout_s: float, region_type, image_type):
    """Write a question into a SpatialQuery request. region_type / image_type build empty
    spatialgeo_ros/Region and sensor_msgs/Image messages (the rclpy classes)."""
    request.question = question.question
    set_stamp(request.stamp, stamp_ns)
    request.camera = camera
    regions = []
    for region in question.regions:
        msg = region_type()
        if region.box is not None:
            msg.has_box = True
            msg.x_min, msg.y_min, msg.x_max, msg.y_max = (float(v) for v in region.box)
        if region.mask is not None:
            mask = np.asarray(region.mask, dtype=bool)
            image = image_type()
            image.height, image.width = (int(n) for n in mask.shape)
            image.encoding = "mono8"
            image.is_bigendian = 0
            image.step = int(mask.shape[1])
            image.data = array.array("B", (mask.astype(np.uint8) * 255).tobytes())   # [H*W]
            msg.mask = image
        regions.append(msg)
    request.regions = regions
    request.limits.max_new_tokens = int(max_new_tokens)
    request.limits.temperature = 0.0
    request.limits.timeout_s = float(timeout_s)
    return request


def _duration_ms(duration) -> float:
    return (int(duration.sec) + int(duration.nanosec) * 1e-9) * 1000.0


def response_record(question: QuestionRecord, response, model_id: str, roundtrip_ms: float,
                    default_unit: str | None = None, **source) -> dict:
    """A results.jsonl record of the node's response (status OK -> an answer, else an error
    named by its status)."""
    from spatialgeo_core.eval.runner import result_record

    code = int(response.status.code)
    fields = {"line": question.line, **source,
              "frame_stamp_ns": stamp_to_ns(response.header.stamp),
              "frame_id": str(response.header.frame_id),
              "latency_ms": round(_duration_ms(response.latency), 3),
              "roundtrip_ms": round(roundtrip_ms, 3), "status_code": code}
    if code == Status.OK:
        fields["image"] = f"{source.get('topic')}@{fields['frame_stamp_ns']}"
        return result_record(question.id, question.question, question.reference,
                             question.category, question.qa_type, model_id,
                             pred=str(response.answer), default_unit=default_unit, **fields)
    try:
        name = Status(code).name
    except ValueError:
        name = f"STATUS_{code}"
    return result_record(question.id, question.question, question.reference, question.category,
                         question.qa_type, model_id, error=str(response.status.message),
                         error_kind=name, **fields)


def stamps_from_bag(bag_path: str | Path, wanted: dict[str, set[int]]) -> dict[tuple, int]:
    """(topic, frame index) -> header stamp, for the indices wanted of each topic of a bag."""
    from spatialgeo_core.eval.bag import Bag

    found: dict[tuple, int] = {}
    remaining = sum(len(v) for v in wanted.values())
    with Bag(bag_path) as bag:
        for message in bag.messages([t for t in wanted if t in bag.topics]):
            if message.index in wanted[message.topic]:
                found[(message.topic, message.index)] = message.stamp_ns
                remaining -= 1
                if remaining == 0:
                    break
    return found


def resolve_stamps(questions: list[QuestionRecord], default_topic: str | None,
                   bag_path: str | Path | None
                   ) -> tuple[list[QuestionRecord], list[tuple[QuestionRecord, Exception]]]:
    """Questions with a topic and a stamp, by stamp, and (question, error) for the others."""
    ready, failed, by_index = [], [], []
    for q in questions:
        topic = q.topic or default_topic
        if topic is None:
            failed.append((q, QuestionFormatError(
                "the question has no 'topic' and --topic is not given")))
        elif q.stamp_ns is not None:
            ready.append(replace(q, topic=topic))
        elif bag_path is None:
            failed.append((q, QuestionFormatError(
                "the node is asked by stamp: give the question a stamp_ns, or pass --bag to "
                "look its frame_index up")))
        else:
            by_index.append(replace(q, topic=topic))
    if by_index:
        wanted: dict[str, set[int]] = {}
        for q in by_index:
            wanted.setdefault(q.topic, set()).add(q.frame_index)
        stamps = stamps_from_bag(bag_path, wanted)
        for q in by_index:
            stamp = stamps.get((q.topic, q.frame_index))
            if stamp is None:
                failed.append((q, NoFrameError(
                    f"{bag_path} has no message {q.frame_index} on {q.topic}")))
            else:
                ready.append(replace(q, stamp_ns=stamp))
    ready.sort(key=lambda q: q.stamp_ns)
    return ready, failed


# -------------------------------------------------------------------------------------------------
# The ROS client (rclpy imported here only)


class _FrameWatcher:
    """Subscribes to image topics (their type found in the graph) and keeps the newest header
    stamp seen on each."""

    def __init__(self, node):
        self.node = node
        self.newest: dict[str, int] = {}
        self._subs = {}

    def _subscribe(self, topic: str) -> bool:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        types = dict(self.node.get_topic_names_and_types()).get(topic, [])
        cls = (CompressedImage if "sensor_msgs/msg/CompressedImage" in types
               else Image if "sensor_msgs/msg/Image" in types else None)
        if cls is None:
            return False

        def seen(msg, topic=topic):
            self.newest[topic] = max(self.newest.get(topic, 0), stamp_to_ns(msg.header.stamp))

        # best effort matches both reliable and best-effort publishers
        self._subs[topic] = self.node.create_subscription(cls, topic, seen,
                                                          qos_profile_sensor_data)
        return True

    def wait_for(self, topic: str, stamp_ns: int, timeout_s: float, on_wait=None) -> bool:
        """Spin until a frame stamped >= stamp_ns has been seen on topic; False on timeout."""
        import rclpy

        deadline = time.monotonic() + timeout_s
        waited = False
        while time.monotonic() < deadline:
            if topic not in self._subs:
                self._subscribe(topic)
            if self.newest.get(topic, 0) >= stamp_ns:
                if waited:
                    self.spin_for(SETTLE_S)
                return True
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            rclpy.spin_once(self.node, timeout_sec=POLL_S)
        return False

    def spin_for(self, seconds: float) -> None:
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=POLL_S)


class _Player:
    """Pause / resume a rosbag2 player through its services (only on a change of state)."""

    def __init__(self, node, name: str | None):
        self.node = node
        self.paused: bool | None = None
        self._clients = None
        if name:
            try:
                from rosbag2_interfaces.srv import Pause, Resume
            except ImportError as exc:
                from spatialgeo_core.errors import MissingDependencyError
                raise MissingDependencyError(
                    "--player needs rosbag2_interfaces (ros-<distro>-rosbag2-interfaces)") from exc

            name = name.rstrip("/")
            self._clients = (node.create_client(Pause, f"{name}/pause"), Pause,
                             node.create_client(Resume, f"{name}/resume"), Resume)

    def set_paused(self, paused: bool) -> None:
        import rclpy

        if self._clients is None or self.paused == paused:
            return
        pause, pause_t, resume, resume_t = self._clients
        client, srv = (pause, pause_t) if paused else (resume, resume_t)
        if not client.wait_for_service(timeout_sec=5.0):
            logger.warning("player service %s is not available", client.srv_name)
            return
        future = client.call_async(srv.Request())
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=5.0)
        self.paused = paused


def run_live(args) -> int:
    """`spatialgeo eval-live` (arguments: spatialgeo_core.eval.cli)."""
    import rclpy
    from sensor_msgs.msg import Image

    from spatialgeo_core.eval.questions import read_questions
    from spatialgeo_core.eval.runner import (
        RESULTS_FILE,
        EvalRunError,
        ResultsWriter,
        check_out_dir,
        finalize,
        is_ok,
        line_error_record,
        merge_results,
        ordered_records,
        progress_bar,
        question_error_record,
        read_results,
        write_results,
    )
    from spatialgeo_ros.msg import Region
    from spatialgeo_ros.srv import SpatialQuery

    started = time.time()
    if args.max_new_tokens < 0 or not args.timeout_s >= 0 or not args.wait_s > 0:
        raise EvalRunError("--max-new-tokens and --timeout-s must be >= 0 (0 = the node's "
                           "default), --wait-s > 0")
    out = Path(args.out)
    results_path = out / RESULTS_FILE
    questions, line_errors = read_questions(args.questions)
    check_out_dir(out, args.resume, [results_path])
    done = {qid for qid, r in merge_results(read_results(results_path)).items() if is_ok(r)}
    todo = [q for q in questions if q.id not in done]
    ready, failed = resolve_stamps(todo, args.topic, args.bag)
    model_id = f"spatialgeo_node via {args.service}"
    reply_s = (args.timeout_s or NODE_MAX_TIMEOUT_S) + REPLY_MARGIN_S

    rclpy.init()
    node = rclpy.create_node("spatialgeo_live_eval")
    try:
        client = node.create_client(SpatialQuery, args.service)
        if not client.wait_for_service(timeout_sec=args.wait_s):
            raise EvalRunError(f"service {args.service} is not available after {args.wait_s} s: "
                               f"is spatialgeo_node running and active?")
        watcher = _FrameWatcher(node)
        player = _Player(node, args.player)
        total = len(ready) + len(failed) + len(line_errors)
        with ResultsWriter(results_path) as writer, \
                progress_bar(total, "eval-live", args.progress) as bar:
            for err in line_errors:
                if err.record_id not in done:
                    writer.write(line_error_record(err, model_id))
                bar.update()
            for q, error in failed:
                writer.write(question_error_record(q, error, model_id))
                bar.update()
            for q in ready:
                source = {"topic": q.topic, "requested_stamp_ns": q.stamp_ns,
                          "frame_index": q.frame_index}
                if not watcher.wait_for(q.topic, q.stamp_ns, args.wait_s,
                                        on_wait=lambda: player.set_paused(False)):
                    writer.write(question_error_record(q, NoFrameError(
                        f"no frame stamped at or after {q.stamp_ns} ns on {q.topic} within "
                        f"{args.wait_s} s: is `ros2 bag play` running?"), model_id, **source))
                    bar.update()
                    continue
                player.set_paused(True)
                request = fill_request(SpatialQuery.Request(), q, q.stamp_ns, args.camera,
                                       args.max_new_tokens, args.timeout_s, Region, Image)
                for attempt in range(2):
                    t0 = time.perf_counter()
                    future = client.call_async(request)
                    rclpy.spin_until_future_complete(node, future, timeout_sec=reply_s)
                    roundtrip_ms = (time.perf_counter() - t0) * 1000
                    response = future.result() if future.done() else None
                    if (attempt or response is None
                            or int(response.status.code) != Status.NO_FRAME):
                        break
                    watcher.spin_for(NO_FRAME_RETRY_S)
                if response is None:
                    record = question_error_record(q, TimeoutError(
                        f"no reply from {args.service} within {reply_s:.0f} s"), model_id,
                        **source)
                else:
                    record = response_record(q, response, model_id, roundtrip_ms,
                                             args.default_unit, **source)
                writer.write(record)
                bar.update()
            player.set_paused(False)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()

    order = sorted([(q.line, q.id) for q in questions]
                   + [(e.line, e.record_id) for e in line_errors])
    records, stale = ordered_records(read_results(results_path), [qid for _, qid in order])
    write_results(results_path, records + stale)
    run_info = {"service": args.service, "camera": args.camera or "(the node's first)",
                "questions": str(args.questions), "model": model_id,
                "elapsed_s": round(time.time() - started, 1)}
    metrics = finalize(out, records, "SpatialGeo live evaluation (ROS 2)", run_info,
                       args.default_unit)
    from spatialgeo_core.eval.runner import summary_line
    print(f"eval-live: {summary_line(metrics, out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """python3 -m spatialgeo_ros.live_eval ARGS = spatialgeo eval-live ARGS."""
    from spatialgeo_core.cli import main as cli_main

    return cli_main(["eval-live", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
