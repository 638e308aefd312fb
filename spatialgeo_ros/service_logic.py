"""Everything between a ROS request and the core pipeline, in plain Python (threads, no rclpy).

- `Status`: the status constants of msg/QueryStatus.msg (a test keeps them equal).
- `validate_request`: question, camera, regions and generation limits -> InvalidRequestError or
  a ValidatedRequest.
- `outcome_for_exception`: spatialgeo_core error classes -> status + message.
- `InferenceQueue`: a bounded queue with one worker thread (one model, one device); `submit`
  raises QueueFull (-> BUSY) instead of waiting; each job carries a deadline and a cancel flag
  the generation loop polls (`Ticket.should_stop`).
- `LatencyStats`: p50 / p95 over a sliding window.
- `QueryService`: per-camera frame buffers + pipeline + queue; `handle(request)` always returns
  a QueryOutcome within the request's timeout and never raises. An answered request also carries
  its regions' 3D positions (positions_logic.PositionSource: depth and CameraInfo) and, when
  asked for, the annotated image (spatialgeo_core.annotate).

The caller of `handle` blocks until the outcome (at most the timeout); the inference itself runs
on the queue's worker thread, so a caller that gives up (timeout, cancel) returns at once while
the worker stops the generation at the next token.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

import numpy as np

from spatialgeo_core.errors import (
    CheckpointError,
    InvalidImageError,
    InvalidRegionError,
    InvalidRequestError,
    MissingDependencyError,
    SpatialGeoError,
)
from spatialgeo_core.frames import (
    NS_PER_S,
    Frame,
    FrameBuffer,
    NoFrameError,
    SelectionPolicy,
    StaleFrameError,
)
from spatialgeo_core.types import GenerationOptions, Region
from spatialgeo_ros.params import FrameParams, QueryParams
from spatialgeo_ros.positions_logic import NOT_COMPUTED, PositionSource, PositionsOutcome

logger = logging.getLogger(__name__)


class Status(IntEnum):
    """Mirrors the constants of msg/QueryStatus.msg."""

    OK = 0
    NO_FRAME = 1
    STALE_FRAME = 2
    INVALID_REQUEST = 3
    MODEL_NOT_READY = 4
    BUSY = 5
    TIMEOUT = 6
    INFERENCE_ERROR = 7
    CANCELLED = 8


class ModelState(str, Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(frozen=True)
class QueryRequest:
    """A SpatialQuery request as plain data (conversions.request_from_msg builds it)."""

    question: str
    stamp_ns: int = 0                 # 0 = the latest frame
    camera: str = ""                  # "" = the first camera
    regions: tuple[Region, ...] = ()
    max_new_tokens: int = 0           # 0 = the node's default
    temperature: float = 0.0          # 0 = greedy
    timeout_s: float = 0.0            # 0 = the node's default


@dataclass
class QueryOutcome:
    """What a request ended with; conversions.fill_result writes it into a response."""

    status: Status
    message: str = ""
    answer: str = ""
    value: float | None = None        # metric value parsed from the answer
    unit: str = ""                    # "m" or "o'clock"
    stamp_ns: int = 0                 # the frame answered about (0 when none was selected)
    frame_id: str = ""
    latency_s: float = 0.0
    camera: str = ""
    num_tokens: int = 0
    positions: PositionsOutcome = NOT_COMPUTED
    annotated: np.ndarray | None = None      # uint8 [H, W, 3] RGB: what the model saw, annotated

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


@dataclass(frozen=True)
class ValidatedRequest:
    question: str
    camera: str
    regions: tuple[Region, ...]
    options: GenerationOptions
    timeout_s: float


_REGION_REF = re.compile(r"Region\s*\[\s*(\d+)\s*\]", re.IGNORECASE)


def validate_request(request: QueryRequest, cameras: Sequence[str],
                     limits: QueryParams) -> ValidatedRequest:
    """Check everything that does not need the image; raise InvalidRequestError with a message that
    names the limit (a region's fit inside the image is checked against the frame, later)."""
    question = request.question.strip()
    if not question:
        raise InvalidRequestError("the question is empty")
    if len(question) > limits.max_question_chars:
        raise InvalidRequestError(
            f"the question has {len(question)} characters; the limit is "
            f"{limits.max_question_chars} (query.max_question_chars)")
    camera = request.camera.strip() or cameras[0]
    if camera not in cameras:
        raise InvalidRequestError(
            f"unknown camera {camera!r}; this node serves: {', '.join(cameras)}")
    n = len(request.regions)
    if n > limits.max_regions:
        raise InvalidRequestError(
            f"{n} regions given; the limit is {limits.max_regions} (query.max_regions)")
    referred = sorted({int(m) for m in _REGION_REF.findall(question)})
    missing = [i for i in referred if i >= n]
    if missing:
        raise InvalidRequestError(
            f"the question refers to Region [{missing[0]}] but {n} region(s) were given "
            f"(Region [i] is the i-th entry of regions, from 0)")
    if request.max_new_tokens < 0 or request.max_new_tokens > limits.max_new_tokens_limit:
        raise InvalidRequestError(
            f"limits.max_new_tokens must be 0 (default) .. {limits.max_new_tokens_limit} "
            f"(query.max_new_tokens_limit), got {request.max_new_tokens}")
    if not math.isfinite(request.temperature):
        raise InvalidRequestError(f"limits.temperature must be finite, got {request.temperature}")
    timeout = request.timeout_s
    if not math.isfinite(timeout) or timeout < 0 or timeout > limits.max_timeout:
        raise InvalidRequestError(
            f"limits.timeout_s must be 0 (default) .. {limits.max_timeout} (query.max_timeout), "
            f"got {timeout}")
    options = GenerationOptions(         # raises InvalidRequestError for a bad temperature
        max_new_tokens=request.max_new_tokens or limits.max_new_tokens,
        temperature=request.temperature)
    return ValidatedRequest(question=question, camera=camera, regions=tuple(request.regions),
                            options=options, timeout_s=timeout or limits.timeout)


def outcome_for_exception(exc: BaseException) -> QueryOutcome:
    """A status and message for an exception raised while handling a request."""
    if isinstance(exc, NoFrameError):
        return QueryOutcome(Status.NO_FRAME, str(exc))
    if isinstance(exc, StaleFrameError):
        return QueryOutcome(Status.STALE_FRAME, str(exc))
    if isinstance(exc, (InvalidRequestError, InvalidRegionError)):
        return QueryOutcome(Status.INVALID_REQUEST, str(exc))
    if isinstance(exc, QueueFull):
        return QueryOutcome(Status.BUSY, str(exc))
    if isinstance(exc, QueueClosed):
        return QueryOutcome(Status.MODEL_NOT_READY, str(exc))
    if isinstance(exc, InvalidImageError):
        return QueryOutcome(Status.INFERENCE_ERROR, f"the frame could not be used: {exc}")
    if isinstance(exc, (CheckpointError, MissingDependencyError)):
        return QueryOutcome(Status.INFERENCE_ERROR, f"model error: {exc}")
    if isinstance(exc, SpatialGeoError):
        return QueryOutcome(Status.INFERENCE_ERROR, str(exc))
    return QueryOutcome(Status.INFERENCE_ERROR, f"inference failed: {type(exc).__name__}: {exc}")


_STOP_STATUS = {"timeout": Status.TIMEOUT, "cancelled": Status.CANCELLED,
                "shutdown": Status.MODEL_NOT_READY}


def stopped_outcome(reason: str, message: str, **fields) -> QueryOutcome:
    """The outcome of a job stopped for `reason` ("timeout", "cancelled" or "shutdown")."""
    return QueryOutcome(_STOP_STATUS.get(reason, Status.TIMEOUT), message, **fields)


def _place(out: QueryOutcome, frame: Frame, camera: str) -> QueryOutcome:
    """Attach the frame a request was about to its outcome."""
    out.stamp_ns, out.frame_id, out.camera = frame.stamp_ns, frame.frame_id, camera
    return out


def parse_answer_value(text: str) -> tuple[float, str] | None:
    """(value, unit) of a quantitative answer, or None (also while the parser is missing)."""
    try:
        from spatialgeo_core.answer_parsing import parse_metric_value
    except ImportError:
        logger.debug("spatialgeo_core.answer_parsing is missing: answers carry no value")
        return None
    return parse_metric_value(text)


# -------------------------------------------------------------------------------------------------
# The bounded inference queue


class QueueFull(Exception):
    """Every slot of the queue is taken (-> BUSY)."""


class QueueClosed(Exception):
    """The queue is not running (the node is shutting down or not configured)."""


class Ticket:
    """One admitted job: its deadline, cancel flag, streamed partial text and result."""

    def __init__(self, job: Callable[[Ticket], Any], deadline: float,
                 clock: Callable[[], float] = time.monotonic):
        self._job = job
        self.deadline = deadline
        self._clock = clock
        self._done = threading.Event()
        self._cancel_reason = ""
        self._lock = threading.Lock()
        self._partial = ""
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = False

    # caller side
    def wait(self, timeout: float | None) -> bool:
        """True when the job has finished (result or error set)."""
        return self._done.wait(None if timeout is None else max(0.0, timeout))

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the job to stop (the first reason is kept); harmless when it already finished."""
        with self._lock:
            if not self._cancel_reason:
                self._cancel_reason = reason

    @property
    def cancel_reason(self) -> str:
        return self._cancel_reason

    def partial(self) -> str:
        with self._lock:
            return self._partial

    # worker side
    def should_stop(self) -> bool:
        """Polled by the generation loop between tokens."""
        return bool(self._cancel_reason) or self._clock() >= self.deadline

    def set_partial(self, text: str) -> None:
        with self._lock:
            self._partial = text

    def _skip(self) -> None:
        """Finish without running (the queue shut down while the job waited)."""
        self._done.set()

    def _execute(self) -> None:
        try:
            if self.should_stop():        # cancelled or expired while it waited: skip the work
                return
            self.started = True
            self.result = self._job(self)
        except Exception as exc:  # a failed job is its caller's outcome, not the worker's end
            self.error = exc
        finally:
            self._done.set()


class InferenceQueue:
    """At most `capacity` admitted jobs (waiting + running); one worker thread runs them in order.

    A job whose caller gave up keeps its slot until the worker is done with it, so the depth is the
    real load on the device.
    """

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic,
                 name: str = "spatialgeo-inference"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._clock = clock
        self._name = name
        self._pending: deque[Ticket] = deque()
        self._running: Ticket | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = True

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._closed = False
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def depth(self) -> int:
        with self._cond:
            return len(self._pending) + (self._running is not None)

    def submit(self, job: Callable[[Ticket], Any], deadline: float) -> Ticket:
        """Admit `job` (called as job(ticket) on the worker) or raise QueueFull / QueueClosed."""
        with self._cond:
            if self._closed:
                raise QueueClosed("the inference queue is not running")
            depth = len(self._pending) + (self._running is not None)
            if depth >= self.capacity:
                raise QueueFull(
                    f"{depth} requests are being served or waiting; the limit is {self.capacity} "
                    f"(query.max_pending): try again later")
            ticket = Ticket(job, deadline, self._clock)
            self._pending.append(ticket)
            self._cond.notify()
            return ticket

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel what waits and what runs, and join the worker; True when it ended in time."""
        with self._cond:
            self._closed = True
            for ticket in self._pending:
                ticket.cancel("shutdown")
                ticket._skip()
            self._pending.clear()
            if self._running is not None:
                self._running.cancel("shutdown")
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                ticket = self._pending.popleft()
                self._running = ticket
            try:
                ticket._execute()
            finally:
                with self._cond:
                    self._running = None


# -------------------------------------------------------------------------------------------------
# Latency statistics


class LatencyStats:
    """Latencies (s) of the last `window` answers; nearest-rank percentiles."""

    def __init__(self, window: int = 200):
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            self._values.append(float(seconds))

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0 < q <= 100) by nearest rank, or None without data."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return None
        rank = max(1, math.ceil(q / 100.0 * len(values)))
        return values[rank - 1]


# -------------------------------------------------------------------------------------------------
# The service


@dataclass(frozen=True)
class DiagnosticReport:
    """One diagnostic_msgs/DiagnosticStatus as plain data; level is "OK", "WARN" or "ERROR"."""

    level: str
    message: str
    values: tuple[tuple[str, str], ...]


@dataclass
class _Counters:
    by_status: dict[Status, int] = field(default_factory=lambda: {s: 0 for s in Status})


class QueryService:
    """Frame buffers, the pipeline and the queue; `handle` turns one request into one outcome.

    pipeline: an object with `encode(image)` and `answer(features, question, regions, options,
    on_text, should_stop)` (spatialgeo_core.pipeline.SpatialGeoPipeline, or a test double).
    decode: payload stored in the buffer -> uint8 [H, W, 3] RGB (run lazily, on the worker).
    positions: the cameras' depth and CameraInfo (default: no depth input). annotate: give an
    answered request its annotated image (QueryOutcome.annotated): a bool, or a callable asked
    each time (the node's: is anybody subscribed to annotated_image?).
    """

    POLL_S = 0.05     # how often a streaming caller looks at partial text and its cancel flag

    def __init__(self, pipeline, cameras: Sequence[str], frame_params: FrameParams,
                 query_params: QueryParams, buffer_size: int,
                 decode: Callable[[Any], np.ndarray], clock: Callable[[], float] = time.monotonic,
                 positions: PositionSource | None = None,
                 annotate: bool | Callable[[], bool] = False):
        self.pipeline = pipeline
        self.cameras = tuple(cameras)
        self.positions = positions or PositionSource(self.cameras, enabled=False)
        self.annotate = annotate
        self.limits = query_params
        self.policy = SelectionPolicy(
            tolerance_ns=round(frame_params.stamp_tolerance * NS_PER_S),
            max_age_ns=round(frame_params.max_age * NS_PER_S))
        self.buffers = {c: FrameBuffer(buffer_size, frame_params.max_encoded)
                        for c in self.cameras}
        self._decode = decode
        self._clock = clock
        self.queue = InferenceQueue(query_params.max_pending, clock)
        self.latency = LatencyStats()
        self._counters = _Counters()
        self._counter_lock = threading.Lock()
        self._serving = False
        self._not_serving_reason = "the node is not active"

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start serving (lifecycle activate)."""
        self.queue.start()
        self._serving = True

    def pause(self, reason: str = "the node is not active") -> None:
        """Answer MODEL_NOT_READY from now on (lifecycle deactivate); running requests finish."""
        self._not_serving_reason = reason
        self._serving = False

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the worker and drop every frame and its features (lifecycle cleanup / shutdown)."""
        self.pause("the node is shutting down")
        stopped = self.queue.stop(timeout)
        for buffer in self.buffers.values():
            buffer.clear()
        self.positions.clear()
        return stopped

    @property
    def serving(self) -> bool:
        return self._serving

    # frames -------------------------------------------------------------------------------------
    def add_frame(self, camera: str, stamp_ns: int, payload: Any, frame_id: str = "") -> None:
        """Buffer a frame (from a camera callback): no decoding, no model, returns at once."""
        self.buffers[camera].add(stamp_ns, payload, frame_id)

    def add_depth(self, camera: str, stamp_ns: int, payload: Any, frame_id: str = "") -> None:
        """Buffer a depth image (from a camera callback): no decoding, returns at once."""
        self.positions.add_depth(camera, stamp_ns, payload, frame_id)

    def set_camera_info(self, camera: str, payload: Any) -> None:
        """Keep a camera's latest CameraInfo (from a camera callback)."""
        self.positions.set_camera_info(camera, payload)

    # requests -----------------------------------------------------------------------------------
    def handle(self, request: QueryRequest, now_ns: int,
               on_partial: Callable[[str], None] | None = None,
               is_cancelled: Callable[[], bool] | None = None) -> QueryOutcome:
        """Answer one request. Never raises; returns within the request's timeout (plus a poll
        period when streaming). `now_ns` is the node clock (sim time aware) used for the frame's
        age; `on_partial` gets the answer so far while it is generated; `is_cancelled` is
        polled."""
        started = self._clock()
        try:
            outcome = self._handle(request, int(now_ns), started, on_partial, is_cancelled)
        except Exception as exc:  # last line of defence: a request ends with a status
            logger.exception("unexpected error while handling a spatial query")
            outcome = outcome_for_exception(exc)
        outcome.latency_s = self._clock() - started
        if not outcome.camera:
            outcome.camera = request.camera.strip() or self.cameras[0]
        with self._counter_lock:
            self._counters.by_status[outcome.status] += 1
        if outcome.ok:
            self.latency.record(outcome.latency_s)
        return outcome

    def _handle(self, request: QueryRequest, now_ns: int, started: float,
                on_partial: Callable[[str], None] | None,
                is_cancelled: Callable[[], bool] | None) -> QueryOutcome:
        if not self._serving:
            return QueryOutcome(Status.MODEL_NOT_READY, self._not_serving_reason)
        try:
            valid = validate_request(request, self.cameras, self.limits)
            frame = self.buffers[valid.camera].select(request.stamp_ns, now_ns, self.policy)
        except (SpatialGeoError, ValueError) as exc:
            return outcome_for_exception(exc)
        deadline = started + valid.timeout_s
        try:
            ticket = self.queue.submit(
                lambda t: self._infer(t, frame, self.buffers[valid.camera], valid), deadline)
        except (QueueFull, QueueClosed) as exc:
            return _place(outcome_for_exception(exc), frame, valid.camera)

        last_partial = ""
        while True:
            remaining = deadline - self._clock()
            streaming = on_partial is not None or is_cancelled is not None
            if ticket.wait(min(remaining, self.POLL_S) if streaming else remaining):
                break
            if on_partial is not None:
                partial = ticket.partial()
                if partial != last_partial:
                    last_partial = partial
                    try:
                        on_partial(partial)
                    except Exception:  # a lost feedback message must not end the request
                        logger.warning("streaming a partial answer failed", exc_info=True)
            if is_cancelled is not None and is_cancelled():
                ticket.cancel("cancelled")
                return _place(QueryOutcome(Status.CANCELLED, "cancelled by the client"),
                              frame, valid.camera)
            if self._clock() >= deadline:
                ticket.cancel("timeout")
                state = "generation was running" if ticket.started else "it was still queued"
                return _place(QueryOutcome(
                    Status.TIMEOUT, f"no answer within {valid.timeout_s:.3g} s ({state})"),
                    frame, valid.camera)

        if ticket.error is not None:
            out = outcome_for_exception(ticket.error)
            if isinstance(ticket.error, InvalidImageError):   # the frame, not our code: one line
                logger.warning("camera %s: %s", valid.camera, out.message)
            elif out.status == Status.INFERENCE_ERROR:
                logger.error("inference failed: %s", out.message, exc_info=ticket.error)
        elif ticket.result is None:            # skipped: expired, cancelled or shut down first
            reason = ticket.cancel_reason or "timeout"
            out = stopped_outcome(reason, f"the request ended before it ran ({reason})")
        else:
            out = ticket.result
        return _place(out, frame, valid.camera)

    def _encode(self, frame: Frame, regions: tuple[Region, ...] = ()):
        rgb = self._decode(frame.payload)                # InvalidImageError for unusable frames
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InvalidImageError(f"decoded frame has shape {rgb.shape}, expected [H, W, 3]")
        frame.remember("size", (int(rgb.shape[1]), int(rgb.shape[0])))   # (W, H)
        h, w = rgb.shape[:2]
        if regions and all(_inside(r, w, h) for r in regions):
            # encode the image as the first question shows it (marks drawn): no plain encode
            # that this question would not use; later questions reuse or add encodings
            return self.pipeline.encode(rgb, list(regions))
        return self.pipeline.encode(rgb)

    def _infer(self, ticket: Ticket, frame: Frame, buffer: FrameBuffer,
               valid: ValidatedRequest) -> QueryOutcome:
        """Runs on the worker: encode (once per frame), check regions, answer, parse the value."""
        features = buffer.features(frame, lambda f: self._encode(f, tuple(valid.regions)))
        width, height = frame.get("size")
        for i, region in enumerate(valid.regions):
            try:
                region.validate(width, height)
            except InvalidRegionError as exc:
                raise InvalidRegionError(f"Region [{i}]: {exc}") from exc
        def stopped(what: str, **fields) -> QueryOutcome:
            # the same words as the waiting handler's, whichever side sees the deadline first
            reason = ticket.cancel_reason or "timeout"
            message = (f"no answer within {valid.timeout_s:.3g} s ({what})" if reason == "timeout"
                       else f"{what} ({reason})")
            return stopped_outcome(reason, message, **fields)

        if ticket.should_stop():
            return stopped("stopped after encoding the frame")
        answer = self.pipeline.answer(
            features, valid.question, list(valid.regions) or None, valid.options,
            on_text=ticket.set_partial, should_stop=ticket.should_stop)
        if answer.stopped == "cancelled":
            return stopped("generation stopped", answer=answer.text, num_tokens=answer.num_tokens)
        parsed = parse_answer_value(answer.text)
        value, unit = parsed if parsed is not None else (None, "")
        message = "answered" if answer.stopped != "max_new_tokens" else (
            f"answered; cut at max_new_tokens={valid.options.max_new_tokens}")
        positions = self.positions.compute(valid.camera, frame, valid.regions, (width, height))
        return QueryOutcome(Status.OK, message, answer=answer.text, value=value, unit=unit,
                            num_tokens=answer.num_tokens, positions=positions,
                            annotated=self._annotated(features, valid, answer.text, positions))

    def _annotated(self, features, valid: ValidatedRequest, answer: str,
                   positions: PositionsOutcome) -> np.ndarray | None:
        """The annotated image of an answer (when self.annotate), or None; never raises."""
        try:
            if not (self.annotate() if callable(self.annotate) else self.annotate):
                return None
            from spatialgeo_core.annotate import annotated_image

            lines = positions.positions if any(p.valid for p in positions.positions) else None
            return np.asarray(annotated_image(features.image, valid.regions, valid.question,
                                              answer, lines))
        except Exception:  # a picture for people must not fail the answer
            logger.warning("the annotated image could not be made", exc_info=True)
            return None

    # diagnostics --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._counter_lock:
            return {s.name: n for s, n in self._counters.by_status.items()}

    def diagnostics(self, model_state: ModelState, now_ns: int,
                    memory: dict[str, float] | None = None) -> DiagnosticReport:
        return build_diagnostics(self, model_state, now_ns, memory or {})


def build_diagnostics(service: QueryService | None, model_state: ModelState, now_ns: int,
                      memory: dict[str, float], detail: str = "") -> DiagnosticReport:
    """The node's diagnostic status: model state, queue depth, latency p50/p95, counts, memory."""
    values: list[tuple[str, str]] = [("model_state", model_state.value)]
    if detail:
        values.append(("detail", detail))
    if service is None:
        level = "ERROR" if model_state == ModelState.FAILED else "WARN"
        message = detail or f"model {model_state.value}"
        return DiagnosticReport(level, message, tuple(values))

    depth = service.queue.depth()
    p50, p95 = service.latency.percentile(50), service.latency.percentile(95)
    values += [
        ("serving", str(service.serving).lower()),
        ("queue_depth", str(depth)),
        ("queue_capacity", str(service.queue.capacity)),
        ("latency_p50_s", "n/a" if p50 is None else f"{p50:.3f}"),
        ("latency_p95_s", "n/a" if p95 is None else f"{p95:.3f}"),
    ]
    values += [(f"count_{name.lower()}", str(n)) for name, n in service.counts().items()]
    for camera, buffer in service.buffers.items():
        latest = buffer.latest()
        age = "n/a" if latest is None else f"{(now_ns - latest.stamp_ns) / NS_PER_S:.3f}"
        values += [(f"camera_{camera}_frames", str(len(buffer))),
                   (f"camera_{camera}_latest_age_s", age),
                   (f"camera_{camera}_encoded", str(buffer.encoded_count()))]
    values += [(key, f"{val:.1f}") for key, val in sorted(memory.items())]

    if model_state == ModelState.FAILED:
        level, message = "ERROR", detail or "model failed to load"
    elif model_state != ModelState.LOADED or not service.serving:
        level, message = "WARN", "not serving" if model_state == ModelState.LOADED else \
            f"model {model_state.value}"
    elif depth >= service.queue.capacity:
        level, message = "WARN", "request queue full"
    elif all(len(b) == 0 for b in service.buffers.values()):
        level, message = "WARN", "no camera frames received"
    else:
        level, message = "OK", "serving"
    return DiagnosticReport(level, message, tuple(values))


def _inside(region: Region, width: int, height: int) -> bool:
    try:
        region.validate(width, height)
    except InvalidRegionError:
        return False
    return True
