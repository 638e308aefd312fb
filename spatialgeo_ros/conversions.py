"""Pure conversions between ROS 2 messages and plain data. No rclpy.

Every function takes any object with the fields of the ROS message (rclpy messages, rosbags'
message classes, simple test objects), so all of it is tested without a ROS runtime.

Raw images are decoded by spatialgeo_core.image_msgs (re-exported here), which the offline bag
evaluation shares. CompressedImage is decoded by `decode_compressed`, the one place that picks
cv_bridge (where it is installed) or OpenCV; both are imported there, when a frame is decoded.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

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
from spatialgeo_core.optional import available, require
from spatialgeo_core.types import Region
from spatialgeo_ros.outcomes import QueryOutcome
from spatialgeo_ros.request_validation import QueryRequest

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
# CompressedImage


def check_compressed_decoding() -> str:
    """The library that decodes CompressedImage here: "cv_bridge" where it is installed, else
    "opencv". Raises MissingDependencyError naming the pip extra when neither is."""
    if available("cv_bridge"):
        return "cv_bridge"
    require("cv2")
    return "opencv"


@lru_cache(maxsize=1)
def _bridge():
    from cv_bridge import CvBridge

    return CvBridge()


def _one_line(exc: BaseException) -> str:
    """An OpenCV error's last line (its message; the lines before it name OpenCV's sources)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def decode_compressed(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage -> uint8 [H, W, 3] RGB.

    Decoded by cv_bridge's compressed_imgmsg_to_cv2(msg, "passthrough") where cv_bridge is
    installed, else by cv2.imdecode(data, IMREAD_ANYCOLOR), which is what that call runs: the
    two give the same pixels. Raises InvalidImageError, with a one-line message, for empty data,
    a compressed depth image or bytes that OpenCV cannot read as an image.
    """
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)        # [N] encoded bytes
    what = f"CompressedImage (format {msg.format!r}, {data.size} bytes)"
    if data.size == 0:
        raise InvalidImageError(f"{what} has no data")
    if "compresseddepth" in msg.format.lower().replace(" ", ""):
        raise InvalidImageError(f"{what} is a compressed depth image, not a colour image")
    decoder = check_compressed_decoding()
    cv2 = require("cv2")
    try:
        if decoder == "cv_bridge":
            from cv_bridge import CvBridgeError

            try:
                decoded = _bridge().compressed_imgmsg_to_cv2(msg, "passthrough")
            except CvBridgeError as exc:
                raise InvalidImageError(f"cv_bridge cannot decode the {what}: "
                                        f"{_one_line(exc)}") from exc
        else:
            decoded = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR)         # as cv_bridge does
    except cv2.error as exc:
        raise InvalidImageError(f"OpenCV cannot decode the {what}: {_one_line(exc)}") from exc
    if decoded is None:
        raise InvalidImageError(f"{what} is not an image that OpenCV can decode")
    return decoded_to_rgb(decoded)


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
