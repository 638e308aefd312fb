"""`ros2 run spatialgeo_ros eval_live`: the live evaluation's ROS client (live_eval.py has the
plain part). It asks a running spatialgeo_node about a bag that `ros2 bag play` publishes, scores
the answers as eval-bag does and writes results.jsonl, metrics.json and report.md into --out.

The questions are asked in stamp order. For each, the client waits until a frame stamped at or
after the question's stamp has been published on the question's topic (it subscribes to it
too), then calls the node's spatial_query service with that stamp, so the node picks the frame
by its own selection rule (frames.stamp_tolerance). With --player the client pauses the bag
player while it asks (and resumes it to wait for the next frame), so that inference slower than
the bag's rate cannot let the asked-about frame leave the node's buffer; without it, play the bag
slowly (`--rate`) or raise the node's cameras.buffer_size. Questions given only by frame_index
need --bag to look their stamps up.

An executable of the ROS layer, beside the node: rclpy and the generated interfaces are imported
when it runs (so `--help`, and the clear error where ROS is absent, need neither).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from spatialgeo_core.cli import run_command
from spatialgeo_core.errors import MissingDependencyError
from spatialgeo_core.eval.cli import add_output_args
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
    summary_line,
    write_results,
)
from spatialgeo_core.frames import NoFrameError
from spatialgeo_core.optional import available
from spatialgeo_ros.conversions import stamp_to_ns
from spatialgeo_ros.live_eval import fill_request, resolve_stamps, response_record
from spatialgeo_ros.outcomes import Status

logger = logging.getLogger(__name__)

SETTLE_S = 0.1            # after our subscription sees a frame, before asking the node about it
NO_FRAME_RETRY_S = 0.5    # one retry of a NO_FRAME answer (the node got the frame a bit later)
REPLY_MARGIN_S = 30.0     # waited for a reply beyond the request's own timeout
NODE_MAX_TIMEOUT_S = 120.0   # the node's query.max_timeout default, used when timeout_s is 0
POLL_S = 0.05


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
    """`eval_live` (arguments: `build_parser`)."""
    import rclpy
    from sensor_msgs.msg import Image

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
                progress_bar(total, "eval_live", args.progress) as bar:
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
    print(f"eval_live: {summary_line(metrics, out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    v = argparse.ArgumentParser(
        prog="eval_live",
        description="Ask a running spatialgeo_node about a bag being played (ROS 2): read "
                    "questions.jsonl, wait for each question's frame on its topic (played by "
                    "`ros2 bag play`), call the node's spatial_query service with the question's "
                    "stamp, and score the answers like `spatialgeo eval-bag`.")
    v.add_argument("--questions", required=True, help="questions.jsonl")
    v.add_argument("--service", default="/spatial_query", help="the SpatialQuery service")
    v.add_argument("--camera", default="", help="the node camera to ask (default: its first)")
    v.add_argument("--topic", default=None,
                   help="image topic to watch for questions without one")
    v.add_argument("--bag", default=None,
                   help="the bag being played, to turn frame_index questions into stamps")
    v.add_argument("--timeout-s", type=float, default=0.0,
                   help="per-question timeout sent to the node (0 = the node's default)")
    v.add_argument("--wait-s", type=float, default=30.0,
                   help="how long to wait for a question's frame to be played")
    v.add_argument("--player", default=None, metavar="NODE",
                   help="pause this rosbag2 player (e.g. /rosbag2_player) while asking, so "
                        "frames are not evicted from the node's buffer during inference")
    add_output_args(v, max_new_tokens=0,
                    max_new_tokens_help="longest answer in tokens (0 = the node's default)")
    return v


def _run(args) -> int:
    if not available("rclpy"):
        raise MissingDependencyError(
            "eval_live needs a ROS 2 runtime (rclpy is not on PyPI): source "
            "/opt/ros/<distro>/setup.bash and the workspace where spatialgeo_ros is built")
    return run_live(args)


def main(argv: list[str] | None = None) -> int:
    """`ros2 run spatialgeo_ros eval_live ARGS` (= python3 -m spatialgeo_ros.live_eval_client):
    exit code 2 and one line on a bad input, 130 on Ctrl-C, as the `spatialgeo` commands."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command("eval_live", _run, args)


if __name__ == "__main__":
    sys.exit(main())
