"""A SpatialQuery request as plain data, and the checks that need no image: question, camera,
number of regions, generation limits and timeout, against the node's query.* parameters. A
region's fit inside the image is checked where it is drawn, against the frame asked about
(spatialgeo_core.serving). No rclpy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from spatialgeo_core.errors import InvalidRequestError
from spatialgeo_core.types import GenerationOptions, Question, Region, check_question
from spatialgeo_ros.params import QueryParams


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


@dataclass(frozen=True)
class ValidatedRequest:
    question: Question                # checked: the core does not check it again
    camera: str
    regions: tuple[Region, ...]
    options: GenerationOptions
    timeout_s: float


def validate_request(request: QueryRequest, cameras: Sequence[str],
                     limits: QueryParams) -> ValidatedRequest:
    """Check everything that does not need the image; raise InvalidRequestError with a message that
    names the limit."""
    n = len(request.regions)
    question = check_question(request.question, n, limits.max_question_chars,
                              "query.max_question_chars")
    camera = request.camera.strip() or cameras[0]
    if camera not in cameras:
        raise InvalidRequestError(
            f"unknown camera {camera!r}; this node serves: {', '.join(cameras)}")
    if n > limits.max_regions:
        raise InvalidRequestError(
            f"{n} regions given; the limit is {limits.max_regions} (query.max_regions)")
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
