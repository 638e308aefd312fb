"""The node's request path without ROS: request_validation, outcomes (every status path),
inference_queue (the bounded queue, timeouts, concurrency), query_service and diagnostics."""
from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np
import pytest

from spatialgeo_core.answer_parsing import parse_metric_value
from spatialgeo_core.errors import (
    CheckpointError,
    InvalidImageError,
    InvalidRegionError,
    InvalidRequestError,
    SpatialGeoError,
)
from spatialgeo_core.frames import NoFrameError, StaleFrameError
from spatialgeo_core.types import Region
from spatialgeo_ros.diagnostics import LatencyStats, ModelState, build_diagnostics
from spatialgeo_ros.inference_queue import InferenceQueue, QueueClosed, QueueFull
from spatialgeo_ros.outcomes import Status, outcome_for_exception
from spatialgeo_ros.params import params_from_values
from spatialgeo_ros.query_service import QueryService
from spatialgeo_ros.request_validation import QueryRequest, validate_request

S = 1_000_000_000
NOW = 100 * S
IMAGE = np.zeros((48, 64, 3), np.uint8)          # [H, W, 3]


def params(**overrides):
    return params_from_values(overrides)


def make_service(pipeline, *, cameras=("camera",), decode=None, frames=True, **values):
    p = params(**{"cameras.names": list(cameras), **values})
    service = QueryService(pipeline, p.cameras.names, p.frames, p.query, p.cameras.buffer_size,
                           decode=decode or (lambda payload: payload))
    if frames:
        for camera in cameras:
            service.add_frame(camera, NOW - S // 10, IMAGE, frame_id=f"{camera}_optical")
    service.start()
    return service


@pytest.fixture
def service_factory():
    made = []

    def factory(pipeline, **kw):
        s = make_service(pipeline, **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close(timeout=5)


# ---- validation ------------------------------------------------------------------------------

LIMITS = params().query


@pytest.mark.parametrize("request_, match", [
    (QueryRequest(question="   "), "question is empty"),
    (QueryRequest(question="x" * 2001), "2001 characters; the limit is 2000"),
    (QueryRequest(question="q", camera="rear"), "unknown camera 'rear'; this node serves: cam"),
    (QueryRequest(question="q", regions=(Region(box=(0, 0, 1, 1)),) * 17), "17 regions"),
    (QueryRequest(question="Is Region [1] left of Region [0]?",
                  regions=(Region(box=(0, 0, 1, 1)),)), r"refers to Region \[1\]"),
    (QueryRequest(question="q", max_new_tokens=513), "max_new_tokens must be 0"),
    (QueryRequest(question="q", max_new_tokens=-1), "max_new_tokens must be 0"),
    (QueryRequest(question="q", temperature=-0.5), "temperature must be >= 0"),
    (QueryRequest(question="q", temperature=math.nan), "temperature must be finite"),
    (QueryRequest(question="q", timeout_s=-1.0), "timeout_s must be 0"),
    (QueryRequest(question="q", timeout_s=121.0), r"timeout_s must be 0 \(default\) .. 120"),
    (QueryRequest(question="q", timeout_s=math.inf), "timeout_s must be 0"),
])
def test_invalid_requests_are_named(request_, match):
    with pytest.raises(InvalidRequestError, match=match):
        validate_request(request_, ("cam",), LIMITS)


def test_valid_request_takes_the_defaults():
    valid = validate_request(QueryRequest(question="  How far is Region [0]?  ",
                                          regions=(Region(box=(0, 0, 2, 2)),)),
                             ("front", "rear"), LIMITS)
    assert valid.question == "How far is Region [0]?"
    assert valid.camera == "front"
    assert valid.options.max_new_tokens == 128 and valid.options.temperature == 0
    assert valid.timeout_s == 30.0
    valid = validate_request(QueryRequest(question="q", camera="rear", max_new_tokens=7,
                                          timeout_s=2.5), ("front", "rear"), LIMITS)
    assert (valid.camera, valid.options.max_new_tokens, valid.timeout_s) == ("rear", 7, 2.5)


@pytest.mark.parametrize("exc, status", [
    (NoFrameError("x"), Status.NO_FRAME),
    (StaleFrameError("x"), Status.STALE_FRAME),
    (InvalidRequestError("x"), Status.INVALID_REQUEST),
    (InvalidRegionError("x"), Status.INVALID_REQUEST),
    (QueueFull("x"), Status.BUSY),
    (QueueClosed("x"), Status.MODEL_NOT_READY),
    (InvalidImageError("x"), Status.INFERENCE_ERROR),
    (CheckpointError("x"), Status.INFERENCE_ERROR),
    (SpatialGeoError("x"), Status.INFERENCE_ERROR),
    (RuntimeError("CUDA out of memory"), Status.INFERENCE_ERROR),
])
def test_exceptions_map_to_statuses(exc, status):
    out = outcome_for_exception(exc)
    assert out.status == status and out.message


# ---- every status through QueryService.handle ----------------------------------------------

def test_ok_answer_carries_frame_stamp_value_and_latency(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls()
    service = service_factory(pipe)
    out = service.handle(QueryRequest(question="How far is Region [0] from Region [1]?",
                                      regions=(Region(box=(1, 1, 10, 10)),
                                               Region(box=(20, 5, 60, 40)))), NOW)
    assert out.status == Status.OK, out.message
    assert out.answer == "Region [0] is 2.5 meters from Region [1]."
    assert out.stamp_ns == NOW - S // 10 and out.frame_id == "camera_optical"
    assert out.camera == "camera" and out.latency_s > 0 and out.num_tokens == 8
    assert pipe.regions_seen[0] == [Region(box=(1, 1, 10, 10)), Region(box=(20, 5, 60, 40))]
    assert out.value == pytest.approx(2.5) and out.unit == "m"


def test_question_without_regions_passes_none(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="It is a chair.")
    out = service_factory(pipe).handle(QueryRequest(question="What is this?"), NOW)
    assert out.status == Status.OK and pipe.regions_seen == [None]
    assert out.value is None and out.unit == ""


def test_model_not_ready_until_started_and_after_pause(fake_pipeline_cls):
    pipe = fake_pipeline_cls()
    p = params()
    service = QueryService(pipe, ("camera",), p.frames, p.query, 5, decode=lambda x: x)
    service.add_frame("camera", NOW, IMAGE)
    out = service.handle(QueryRequest(question="q"), NOW)
    assert out.status == Status.MODEL_NOT_READY and "not active" in out.message
    service.start()
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.OK
    service.pause("the node is inactive")
    out = service.handle(QueryRequest(question="q"), NOW)
    assert (out.status, out.message) == (Status.MODEL_NOT_READY, "the node is inactive")
    service.close()
    assert pipe.answer_calls == 1


def test_no_frame_and_stale_frame(fake_pipeline_cls, service_factory):
    service = service_factory(fake_pipeline_cls(), frames=False)
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.NO_FRAME
    service.add_frame("camera", NOW - 5 * S, IMAGE)
    out = service.handle(QueryRequest(question="q"), NOW)
    assert out.status == Status.STALE_FRAME and "frames.max_age" in out.message
    out = service.handle(QueryRequest(question="q", stamp_ns=NOW - 2 * S), NOW)
    assert out.status == Status.NO_FRAME and "no frame within 0.050 s" in out.message
    out = service.handle(QueryRequest(question="q", stamp_ns=NOW - 5 * S + 10_000_000), NOW)
    assert out.status == Status.OK and out.stamp_ns == NOW - 5 * S


def test_invalid_requests_through_the_service(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls()
    service = service_factory(pipe)
    out = service.handle(QueryRequest(question=""), NOW)
    assert out.status == Status.INVALID_REQUEST and out.message == "the question is empty"
    out = service.handle(QueryRequest(question="q", camera="nope"), NOW)
    assert out.status == Status.INVALID_REQUEST and "unknown camera" in out.message
    # a region outside the 64x48 frame is found against the frame it asks about
    out = service.handle(QueryRequest(question="Is Region [0] big?",
                                      regions=(Region(box=(10, 10, 80, 20)),)), NOW)
    assert out.status == Status.INVALID_REQUEST
    assert "Region [0]" in out.message and "outside the 64x48 image" in out.message
    out = service.handle(QueryRequest(question="Is Region [0] big?",
                                      regions=(Region(mask=np.ones((10, 10), bool)),)), NOW)
    assert out.status == Status.INVALID_REQUEST and "does not match the image" in out.message
    assert pipe.answer_calls == 0


def test_inference_errors(fake_pipeline_cls, service_factory):
    service = service_factory(fake_pipeline_cls(fail=RuntimeError("CUDA out of memory")))
    out = service.handle(QueryRequest(question="q"), NOW)
    assert out.status == Status.INFERENCE_ERROR and "CUDA out of memory" in out.message
    assert out.stamp_ns == NOW - S // 10                  # still says which frame it was about
    service = service_factory(fake_pipeline_cls(fail=InvalidRequestError("too long for model")))
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.INVALID_REQUEST


def test_undecodable_frame_is_an_inference_error(fake_pipeline_cls, service_factory, caplog):
    def decode(payload):
        raise InvalidImageError("unsupported image encoding 'bayer_rggb8'")

    with caplog.at_level(logging.WARNING, logger="spatialgeo_ros.query_service"):
        out = service_factory(fake_pipeline_cls(), decode=decode).handle(
            QueryRequest(question="q"), NOW)
    assert out.status == Status.INFERENCE_ERROR and "bayer_rggb8" in out.message
    # the camera's fault, not ours: one line in the log, no traceback
    (record,) = [r for r in caplog.records if "bayer_rggb8" in r.getMessage()]
    assert record.exc_info is None and "\n" not in record.getMessage()


def test_busy_when_the_queue_is_full(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(token_delay=0.05)
    service = service_factory(pipe, **{"query.max_pending": 1})
    first = []
    t = threading.Thread(target=lambda: first.append(
        service.handle(QueryRequest(question="q"), NOW)))
    t.start()
    deadline = time.monotonic() + 2
    while service.queue.depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    t0 = time.monotonic()
    out = service.handle(QueryRequest(question="q"), NOW)
    assert out.status == Status.BUSY and "query.max_pending" in out.message
    assert time.monotonic() - t0 < 0.25                      # BUSY is answered at once
    t.join(5)
    assert first[0].status == Status.OK


def test_timeout_stops_generation_and_frees_the_worker(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="word " * 200, token_delay=0.01)
    service = service_factory(pipe, **{"query.max_pending": 1})
    t0 = time.monotonic()
    out = service.handle(QueryRequest(question="q", timeout_s=0.2), NOW)
    elapsed = time.monotonic() - t0
    assert out.status == Status.TIMEOUT and "within 0.2 s" in out.message
    assert 0.2 <= elapsed < 0.6
    deadline = time.monotonic() + 1
    while service.queue.depth() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert service.queue.depth() == 0                       # the generation loop saw should_stop


def test_timeout_is_kept_even_when_the_model_does_not_stop(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="word " * 40, token_delay=0.01, ignore_stop=True)
    service = service_factory(pipe, **{"query.max_pending": 1})
    t0 = time.monotonic()
    out = service.handle(QueryRequest(question="q", timeout_s=0.15), NOW)
    assert out.status == Status.TIMEOUT and time.monotonic() - t0 < 0.5
    # the slot stays taken while the device is busy: the next request is BUSY, not queued
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.BUSY


def test_a_request_that_expires_while_queued_is_never_run(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="word " * 20, token_delay=0.01)
    service = service_factory(pipe, **{"query.max_pending": 2})
    slow = threading.Thread(target=lambda: service.handle(QueryRequest(question="q"), NOW))
    slow.start()
    while service.queue.depth() == 0:
        time.sleep(0.001)
    out = service.handle(QueryRequest(question="q", timeout_s=0.1), NOW)
    assert out.status == Status.TIMEOUT and "still queued" in out.message
    slow.join(5)
    time.sleep(0.05)
    assert pipe.answer_calls == 1


def test_streaming_and_cancel(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="one two three four", token_delay=0.06)
    service = service_factory(pipe)
    partials = []
    out = service.handle(QueryRequest(question="q"), NOW, on_partial=partials.append)
    assert out.status == Status.OK and out.answer == "one two three four"
    assert partials and all("one two three four".startswith(p) for p in partials)
    assert partials == sorted(partials, key=len)

    cancel = threading.Event()
    pipe.text = "word " * 100
    threading.Timer(0.15, cancel.set).start()
    t0 = time.monotonic()
    out = service.handle(QueryRequest(question="q"), NOW, on_partial=lambda p: None,
                         is_cancelled=cancel.is_set)
    assert out.status == Status.CANCELLED and time.monotonic() - t0 < 0.8


def test_features_are_reused_for_further_questions(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="yes")
    service = service_factory(pipe)
    for _ in range(3):
        assert service.handle(QueryRequest(question="q"), NOW).status == Status.OK
    assert pipe.encode_calls == 1
    service.add_frame("camera", NOW, IMAGE)
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.OK
    assert pipe.encode_calls == 2


def test_frames_are_decoded_lazily(fake_pipeline_cls, service_factory):
    decoded = []

    def decode(payload):
        decoded.append(payload)
        return IMAGE

    service = service_factory(fake_pipeline_cls(), decode=decode, frames=False)
    for i in range(10):
        service.add_frame("camera", NOW - i * S // 100, f"msg{i}")
    assert decoded == []                                   # buffering decodes nothing
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.OK
    assert decoded == ["msg0"]


def test_several_cameras(fake_pipeline_cls, service_factory):
    service = service_factory(fake_pipeline_cls(), cameras=("front", "wrist"), frames=False)
    service.add_frame("wrist", NOW, IMAGE, "wrist_link")
    assert service.handle(QueryRequest(question="q"), NOW).status == Status.NO_FRAME  # front
    out = service.handle(QueryRequest(question="q", camera="wrist"), NOW)
    assert out.status == Status.OK and out.frame_id == "wrist_link" and out.camera == "wrist"


def test_generation_limits_reach_the_pipeline(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="a b c d e f")
    service = service_factory(pipe)
    out = service.handle(QueryRequest(question="q", max_new_tokens=3, temperature=0.7), NOW)
    assert out.answer == "a b c" and "max_new_tokens=3" in out.message
    assert pipe.options_seen[0].max_new_tokens == 3 and pipe.options_seen[0].temperature == 0.7


def test_close_ends_waiting_requests_and_drops_frames(fake_pipeline_cls):
    pipe = fake_pipeline_cls(text="word " * 100, token_delay=0.01)
    service = make_service(pipe, **{"query.max_pending": 3})
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        service.handle(QueryRequest(question="q"), NOW))) for _ in range(3)]
    for t in threads:
        t.start()
    while service.queue.depth() < 3:
        time.sleep(0.001)
    t0 = time.monotonic()
    assert service.close(timeout=2)
    for t in threads:
        t.join(2)
    assert time.monotonic() - t0 < 1.0
    assert len(results) == 3
    assert {r.status for r in results} <= {Status.MODEL_NOT_READY, Status.OK}
    assert all(len(b) == 0 for b in service.buffers.values())
    out = service.handle(QueryRequest(question="q"), NOW)
    assert out.status == Status.MODEL_NOT_READY


def test_many_simultaneous_requests_each_answered_or_busy(fake_pipeline_cls, service_factory):
    pipe = fake_pipeline_cls(text="one two three", token_delay=0.002)
    service = service_factory(pipe, **{"query.max_pending": 4})
    n = 48
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def ask(i):
        barrier.wait()
        results[i] = service.handle(QueryRequest(question=f"question {i}"), NOW)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "deadlock"
    statuses = [r.status for r in results]
    assert None not in results                                    # none lost
    assert set(statuses) <= {Status.OK, Status.BUSY}
    ok = statuses.count(Status.OK)
    assert 4 <= ok < n and pipe.answer_calls == ok
    assert pipe.max_running == 1                                  # one model, one forward
    counts = service.counts()
    assert counts["OK"] == ok and counts["BUSY"] == n - ok
    assert service.queue.depth() == 0
    assert len(service.latency) == ok


# ---- queue, stats, diagnostics --------------------------------------------------------------

def test_queue_rejects_when_closed_and_runs_jobs_in_order():
    queue = InferenceQueue(capacity=3)
    with pytest.raises(QueueClosed):
        queue.submit(lambda t: 1, time.monotonic() + 1)
    queue.start()
    order = []
    tickets = [queue.submit(lambda t, i=i: order.append(i) or i, time.monotonic() + 5)
               for i in range(3)]
    assert all(t.wait(2) for t in tickets)
    assert order == [0, 1, 2] and [t.result for t in tickets] == [0, 1, 2]
    failing = queue.submit(lambda t: 1 / 0, time.monotonic() + 5)
    assert failing.wait(2) and isinstance(failing.error, ZeroDivisionError)
    assert queue.submit(lambda t: "worker alive", time.monotonic() + 5).wait(2)
    assert queue.stop(2)
    with pytest.raises(ValueError):
        InferenceQueue(0)


def test_latency_percentiles_nearest_rank():
    stats = LatencyStats(window=100)
    assert stats.percentile(50) is None
    for v in range(1, 101):
        stats.record(v / 100)
    assert stats.percentile(50) == pytest.approx(0.50)
    assert stats.percentile(95) == pytest.approx(0.95)
    stats.record(10.0)                                    # window drops the oldest
    assert len(stats) == 100 and stats.percentile(100) == 10.0


def test_diagnostics(fake_pipeline_cls, service_factory):
    service = service_factory(fake_pipeline_cls())
    service.handle(QueryRequest(question="q"), NOW)
    service.handle(QueryRequest(question=""), NOW)
    report = build_diagnostics(service, ModelState.LOADED, NOW, {"gpu_allocated_mb": 1234.5})
    values = dict(report.values)
    assert report.level == "OK" and report.message == "serving"
    assert values["model_state"] == "loaded" and values["queue_depth"] == "0"
    assert values["count_ok"] == "1" and values["count_invalid_request"] == "1"
    assert values["latency_p50_s"] != "n/a" and "latency_p95_s" in values
    assert values["camera_camera_frames"] == "1" and values["cached_frames"] == "1"
    assert values["gpu_allocated_mb"] == "1234.5"
    failed = build_diagnostics(None, ModelState.FAILED, NOW, {}, detail="CheckpointError: x")
    assert failed.level == "ERROR" and failed.message == "CheckpointError: x"
    assert build_diagnostics(None, ModelState.UNLOADED, NOW, {}).level == "WARN"
    service.pause()
    assert build_diagnostics(service, ModelState.LOADED, NOW, {}).level == "WARN"


def test_answer_values_are_parsed():
    """The rule the node's values come from (spatialgeo_core.serving.answer_frame)."""
    assert parse_metric_value("It is about 3 feet away.") == (pytest.approx(0.9144), "m")
    assert parse_metric_value("Region [0] is at 2 o'clock.") == (pytest.approx(2.0), "o'clock")
    assert parse_metric_value("The chair is on the left.") is None


def test_a_failing_feedback_callback_does_not_end_the_request(fake_pipeline_cls,
                                                             service_factory):
    service = service_factory(fake_pipeline_cls(text="one two three", token_delay=0.03))

    def broken_feedback(text):
        raise RuntimeError("goal handle gone")

    out = service.handle(QueryRequest(question="q"), NOW, on_partial=broken_feedback)
    assert out.status == Status.OK and out.answer == "one two three"
