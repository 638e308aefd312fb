"""The node's request path in plain Python (threads, no rclpy): per-camera frame buffers, the
pipeline and the inference queue. `QueryService.handle(request)` always returns a QueryOutcome
within the request's timeout and never raises: validate (request_validation) -> select the frame
(spatialgeo_core.frames) -> queue (inference_queue) -> the core's one path from a frame to an
answer (spatialgeo_core.serving.answer_frame) -> the regions' 3D positions (position_source) and,
when asked for, the annotated image (spatialgeo_core.annotate) -> a status (outcomes).

The caller of `handle` blocks until the outcome (at most the timeout); the inference itself runs
on the queue's worker thread, so a caller that gives up (timeout, cancel) returns at once while
the worker stops the generation at the next token. A streaming caller (the action) looks at the
partial answer and its cancel flag every POLL_S; a plain call just waits.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialgeo_core.errors import InvalidImageError, SpatialGeoError
from spatialgeo_core.frames import NS_PER_S, Frame, FrameBuffer, SelectionPolicy
from spatialgeo_core.serving import answer_frame
from spatialgeo_ros.diagnostics import LatencyStats
from spatialgeo_ros.inference_queue import InferenceQueue, QueueClosed, QueueFull, Ticket
from spatialgeo_ros.outcomes import QueryOutcome, Status, outcome_for_exception, stopped_outcome
from spatialgeo_ros.params import FrameParams, QueryParams
from spatialgeo_ros.position_source import PositionSource, PositionsOutcome
from spatialgeo_ros.request_validation import QueryRequest, ValidatedRequest, validate_request

logger = logging.getLogger(__name__)


@dataclass
class _Counters:
    by_status: dict[Status, int] = field(default_factory=lambda: {s: 0 for s in Status})


class QueryService:
    """Frame buffers, the pipeline and the queue; `handle` turns one request into one outcome.

    pipeline: spatialgeo_core.pipeline.SpatialGeoPipeline (or a test double with its `frame`,
    `answer` and `cached_frames`): a request is answered by spatialgeo_core.serving.answer_frame,
    the frame named by its buffered Frame in the pipeline's feature cache.
    decode: payload stored in the buffer -> uint8 [H, W, 3] RGB (run lazily, on the worker, once
    per frame while the pipeline keeps its features).
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
        self.buffers = {c: FrameBuffer(buffer_size) for c in self.cameras}
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
                ticket = self.queue.submit(lambda t: self._infer(t, frame, valid), deadline)
        except (QueueFull, QueueClosed) as exc:
            return outcome_for_exception(exc).at(frame, valid.camera)

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
                return QueryOutcome(Status.CANCELLED, "cancelled by the client").at(
                    frame, valid.camera)
            if self._clock() >= deadline:
                ticket.cancel("timeout")
                state = "generation was running" if ticket.started else "it was still queued"
                return QueryOutcome(
                    Status.TIMEOUT, f"no answer within {valid.timeout_s:.3g} s ({state})").at(
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
        return out.at(frame, valid.camera)

    def _infer(self, ticket: Ticket, frame: Frame, valid: ValidatedRequest) -> QueryOutcome:
        """Runs on the worker: the core's one path from a frame to an answer (the frame decoded
        and encoded once while the pipeline keeps it), then the regions' positions."""
        def stopped(what: str, **fields) -> QueryOutcome:
            # the same words as the waiting handler's, whichever side sees the deadline first
            reason = ticket.cancel_reason or "timeout"
            message = (f"no answer within {valid.timeout_s:.3g} s ({what})" if reason == "timeout"
                       else f"{what} ({reason})")
            return stopped_outcome(reason, message, **fields)

        result = answer_frame(self.pipeline, frame, lambda: self._decode(frame.payload),
                              valid.question, valid.regions, valid.options,
                              on_text=ticket.set_partial, should_stop=ticket.should_stop)
        answer = result.answer
        if answer.stopped == "cancelled":
            what = "generation stopped" if answer.num_tokens else "stopped before generating"
            return stopped(what, answer=answer.text, num_tokens=answer.num_tokens)
        message = "answered" if answer.stopped != "max_new_tokens" else (
            f"answered; cut at max_new_tokens={valid.options.max_new_tokens}")
        positions = self.positions.compute(valid.camera, frame, valid.regions, result.frame.size)
        return QueryOutcome(Status.OK, message, answer=answer.text, value=result.value,
                            unit=result.unit, num_tokens=answer.num_tokens, positions=positions,
                            annotated=self._annotated(result.frame, valid, answer.text,
                                                      positions))

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
