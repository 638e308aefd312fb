"""Pure conversions for region positions and what the model saw. No rclpy.

Like conversions.py, every function takes any object with the fields of the ROS message (rclpy
messages, rosbags' message classes, test objects); where new messages are made (positions,
markers), the caller passes a factory of the message type (`make_position`, `make_marker`).

- `fill_positions`: PositionsOutcome -> a response's `positions` and `positions_status`.
- `fill_rgb_image`: uint8 [H, W, 3] RGB -> sensor_msgs/Image rgb8 (the annotated image).
- `fill_markers`: an answered outcome -> visualization_msgs/MarkerArray: a box per region at its
  position, in its set-of-marks colour, labelled with its index, and the answer as text.
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

from spatialgeo_ros.conversions import set_stamp
from spatialgeo_ros.outcomes import QueryOutcome

# visualization_msgs/Marker constants (a test keeps them equal to the message's)
CUBE, TEXT_VIEW_FACING = 1, 9
ADD, DELETEALL = 0, 3
MARKER_NS = "spatialgeo"
MIN_SCALE_M = 0.02            # smallest side of a region's box marker
REGION_ALPHA = 0.5
ANSWER_WRAP = 48              # characters per line of the answer marker


def fill_positions(target, outcome: QueryOutcome, make_position: Callable[[], Any]) -> None:
    """Write an outcome's region positions into a SpatialQuery response, a SpatialQueryStream
    result or a SpatialAnswer (`positions`, `positions_status`), each stamped with the frame
    answered about."""
    result = outcome.positions
    target.positions_status.code = int(result.code)
    target.positions_status.message = result.message
    out = []
    for position in result.positions:
        msg = make_position()
        msg.valid = position.valid
        set_stamp(msg.header.stamp, outcome.stamp_ns)
        msg.header.frame_id = outcome.frame_id
        if position.valid:
            msg.center.x, msg.center.y, msg.center.z = (float(v) for v in position.center_m)
            msg.size.x, msg.size.y, msg.size.z = (float(v) for v in position.size_m)
        msg.valid_pixels = int(position.valid_pixels)
        msg.region_pixels = int(position.region_pixels)
        out.append(msg)
    target.positions = out


def fill_rgb_image(msg, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> None:
    """uint8 [H, W, 3] RGB -> a sensor_msgs/Image (rgb8, rows unpadded, little-endian)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB array, got shape {rgb.shape}")
    set_stamp(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = rgb.tobytes()


def _marker(make_marker, outcome: QueryOutcome, ns: str, marker_id: int, kind: int,
            xyz: tuple[float, float, float], scale: tuple[float, float, float],
            rgba: tuple[float, float, float, float], text: str = ""):
    m = make_marker()
    set_stamp(m.header.stamp, outcome.stamp_ns)
    m.header.frame_id = outcome.frame_id
    m.ns, m.id, m.type, m.action = ns, marker_id, kind, ADD
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in xyz)
    m.pose.orientation.x = m.pose.orientation.y = m.pose.orientation.z = 0.0
    m.pose.orientation.w = 1.0
    m.scale.x, m.scale.y, m.scale.z = (float(v) for v in scale)
    m.color.r, m.color.g, m.color.b, m.color.a = (float(v) for v in rgba)
    m.text = text
    return m


def fill_markers(array, make_marker: Callable[[], Any], outcome: QueryOutcome) -> None:
    """visualization_msgs/MarkerArray of an answered outcome, in the frame answered about: first
    a DELETEALL (the previous answer's markers go), then per region with a position a CUBE at
    its centre with its extent (at least MIN_SCALE_M) in its set-of-marks colour and a text
    "[i]" above it, and the answer as text above the regions (1 m ahead of the camera when no
    region has a position)."""
    from spatialgeo_core.regions import PALETTE  # (regions.py imports the processor: torch)

    clear = make_marker()
    set_stamp(clear.header.stamp, outcome.stamp_ns)
    clear.header.frame_id = outcome.frame_id
    clear.ns, clear.action = MARKER_NS, DELETEALL
    markers = [clear]
    tops = []
    for i, p in enumerate(outcome.positions.positions):
        if not p.valid:
            continue
        r, g, b = (c / 255.0 for c in PALETTE[i % len(PALETTE)])
        (x, y, z), size = p.center_m, tuple(max(MIN_SCALE_M, s) for s in p.size_m)
        text_h = max(0.05, 0.04 * z)
        markers.append(_marker(make_marker, outcome, f"{MARKER_NS}/regions", i, CUBE,
                               (x, y, z), size, (r, g, b, REGION_ALPHA)))
        top = y - size[1] / 2 - text_h          # optical frame: y points down
        markers.append(_marker(make_marker, outcome, f"{MARKER_NS}/labels", i,
                               TEXT_VIEW_FACING, (x, top, z), (text_h, text_h, text_h),
                               (r, g, b, 1.0), f"[{i}]"))
        tops.append((x, top, z, text_h))
    if tops:
        text_h = max(t[3] for t in tops)
        where = (float(np.mean([t[0] for t in tops])), min(t[1] for t in tops) - 2 * text_h,
                 float(np.mean([t[2] for t in tops])))
    else:
        text_h, where = 0.05, (0.0, -0.3, 1.0)
    text = "\n".join(textwrap.wrap(outcome.answer, ANSWER_WRAP)) or outcome.answer
    markers.append(_marker(make_marker, outcome, f"{MARKER_NS}/answer", 0, TEXT_VIEW_FACING,
                           where, (text_h, text_h, text_h), (1.0, 1.0, 1.0, 1.0), text))
    array.markers = markers
