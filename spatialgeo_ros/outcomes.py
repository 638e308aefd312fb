"""What a request ends with: the status constants of msg/QueryStatus.msg, QueryOutcome (which
conversions.fill_result writes into a response) and the status of every exception. No rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from spatialgeo_core.errors import (
    CheckpointError,
    InvalidImageError,
    InvalidRegionError,
    InvalidRequestError,
    MissingDependencyError,
    SpatialGeoError,
)
from spatialgeo_core.frames import Frame, NoFrameError, StaleFrameError
from spatialgeo_ros.inference_queue import QueueClosed, QueueFull
from spatialgeo_ros.position_source import NOT_COMPUTED, PositionsOutcome


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

    def at(self, frame: Frame, camera: str) -> QueryOutcome:
        """This outcome, naming the frame (and camera) the request was about."""
        self.stamp_ns, self.frame_id, self.camera = frame.stamp_ns, frame.frame_id, camera
        return self


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
