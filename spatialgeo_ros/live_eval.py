"""Live evaluation, the plain part: the requests, the result records and the stamps of the
questions; the ROS client that runs it is live_eval_client.py (`ros2 run spatialgeo_ros
eval_live`).

The client (how questions are asked, paused players, retries) is described there; the results,
metrics and report are those of eval-bag.

No rclpy here: the request/response helpers are plain Python and tested without ROS.
"""
from __future__ import annotations

import array
from dataclasses import replace
from pathlib import Path

import numpy as np

from spatialgeo_core.eval.questions import QuestionFormatError, QuestionRecord
from spatialgeo_core.frames import NoFrameError
from spatialgeo_ros.conversions import set_stamp, stamp_to_ns
from spatialgeo_ros.outcomes import Status


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
