"""ROS 2 bags without ROS: open a bag with rosbags, list its image topics, read its frames, and
match questions to frames with the node's frame selection.

A bag is a rosbag2 directory (sqlite3 or mcap storage, with its metadata.yaml) or a single .db3
or .mcap file (rosbags' AnyReader also opens ROS 1 .bag files; that is not tested here). Bags
without embedded message definitions (rosbag2 before Iron) are read with the ROS 2 Humble type
definitions.

Frames: sensor_msgs/msg/Image and sensor_msgs/msg/CompressedImage topics; an Image topic whose
first message is a depth image (16UC1 or 32FC1) is a depth topic (`depth_topics`), not a frame
topic: eval/bag_depth.py reads it for the regions' 3D positions. A frame's stamp is its
header stamp, or its bag (receive) time when the header stamp is zero, as the node does. Its index
is its position among the topic's messages in the bag's order (receive time), from 0.

`match_frames` plays the bag once, in order, into one `spatialgeo_core.frames.FrameBuffer` per
topic (the buffer the node fills from its camera subscription, of the same size), and asks
`FrameBuffer.select` for a question's stamp as soon as the bag has passed that stamp by more than
the tolerance; so a question gets the frame the node would answer about when asked then. A
question by `frame_index` gets the n-th message of its topic. Images are decoded only for the
frames asked about, with spatialgeo_core.image_msgs (the node's pure-Python decoders, which honour
`step`, encoding and endianness).
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spatialgeo_core.errors import SpatialGeoError
from spatialgeo_core.eval.questions import QuestionRecord
from spatialgeo_core.frames import (
    NS_PER_S,
    Frame,
    FrameBuffer,
    FrameSelectionError,
    NoFrameError,
    SelectionPolicy,
    StaleFrameError,
    seconds,
)
from spatialgeo_core.optional import require

logger = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_MSGTYPES = (IMAGE, COMPRESSED_IMAGE)


class BagError(SpatialGeoError):
    """A bag is missing, cannot be opened or read (corrupt), or has no image topic."""


class TopicError(SpatialGeoError, ValueError):
    """A question names a topic the bag does not have, or one that carries no images."""


@dataclass(frozen=True)
class ImageTopic:
    name: str
    msgtype: str             # IMAGE or COMPRESSED_IMAGE
    count: int               # messages, as the bag's index says


@dataclass
class BagMessage:
    """One image message of a bag: what a FrameBuffer holds as a frame's payload."""

    topic: str
    index: int               # n-th message of its topic, from 0
    log_ns: int              # bag (receive) time
    stamp_ns: int            # header stamp; the bag time when the header stamp is 0
    frame_id: str
    msgtype: str
    msg: Any                 # the deserialized rosbags message


def decode_rgb(message: BagMessage) -> np.ndarray:
    """The frame's image as uint8 [H, W, 3] RGB; InvalidImageError when it cannot be used."""
    from spatialgeo_core.image_msgs import compressed_to_rgb, image_to_rgb

    if message.msgtype == COMPRESSED_IMAGE:
        return compressed_to_rgb(message.msg)
    return image_to_rgb(message.msg)


class Bag:
    """An open bag; use as a context manager. All errors of the storage are BagError."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader = None
        self.topics: dict[str, str] = {}          # every topic -> its message type
        self._depth_topics: list[str] | None = None

    def __enter__(self) -> Bag:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        require("rosbags")
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        try:
            reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
            reader.open()
        except Exception as exc:  # storage libraries fail on corrupt files with any error type
            raise BagError(f"cannot open bag {self.path} (not a rosbag2 directory, .db3, .mcap "
                           f"or .bag, or corrupt): {type(exc).__name__}: {exc}") from exc
        self._reader = reader
        self.topics = {c.topic: c.msgtype for c in reader.connections}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def identity(self) -> dict:
        """What the bag's index says: its time span, message count and every topic with its type
        and count (how `--resume` knows it is the same bag)."""
        reader = self._open_reader()
        topics: dict[str, list] = {}
        for c in reader.connections:
            topics.setdefault(c.topic, [c.msgtype, 0])[1] += c.msgcount
        return {"start_ns": int(reader.start_time), "end_ns": int(reader.end_time),
                "messages": int(reader.message_count), "topics": dict(sorted(topics.items()))}

    def image_topics(self) -> list[ImageTopic]:
        """The Image and CompressedImage topics, by name (not the depth topics)."""
        counts: dict[str, int] = {}
        for c in self._open_reader().connections:
            if c.msgtype in IMAGE_MSGTYPES:
                counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        depth = set(self.depth_topics())
        return [ImageTopic(t, self.topics[t], n) for t, n in sorted(counts.items())
                if t not in depth]

    def depth_topics(self) -> list[str]:
        """The Image topics whose first message has a depth encoding (16UC1 or 32FC1)."""
        if self._depth_topics is None:
            from spatialgeo_core.image_msgs import DEPTH_ENCODINGS

            reader = self._open_reader()
            found = []
            for topic in sorted({c.topic for c in reader.connections if c.msgtype == IMAGE}):
                connections = [c for c in reader.connections if c.topic == topic]
                try:
                    connection, _, raw = next(reader.messages(connections=connections))
                    encoding = reader.deserialize(raw, connection.msgtype).encoding
                except StopIteration:
                    continue
                except Exception as exc:  # a corrupt storage file fails with any error type
                    raise BagError(f"bag {self.path} is corrupt: cannot read {topic} "
                                   f"({type(exc).__name__}: {exc})") from exc
                if encoding in DEPTH_ENCODINGS:
                    found.append(topic)
            self._depth_topics = found
        return list(self._depth_topics)

    def require_image_topics(self) -> list[ImageTopic]:
        """image_topics(), or BagError naming the bag's topics when it has none."""
        topics = self.image_topics()
        if not topics:
            listed = ", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "none"
            raise BagError(f"bag {self.path} has no {IMAGE} or CompressedImage topic; its "
                           f"topics: {listed}")
        return topics

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """The messages of `topics` (image topics: they have a header), deserialized, in the
        bag's order; BagError when the storage or a message turns out corrupt."""
        from spatialgeo_core.image_msgs import stamp_to_ns

        reader = self._open_reader()
        wanted = set(topics)
        connections = [c for c in reader.connections if c.topic in wanted]
        counts = dict.fromkeys(wanted, 0)
        read = 0
        stream = reader.messages(connections=connections)
        while True:
            try:
                connection, log_ns, raw = next(stream)
                msg = reader.deserialize(raw, connection.msgtype)
            except StopIteration:
                return
            except Exception as exc:  # a corrupt storage file fails with any error type
                raise BagError(
                    f"bag {self.path} is corrupt: reading failed after {read} image messages "
                    f"({type(exc).__name__}: {exc})") from exc
            read += 1
            index = counts[connection.topic]
            counts[connection.topic] = index + 1
            stamp = stamp_to_ns(msg.header.stamp) or int(log_ns)
            yield BagMessage(connection.topic, index, int(log_ns), stamp,
                             str(msg.header.frame_id), connection.msgtype, msg)

    def _open_reader(self):
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        return self._reader


# -------------------------------------------------------------------------------------------------
# Questions -> frames


@dataclass
class FrameMatch:
    """A question and the frame it is about, or the error that kept it from one."""

    question: QuestionRecord
    topic: str | None
    frame: Frame | None = None            # payload: BagMessage
    error: SpatialGeoError | None = None


@dataclass
class _TopicState:
    buffer: FrameBuffer
    by_stamp: deque = field(default_factory=deque)       # questions, by increasing stamp
    by_index: dict = field(default_factory=dict)         # frame index -> questions
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None


def resolve_topic(question: QuestionRecord, bag: Bag, image_topics: list[ImageTopic],
                  default_topic: str | None = None) -> str:
    """The image topic a question is about; TopicError when the bag does not have it."""
    names = [t.name for t in image_topics]
    topic = question.topic or default_topic
    if topic is None:
        if len(names) == 1:
            return names[0]
        raise TopicError(f"the bag has {len(names)} image topics ({', '.join(names)}): give the "
                         f"question a 'topic' (or pass --topic)")
    if topic not in bag.topics:
        raise TopicError(f"topic {topic} is not in the bag; its image topics: "
                         f"{', '.join(names)}")
    if topic in bag.depth_topics():
        raise TopicError(f"topic {topic} carries depth images, not colour frames")
    if topic not in names:
        raise TopicError(f"topic {topic} carries {bag.topics[topic]}, not {IMAGE} or "
                         f"{COMPRESSED_IMAGE}")
    return topic


def _select(topic: str, state: _TopicState, question: QuestionRecord,
            policy: SelectionPolicy) -> FrameMatch:
    stamp = question.stamp_ns
    try:
        # stamp != 0 (questions.py refuses 0), so `now` plays no part in the selection
        frame = state.buffer.select(stamp, now_ns=stamp, policy=policy)
        return FrameMatch(question, topic, frame)
    except FrameSelectionError as exc:
        tol = policy.tolerance_ns / NS_PER_S
        if state.count == 0:
            error: FrameSelectionError = NoFrameError(f"topic {topic} has no messages")
        elif stamp < state.first_ns - policy.tolerance_ns:
            error = NoFrameError(
                f"no frame of {topic} within {tol:.3f} s of {seconds(stamp)}: its first frame "
                f"is at {seconds(state.first_ns)} (--tolerance-ms)")
        elif stamp > state.last_ns + policy.tolerance_ns:
            error = NoFrameError(
                f"no frame of {topic} within {tol:.3f} s of {seconds(stamp)}: its last frame "
                f"is at {seconds(state.last_ns)} (--tolerance-ms)")
        elif isinstance(exc, StaleFrameError):
            error = StaleFrameError(f"{topic}: {exc} (raise --buffer-size)")
        else:
            error = NoFrameError(f"{topic}: {exc} (--tolerance-ms)")
        return FrameMatch(question, topic, error=error)


def match_frames(bag: Bag, questions: Iterable[QuestionRecord], policy: SelectionPolicy,
                 buffer_size: int = 30,
                 default_topic: str | None = None) -> Iterator[FrameMatch]:
    """Each question with its frame (or its error), in the order the bag reaches them.

    Questions whose topic cannot be resolved come first; then one pass over the bag. A corrupt
    bag raises BagError from the iteration, after the matches already given and one for every
    question left (`_unreached`).
    """
    image_topics = bag.require_image_topics()
    states: dict[str, _TopicState] = {}
    stamped: dict[str, list[QuestionRecord]] = {}
    for q in questions:
        try:
            topic = resolve_topic(q, bag, image_topics, default_topic)
        except TopicError as exc:
            yield FrameMatch(q, q.topic or default_topic, error=exc)
            continue
        state = states.setdefault(topic, _TopicState(FrameBuffer(buffer_size)))
        if q.stamp_ns is not None:
            stamped.setdefault(topic, []).append(q)
        else:
            state.by_index.setdefault(q.frame_index, []).append(q)
    for topic, qs in stamped.items():
        states[topic].by_stamp.extend(sorted(qs, key=lambda q: q.stamp_ns))
    if not states:
        return

    try:
        yield from _play(bag, states, policy)
    except BagError as exc:
        # the bag broke part-way: what it gave still answers the questions whose frame it had
        # passed; the others are error records, so every question of the file has its record
        yield from _unreached(states, policy, exc)
        raise
    for topic, state in states.items():
        while state.by_stamp:
            yield _select(topic, state, state.by_stamp.popleft(), policy)
        for index, qs in sorted(state.by_index.items()):
            for q in qs:
                yield FrameMatch(q, topic, error=NoFrameError(
                    f"frame_index {index} asked, but topic {topic} has {state.count} messages "
                    f"(indices 0 .. {state.count - 1})"))


def _play(bag: Bag, states: dict[str, _TopicState],
          policy: SelectionPolicy) -> Iterator[FrameMatch]:
    """One pass over the bag: each message into its topic's buffer, and the questions it decides
    (its index; stamps it has passed by more than the tolerance) with their frames."""
    for message in bag.messages(states):
        state = states[message.topic]
        frame = state.buffer.add(message.stamp_ns, message, message.frame_id)
        state.count += 1
        if state.first_ns is None:
            state.first_ns = state.last_ns = message.stamp_ns
        state.first_ns = min(state.first_ns, message.stamp_ns)
        state.last_ns = max(state.last_ns, message.stamp_ns)
        for q in state.by_index.pop(message.index, ()):
            yield FrameMatch(q, message.topic, frame)
        while (state.by_stamp
               and state.by_stamp[0].stamp_ns + policy.tolerance_ns < message.stamp_ns):
            yield _select(message.topic, state, state.by_stamp.popleft(), policy)
        if not any(s.by_stamp or s.by_index for s in states.values()):
            return                          # every question has its frame: skip the rest


def _unreached(states: dict[str, _TopicState], policy: SelectionPolicy,
               exc: BagError) -> Iterator[FrameMatch]:
    """After a corrupt part: a question whose stamp the bag had reached gets the frame selected
    from what was read (a later frame, stamped after it, could not be nearer); every other
    question an error record saying the bag ended before its frame."""
    for topic, state in states.items():
        while state.by_stamp:
            q = state.by_stamp.popleft()
            if state.last_ns is not None and q.stamp_ns <= state.last_ns:
                yield _select(topic, state, q, policy)
            else:
                yield FrameMatch(q, topic, error=BagError(f"not reached: {exc}"))
        for qs in state.by_index.values():
            for q in qs:
                yield FrameMatch(q, topic, error=BagError(f"not reached: {exc}"))
        state.by_index.clear()
