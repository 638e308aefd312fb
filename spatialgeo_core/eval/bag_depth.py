"""Region positions in `spatialgeo eval-bag`: the bag's depth topic and CameraInfo, the 3D
position of each answered question's regions, and their error against the questions' ground
truth.

A bag with a depth topic (an Image topic of 16UC1 or 32FC1 images, registered to the colour
images: Bag.depth_topics) gets, for every answered question, the positions the node computes:
the depth image whose header stamp is nearest to the frame's within the tolerance (the node's
frames.depth_tolerance rule: FrameBuffer.select over the depth images recorded around it) and
the latest CameraInfo at the frame's stamp, through spatialgeo_core.region_positions. A question
with `positions` ground truth (questions.jsonl, as `spatialgeo make-world --bag` writes it) is
scored: the distance between each region's position and each ground-truth point.

Record fields: `positions_status` ("ok", or why there are none: "no_depth_frame",
"no_camera_info", "invalid_depth", "invalid_camera_info", "no_valid_depth"), `positions_message`,
`regions_3d` (spatialgeo ask's entries) and `position_errors_m` (per region {truth name: metres},
null where there is no position). metrics.json gets `positions` (`position_metrics`), report.md
a "Region positions" section.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from spatialgeo_core.depth import InvalidDepthError, check_depth
from spatialgeo_core.errors import InvalidImageError
from spatialgeo_core.eval.bag import Bag, BagMessage, FrameMatch, TopicError
from spatialgeo_core.frames import FrameBuffer, FrameSelectionError, SelectionPolicy
from spatialgeo_core.image_msgs import depth_to_meters, stamp_to_ns
from spatialgeo_core.intrinsics import InvalidIntrinsicsError, from_camera_info
from spatialgeo_core.region_positions import invalid_regions, region_positions
from spatialgeo_core.types import Region

CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
LOG_SLACK_NS = 500_000_000        # depth recorded up to this long after its header stamp
DEPTH_KEY = "depth_m"             # a frame's matched depth (metres), kept while it is buffered


def read_range(bag: Bag, topic: str, start_ns: int, stop_ns: int) -> list[BagMessage]:
    """The messages of `topic` recorded (bag time) in [start_ns, stop_ns), deserialized."""
    reader = bag._open_reader()
    connections = [c for c in reader.connections if c.topic == topic]
    out = []
    for index, (connection, log_ns, raw) in enumerate(
            reader.messages(connections=connections, start=max(0, start_ns), stop=stop_ns)):
        msg = reader.deserialize(raw, connection.msgtype)
        out.append(BagMessage(topic, index, int(log_ns), stamp_to_ns(msg.header.stamp)
                              or int(log_ns), str(msg.header.frame_id), connection.msgtype, msg))
    return out


class BagDepth:
    """The depth topic and CameraInfo of a bag (module docstring); `None` from `open` when the
    bag has no depth topic."""

    def __init__(self, bag: Bag, depth_topic: str, info_topics: list[str], tolerance_ns: int,
                 rectified: bool = False):
        self.bag, self.depth_topic, self.rectified = bag, depth_topic, rectified
        self.policy = SelectionPolicy(tolerance_ns=tolerance_ns, max_age_ns=0)
        self.info_topics = info_topics
        self._infos: dict[str, list[BagMessage]] = {}

    @classmethod
    def open(cls, bag: Bag, depth_topic: str | None = None, tolerance_ms: float = 20.0,
             rectified: bool = False) -> BagDepth | None:
        """The bag's depth, or None when it has no depth topic. TopicError when `depth_topic`
        is not one, or when there are several and none is named."""
        found = bag.depth_topics()
        if depth_topic is None:
            if not found:
                return None
            if len(found) > 1:
                raise TopicError(f"the bag has {len(found)} depth topics ({', '.join(found)}): "
                                 f"name one with --depth-topic")
            depth_topic = found[0]
        elif depth_topic not in found:
            raise TopicError(f"--depth-topic {depth_topic} is not a depth topic of the bag "
                             f"(16UC1 or 32FC1 images); its depth topics: "
                             f"{', '.join(found) or 'none'}")
        infos = sorted(t for t, m in bag.topics.items() if m == CAMERA_INFO)
        return cls(bag, depth_topic, infos, round(tolerance_ms * 1e6), rectified)

    def _info_topic(self, image_topic: str) -> str | None:
        """The CameraInfo topic of an image topic: the bag's only one, or the one beside it."""
        if len(self.info_topics) == 1:
            return self.info_topics[0]
        beside = posixpath.join(posixpath.dirname(image_topic), "camera_info")
        return beside if beside in self.info_topics else None

    def _camera_info(self, topic: str, stamp_ns: int):
        """The latest CameraInfo of `topic` at `stamp_ns` (the first one when all are later)."""
        if topic not in self._infos:
            self._infos[topic] = sorted(self.bag.messages([topic]), key=lambda m: m.stamp_ns)
        infos = self._infos[topic]
        if not infos:
            return None
        before = [m for m in infos if m.stamp_ns <= stamp_ns]
        return (before[-1] if before else infos[0]).msg

    def _depth(self, match: FrameMatch) -> np.ndarray:
        """The frame's depth image in metres (FrameSelectionError when none is near)."""
        stamp = match.frame.stamp_ns
        tol = self.policy.tolerance_ns
        try:
            candidates = read_range(self.bag, self.depth_topic, stamp - tol,
                                    stamp + tol + LOG_SLACK_NS)
        except Exception as exc:  # a corrupt storage file fails with any error type
            raise InvalidDepthError(f"cannot read the depth images near the frame "
                                    f"({type(exc).__name__}: {exc})") from exc
        buffer = FrameBuffer(max(1, len(candidates)))
        for message in candidates:
            buffer.add(message.stamp_ns, message, message.frame_id)
        depth_frame = buffer.select(stamp, stamp, self.policy)
        if depth_frame.frame_id and match.frame.frame_id and \
                depth_frame.frame_id != match.frame.frame_id:
            raise InvalidDepthError(
                f"the depth image's frame_id {depth_frame.frame_id!r} is not the colour image's "
                f"{match.frame.frame_id!r}: it must be registered to the colour image")
        return depth_to_meters(depth_frame.payload.msg)

    def record_fields(self, match: FrameMatch, regions: Sequence[Region],
                      truth: Sequence[dict] | None, size: tuple[int, int]) -> dict:
        """The positions fields of an answered question's record (module docstring), for its
        frame of `size` (width, height)."""
        width, height = size
        try:
            depth = match.frame.derived(DEPTH_KEY, lambda: self._depth(match))
            check_depth(depth, width, height)
        except FrameSelectionError as exc:
            return _status("no_depth_frame", f"no depth image on {self.depth_topic} near the "
                                             f"frame: {exc}")
        except (InvalidImageError, InvalidDepthError) as exc:
            return _status("invalid_depth", f"{self.depth_topic}: {exc}")
        info_topic = self._info_topic(match.topic)
        info = None if info_topic is None else self._camera_info(info_topic,
                                                                 match.frame.stamp_ns)
        if info is None:
            return _status("no_camera_info", f"no CameraInfo for {match.topic} (topics: "
                                             f"{', '.join(self.info_topics) or 'none'})")
        try:
            intrinsics = from_camera_info(info, self.rectified)
            intrinsics.check_size(width, height, "the frame")
        except InvalidIntrinsicsError as exc:
            return _status("invalid_camera_info", f"{info_topic}: {exc}")
        positions = region_positions(depth, list(regions), intrinsics)
        bad = invalid_regions(positions)
        errors = []
        for i, position in enumerate(positions):
            if not position.valid or truth is None:
                errors.append(None)
                continue
            errors.append({name: round(float(np.linalg.norm(np.subtract(position.center_m,
                                                                         point))), 4)
                           for name, point in truth[i].items()})
        return {"positions_status": "no_valid_depth" if bad else "ok",
                "positions_message": bad or f"depth from {self.depth_topic}",
                "regions_3d": [{"region": i, **p.to_dict()} for i, p in enumerate(positions)],
                "position_errors_m": errors}


def _status(status: str, message: str) -> dict:
    return {"positions_status": status, "positions_message": message, "regions_3d": None,
            "position_errors_m": None}


def position_metrics(records: Iterable[dict]) -> dict:
    """metrics.json's `positions`: regions with a position, statuses, and the error against each
    kind of ground truth (median, 90th percentile, max, in metres)."""
    records = [r for r in records if r.get("status") == "ok" and "positions_status" in r]
    statuses: dict[str, int] = {}
    regions = valid = 0
    errors: dict[str, list[float]] = {}
    for r in records:
        statuses[r["positions_status"]] = statuses.get(r["positions_status"], 0) + 1
        for entry in r.get("regions_3d") or ():
            regions += 1
            valid += bool(entry["valid"])
        for entry in r.get("position_errors_m") or ():
            for name, value in (entry or {}).items():
                errors.setdefault(name, []).append(value)
    return {"questions": len(records), "statuses": dict(sorted(statuses.items())),
            "regions": regions, "regions_with_position": valid,
            "error_m": {name: {"n": len(v), "median": round(float(np.median(v)), 4),
                               "p90": round(float(np.percentile(v, 90)), 4),
                               "max": round(float(np.max(v)), 4)}
                        for name, v in sorted(errors.items())}}


def append_positions_section(report: Path, metrics: dict) -> None:
    """A "Region positions" section in report.md."""
    lines = ["## Region positions", "",
             f"{metrics['regions_with_position']} of {metrics['regions']} regions of "
             f"{metrics['questions']} answered questions have a 3D position "
             f"(statuses: {', '.join(f'{k} {v}' for k, v in metrics['statuses'].items())}).",
             ""]
    if metrics["error_m"]:
        lines += ["| error against | regions | median (cm) | p90 (cm) | max (cm) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {e['n']} | {100 * e['median']:.1f} | {100 * e['p90']:.1f} | "
                  f"{100 * e['max']:.1f} |" for name, e in metrics["error_m"].items()]
        lines.append("")
    with Path(report).open("a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(lines) + "\n")
