"""spatialgeo_core.frames: the bounded stamp-indexed buffer and the frame selection rule."""
from __future__ import annotations

import threading

import pytest

from spatialgeo_core.frames import (
    FrameBuffer,
    NoFrameError,
    SelectionPolicy,
    StaleFrameError,
)

MS = 1_000_000
S = 1_000_000_000
POLICY = SelectionPolicy(tolerance_ns=50 * MS, max_age_ns=1 * S)


def filled(stamps, capacity=10):
    buf = FrameBuffer(capacity)
    for s in stamps:
        buf.add(s, f"payload@{s}", frame_id="cam")
    return buf


def test_keeps_the_newest_capacity_frames_in_stamp_order_even_out_of_order():
    buf = filled([5 * S, 1 * S, 3 * S, 2 * S, 4 * S, 6 * S], capacity=4)
    assert len(buf) == 4
    assert buf.span() == (3 * S, 6 * S)
    assert buf.latest().stamp_ns == 6 * S
    assert buf.received == 6


def test_late_frame_older_than_everything_is_dropped_when_full():
    buf = filled([2 * S, 3 * S, 4 * S], capacity=3)
    buf.add(1 * S, "late")
    assert buf.span() == (2 * S, 4 * S)


def test_same_stamp_replaces():
    buf = filled([1 * S, 2 * S])
    buf.add(2 * S, "newer payload")
    assert len(buf) == 2 and buf.latest().payload == "newer payload"


def test_nearest_prefers_the_earlier_frame_on_a_tie():
    buf = filled([1 * S, 2 * S])
    assert buf.nearest(1.5 * S).stamp_ns == 1 * S
    assert buf.nearest(1.6 * S).stamp_ns == 2 * S
    assert buf.nearest(0).stamp_ns == 1 * S
    assert buf.nearest(9 * S).stamp_ns == 2 * S
    assert FrameBuffer(3).nearest(1) is None


def test_select_empty_is_no_frame():
    with pytest.raises(NoFrameError, match="no frame has been received"):
        FrameBuffer(3).select(0, 10 * S, POLICY)


def test_select_zero_stamp_is_the_latest_frame_when_fresh():
    buf = filled([9 * S, 10 * S])
    assert buf.select(0, 10 * S + 500 * MS, POLICY).stamp_ns == 10 * S


def test_select_zero_stamp_stale_when_latest_is_older_than_max_age():
    buf = filled([9 * S, 10 * S])
    with pytest.raises(StaleFrameError, match="1.500 s old; the limit is 1.000 s"):
        buf.select(0, 11 * S + 500 * MS, POLICY)


def test_max_age_zero_accepts_any_age_and_future_frames_are_fresh():
    buf = filled([10 * S])
    assert buf.select(0, 1000 * S, SelectionPolicy(50 * MS, 0)).stamp_ns == 10 * S
    assert buf.select(0, 9 * S, POLICY).stamp_ns == 10 * S       # clock behind the camera


def test_select_stamp_within_tolerance_gives_the_nearest():
    buf = filled([1 * S, 1 * S + 33 * MS, 1 * S + 66 * MS])
    assert buf.select(1 * S + 40 * MS, 50 * S, POLICY).stamp_ns == 1 * S + 33 * MS
    assert buf.select(1 * S + 100 * MS, 50 * S, POLICY).stamp_ns == 1 * S + 66 * MS
    # the age limit is for stamp zero only: an explicit stamp may be old
    assert buf.select(1 * S, 500 * S, POLICY).stamp_ns == 1 * S


def test_select_stamp_outside_tolerance():
    buf = filled([2 * S, 3 * S, 4 * S], capacity=3)
    with pytest.raises(NoFrameError, match="no frame within 0.050 s"):
        buf.select(2 * S + 500 * MS, 5 * S, POLICY)                # a gap inside the span
    with pytest.raises(NoFrameError):
        buf.select(6 * S, 5 * S, POLICY)                           # not received (yet)
    with pytest.raises(StaleFrameError, match="older than every buffered frame"):
        buf.select(1 * S, 5 * S, POLICY)                           # evicted


def test_policy_rejects_negative_values():
    with pytest.raises(ValueError, match="tolerance_ns"):
        SelectionPolicy(tolerance_ns=-1)
    with pytest.raises(ValueError, match="max_age_ns"):
        SelectionPolicy(max_age_ns=-1)
    with pytest.raises(ValueError, match="capacity"):
        FrameBuffer(0)


def test_a_derived_value_is_computed_once_and_a_failure_is_retried():
    frame = filled([1 * S]).latest()
    calls = []

    def broken():
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        frame.derived("depth", broken)
    assert frame.derived("depth", lambda: calls.append(1) or "ok") == "ok"
    assert frame.derived("depth", lambda: calls.append(1) or "again") == "ok"
    assert calls == [1]


def test_concurrent_adds_and_selects_keep_the_buffer_consistent():
    buf = FrameBuffer(capacity=50)
    errors = []

    def producer(offset):
        for i in range(500):
            buf.add((i * 4 + offset) * MS + S, i)

    def consumer():
        for _ in range(500):
            try:
                buf.select(0, 10 * S, SelectionPolicy(50 * MS, 0))
            except NoFrameError:
                pass
            except Exception as exc:  # anything else is a bug
                errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=consumer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(buf) == 50
    stamps = [buf.nearest(s).stamp_ns for s in range(buf.span()[0], buf.span()[1] + 1, MS)]
    assert stamps == sorted(stamps)
    assert buf.received == 2000
