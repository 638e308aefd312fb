"""Pure conversions between ROS 2 messages and plain data. No rclpy, no cv_bridge, no OpenCV.

Every function takes any object with the fields of the ROS message (rclpy messages, rosbags'
message classes, simple test objects), so all of it is tested without a ROS runtime.

Images are decoded by spatialgeo_core.image_msgs (re-exported here), which the offline bag
evaluation shares.
"""
from __future__ import annotations

import math

from spatialgeo_core.errors import InvalidImageError, InvalidRegionError
from spatialgeo_core.image_msgs import (  # noqa: F401  (re-exported for the node)
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ENCODINGS,
    MASK_ENCODINGS,
    NS_PER_S,
    EncodingInfo,
    array_to_rgb,
    compressed_to_rgb,
    decoded_to_rgb,
    depth_to_meters,
    image_to_array,
    image_to_rgb,
    stamp_to_ns,
)
from spatialgeo_core.types import Region
from spatialgeo_ros.service_logic import QueryOutcome, QueryRequest

# -------------------------------------------------------------------------------------------------
# Stamps and durations


def set_stamp(stamp, ns: int) -> None:
    """Write integer nanoseconds (>= 0) into a builtin_interfaces/Time."""
    stamp.sec, stamp.nanosec = divmod(max(0, int(ns)), NS_PER_S)


def set_duration(duration, seconds: float) -> None:
    """Write seconds (>= 0) into a builtin_interfaces/Duration."""
    ns = max(0, round(seconds * NS_PER_S))
    duration.sec, duration.nanosec = divmod(ns, NS_PER_S)


# -------------------------------------------------------------------------------------------------
# Requests and results


def region_from_msg(msg, index: int = 0) -> Region:
    """spatialgeo_ros/Region -> core Region. Mask: mono8/8UC1, nonzero = inside; width 0 = none.

    Raises InvalidRegionError for a region with neither box nor mask, or an unusable mask. Whether
    the region lies inside the image is checked later, against the frame it is asked about.
    """
    box = None
    if msg.has_box:
        box = (float(msg.x_min), float(msg.y_min), float(msg.x_max), float(msg.y_max))
        if not all(math.isfinite(v) for v in box):
            raise InvalidRegionError(f"Region [{index}]: box {box} is not finite")
    mask = None
    if int(msg.mask.width) > 0 or int(msg.mask.height) > 0:
        if msg.mask.encoding not in MASK_ENCODINGS:
            raise InvalidRegionError(
                f"Region [{index}]: mask encoding must be {' or '.join(MASK_ENCODINGS)}, "
                f"got {msg.mask.encoding!r}")
        try:
            mask = image_to_array(msg.mask) != 0        # [H, W] bool
        except InvalidImageError as exc:
            raise InvalidRegionError(f"Region [{index}]: bad mask: {exc}") from exc
    if box is None and mask is None:
        raise InvalidRegionError(
            f"Region [{index}] has neither a box (has_box is false) nor a mask (mask.width is 0)")
    return Region(box=box, mask=mask)


def request_from_msg(msg) -> QueryRequest:
    """SpatialQuery request or SpatialQueryStream goal -> QueryRequest (plain data)."""
    return QueryRequest(
        question=str(msg.question),
        stamp_ns=stamp_to_ns(msg.stamp),
        camera=str(msg.camera),
        regions=tuple(region_from_msg(r, i) for i, r in enumerate(msg.regions)),
        max_new_tokens=int(msg.limits.max_new_tokens),
        temperature=float(msg.limits.temperature),
        timeout_s=float(msg.limits.timeout_s),
    )


def fill_result(target, outcome: QueryOutcome) -> None:
    """Write an outcome into a SpatialQuery response, a SpatialQueryStream result or a
    SpatialAnswer (the fields they share: status, answer, has_value, value, unit, header,
    latency)."""
    target.status.code = int(outcome.status)
    target.status.message = outcome.message
    target.answer = outcome.answer
    target.has_value = outcome.value is not None
    target.value = float(outcome.value) if outcome.value is not None else 0.0
    target.unit = outcome.unit
    set_stamp(target.header.stamp, outcome.stamp_ns)
    target.header.frame_id = outcome.frame_id
    set_duration(target.latency, outcome.latency_s)
