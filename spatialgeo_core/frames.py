"""A bounded, stamp-indexed frame buffer and the rule that picks the frame a question is about.

The ROS node keeps one buffer per camera; the offline rosbag evaluation fills the same buffer
from a bag, so both answer about the same frame for the same stamp. Pure Python, no ROS.

Selection rule (`FrameBuffer.select`), with stamps in integer nanoseconds:
- an empty buffer gives NoFrameError;
- stamp 0 asks for the latest frame; it is StaleFrameError when that frame is older than
  `max_age_ns` at `now_ns` (max_age_ns 0 = any age; a frame stamped in the future counts as
  fresh);
- any other stamp gives the buffered frame nearest to it (the earlier one on a tie) when it lies
  within `tolerance_ns`; otherwise StaleFrameError when the stamp is older than the oldest
  buffered frame (it has been evicted), and NoFrameError when it is not (no frame was received
  near that time).

Payloads are opaque (a ROS message, a decoded array, a file path): the buffer never looks inside
them. A buffered Frame is also the name under which the pipeline's feature cache keeps the frame's
image and features (spatialgeo_core.serving.answer_frame), so the buffer holds no features
itself. Other values derived from a frame (eval-bag's depth image) are computed lazily, once per
frame, through `Frame.derived`.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spatialgeo_core.errors import SpatialGeoError

NS_PER_S = 1_000_000_000


class FrameSelectionError(SpatialGeoError):
    """No buffered frame matches the requested stamp."""


class NoFrameError(FrameSelectionError):
    """The buffer is empty, or has no frame near the requested stamp."""


class StaleFrameError(FrameSelectionError):
    """The latest frame is older than the allowed age, or the requested one was evicted."""


def seconds(ns: int) -> str:
    """'12.345678901 s' for a nanosecond stamp, for messages."""
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    return f"{sign}{ns // NS_PER_S}.{ns % NS_PER_S:09d} s"     # exact: no float rounding


@dataclass(frozen=True)
class SelectionPolicy:
    """How close a frame must be to the question.

    tolerance_ns: largest |frame stamp - requested stamp| accepted for a non-zero stamp.
    max_age_ns: largest age of the latest frame accepted for stamp 0; 0 = any age.
    """

    tolerance_ns: int = 50_000_000
    max_age_ns: int = 1_000_000_000

    def __post_init__(self):
        if self.tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {self.tolerance_ns}")
        if self.max_age_ns < 0:
            raise ValueError(f"max_age_ns must be >= 0 (0 = any age), got {self.max_age_ns}")


class Frame:
    """One buffered frame: its stamp, frame_id, opaque payload and lazily derived values."""

    __slots__ = ("stamp_ns", "frame_id", "payload", "_derived", "_lock")

    def __init__(self, stamp_ns: int, payload: Any, frame_id: str = ""):
        self.stamp_ns = int(stamp_ns)
        self.frame_id = frame_id
        self.payload = payload
        self._derived: dict[str, Any] = {}
        self._lock = threading.Lock()

    def derived(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value stored under `key`, computed by `compute()` on first use.

        Concurrent callers for the same frame wait for one computation; an exception from `compute`
        propagates and nothing is stored, so a later call tries again.
        """
        with self._lock:
            if key not in self._derived:
                self._derived[key] = compute()
            return self._derived[key]

    def __repr__(self) -> str:
        return (f"Frame(stamp={seconds(self.stamp_ns)}, frame_id={self.frame_id!r}, "
                f"derived={sorted(self._derived)})")


class FrameBuffer:
    """The last `capacity` frames of one camera, sorted by stamp; thread-safe."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._stamps: list[int] = []
        self._frames: list[Frame] = []
        self._lock = threading.Lock()
        self.received = 0          # frames added since construction (for diagnostics)

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def add(self, stamp_ns: int, payload: Any, frame_id: str = "") -> Frame:
        """Insert a frame in stamp order (out-of-order arrivals are fine); a frame with the same
        stamp replaces the buffered one. The oldest frame leaves when the buffer is full.
        O(capacity) at worst, no I/O, never blocks for long: safe in a camera callback."""
        frame = Frame(stamp_ns, payload, frame_id)
        with self._lock:
            self.received += 1
            i = bisect.bisect_left(self._stamps, frame.stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == frame.stamp_ns:
                self._frames[i] = frame
                return frame
            self._stamps.insert(i, frame.stamp_ns)
            self._frames.insert(i, frame)
            while len(self._frames) > self.capacity:
                self._stamps.pop(0)
                self._frames.pop(0)
        return frame

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._frames.clear()

    def latest(self) -> Frame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def span(self) -> tuple[int, int] | None:
        """(oldest, newest) stamp in the buffer, or None when it is empty."""
        with self._lock:
            return (self._stamps[0], self._stamps[-1]) if self._stamps else None

    def nearest(self, stamp_ns: int) -> Frame | None:
        """The buffered frame nearest to `stamp_ns` (the earlier on a tie); None when empty."""
        with self._lock:
            return self._nearest_locked(int(stamp_ns))

    def _nearest_locked(self, stamp_ns: int) -> Frame | None:
        if not self._frames:
            return None
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i == 0:
            return self._frames[0]
        if i == len(self._stamps):
            return self._frames[-1]
        before, after = self._stamps[i - 1], self._stamps[i]
        return self._frames[i - 1] if stamp_ns - before <= after - stamp_ns else self._frames[i]

    def select(self, stamp_ns: int, now_ns: int, policy: SelectionPolicy) -> Frame:
        """The frame a question about `stamp_ns` is about (the rule: module docstring)."""
        stamp_ns, now_ns = int(stamp_ns), int(now_ns)
        with self._lock:
            if not self._frames:
                raise NoFrameError("no frame has been received yet")
            oldest, newest = self._stamps[0], self._stamps[-1]
            if stamp_ns == 0:
                frame = self._frames[-1]
                age = now_ns - frame.stamp_ns
                if policy.max_age_ns and age > policy.max_age_ns:
                    raise StaleFrameError(
                        f"the latest frame (stamp {seconds(frame.stamp_ns)}) is "
                        f"{age / NS_PER_S:.3f} s old; the limit is "
                        f"{policy.max_age_ns / NS_PER_S:.3f} s (frames.max_age)")
                return frame
            frame = self._nearest_locked(stamp_ns)
            assert frame is not None
            if abs(frame.stamp_ns - stamp_ns) <= policy.tolerance_ns:
                return frame
            held = (f"{len(self._frames)} buffered frames span {seconds(oldest)} .. "
                    f"{seconds(newest)}")
            if stamp_ns < oldest:
                raise StaleFrameError(
                    f"the frame at {seconds(stamp_ns)} is older than every buffered frame "
                    f"({held})")
            raise NoFrameError(
                f"no frame within {policy.tolerance_ns / NS_PER_S:.3f} s of {seconds(stamp_ns)} "
                f"({held})")
