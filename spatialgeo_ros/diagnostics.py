"""The node's diagnostics as plain data: the model's state, latency statistics and the
diagnostic_msgs/DiagnosticStatus the node publishes on /diagnostics (queue depth, latency p50/p95,
counts by status, frames per camera, cached frames, GPU memory). No rclpy.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from enum import Enum

from spatialgeo_core.frames import NS_PER_S


class ModelState(str, Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


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


@dataclass(frozen=True)
class DiagnosticReport:
    """One diagnostic_msgs/DiagnosticStatus as plain data; level is "OK", "WARN" or "ERROR"."""

    level: str
    message: str
    values: tuple[tuple[str, str], ...]


def build_diagnostics(service, model_state: ModelState, now_ns: int,
                      memory: dict[str, float], detail: str = "") -> DiagnosticReport:
    """The node's diagnostic status: model state, queue depth, latency p50/p95, counts, memory.
    `service` is the node's QueryService, None while it has none."""
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
    values.append(("cached_frames", str(service.pipeline.cached_frames())))
    for camera, buffer in service.buffers.items():
        latest = buffer.latest()
        age = "n/a" if latest is None else f"{(now_ns - latest.stamp_ns) / NS_PER_S:.3f}"
        values += [(f"camera_{camera}_frames", str(len(buffer))),
                   (f"camera_{camera}_latest_age_s", age)]
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
