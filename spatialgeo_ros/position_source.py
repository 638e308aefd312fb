"""Region positions in the node, in plain Python (no rclpy): the depth images and CameraInfo of
each camera, and the positions of a request's regions with a status.

- `PositionCode`: the constants of msg/PositionStatus.msg (a test keeps them equal).
- `PositionSource`: per camera a stamp-indexed FrameBuffer of depth images beside the colour
  frames' buffer, and the camera's latest CameraInfo. `compute(camera, frame, regions)` matches
  the colour frame answered about to its depth image by stamp (the nearest within
  frames.depth_tolerance), decodes both lazily (the camera callbacks only store messages), and
  returns the regions' positions (spatialgeo_core.region_positions) with a code and a message.
  It never raises: every bad depth input is a status.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from spatialgeo_core.depth import InvalidDepthError, check_depth
from spatialgeo_core.errors import InvalidImageError
from spatialgeo_core.frames import (
    Frame,
    FrameBuffer,
    FrameSelectionError,
    SelectionPolicy,
    seconds,
)
from spatialgeo_core.intrinsics import CameraIntrinsics, InvalidIntrinsicsError
from spatialgeo_core.region_positions import RegionPosition, invalid_regions, region_positions
from spatialgeo_core.types import Region

logger = logging.getLogger(__name__)


class PositionCode(IntEnum):
    """Mirrors the constants of msg/PositionStatus.msg."""

    NOT_COMPUTED = 0
    OK = 1
    NO_DEPTH = 2
    NO_DEPTH_FRAME = 3
    NO_CAMERA_INFO = 4
    INVALID_DEPTH = 5
    INVALID_CAMERA_INFO = 6
    NO_VALID_DEPTH = 7


@dataclass(frozen=True)
class PositionsOutcome:
    """The positions of a request's regions (one per region, in order, when the request was
    answered) and why some or all are missing."""

    code: PositionCode
    message: str
    positions: tuple[RegionPosition, ...] = ()


NOT_COMPUTED = PositionsOutcome(PositionCode.NOT_COMPUTED,
                                "no positions: the query was not answered")


def _without(code: PositionCode, message: str, n: int) -> PositionsOutcome:
    """No position for any of n regions (each entry says why)."""
    missing = RegionPosition(False, None, None, 0, 0, message)
    return PositionsOutcome(code, message, (missing,) * n)


class PositionSource:
    """Depth images and CameraInfo per camera; positions of regions (module docstring).

    decode_depth: a stored depth payload -> float32 [H, W] metres, NaN where invalid (raises
    InvalidImageError or InvalidDepthError). decode_info: a stored CameraInfo payload ->
    CameraIntrinsics (raises InvalidIntrinsicsError). `depth_topic(camera)` names the topic in
    messages.
    """

    def __init__(self, cameras: Sequence[str], enabled: bool, buffer_size: int = 1,
                 tolerance_ns: int = 0, decode_depth: Callable[[Any], Any] | None = None,
                 decode_info: Callable[[Any], CameraIntrinsics] | None = None,
                 depth_topic: Callable[[str], str] = lambda camera: "depth"):
        if enabled and (decode_depth is None or decode_info is None):
            raise ValueError("a PositionSource with depth needs decode_depth and decode_info")
        self.enabled = enabled
        self.buffers = {c: FrameBuffer(buffer_size) for c in cameras} if enabled else {}
        self.policy = SelectionPolicy(tolerance_ns=tolerance_ns, max_age_ns=0)
        self._decode_depth = decode_depth
        self._decode_info = decode_info
        self._depth_topic = depth_topic
        self._infos: dict[str, Any] = {}
        self._lock = threading.Lock()

    # camera callbacks: store and return -----------------------------------------------------
    def add_depth(self, camera: str, stamp_ns: int, payload: Any, frame_id: str = "") -> None:
        buffer = self.buffers.get(camera)
        if buffer is not None:
            buffer.add(stamp_ns, payload, frame_id)

    def set_camera_info(self, camera: str, payload: Any) -> None:
        with self._lock:
            self._infos[camera] = payload

    def camera_info(self, camera: str) -> Any:
        with self._lock:
            return self._infos.get(camera)

    def clear(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        with self._lock:
            self._infos.clear()

    # on the inference worker ------------------------------------------------------------------
    def compute(self, camera: str, frame: Frame, regions: Sequence[Region],
                size: tuple[int, int]) -> PositionsOutcome:
        """The positions of `regions` on colour `frame` (of size (W, H)); never raises."""
        try:
            return self._compute(camera, frame, list(regions), size)
        except Exception as exc:  # a status, never an escaped exception
            logger.exception("region positions failed")
            return _without(PositionCode.INVALID_DEPTH,
                            f"region positions failed: {type(exc).__name__}: {exc}",
                            len(regions))

    def _compute(self, camera: str, frame: Frame, regions: list[Region],
                 size: tuple[int, int]) -> PositionsOutcome:
        n = len(regions)
        if not self.enabled:
            return _without(PositionCode.NO_DEPTH,
                            "no depth input: set cameras.depth to true and publish a depth "
                            "image registered to the colour image (16UC1 or 32FC1)", n)
        topic = self._depth_topic(camera)
        try:
            depth_frame = self.buffers[camera].select(frame.stamp_ns, frame.stamp_ns,
                                                      self.policy)
        except FrameSelectionError as exc:
            return _without(PositionCode.NO_DEPTH_FRAME,
                            f"no depth image on {topic} within "
                            f"{self.policy.tolerance_ns / 1e9:.3f} s of the frame's stamp "
                            f"{seconds(frame.stamp_ns)} (frames.depth_tolerance): {exc}", n)
        info = self.camera_info(camera)
        if info is None:
            return _without(PositionCode.NO_CAMERA_INFO,
                            f"no CameraInfo has been received from camera {camera!r}", n)
        width, height = size
        if depth_frame.frame_id and frame.frame_id and depth_frame.frame_id != frame.frame_id:
            return _without(PositionCode.INVALID_DEPTH,
                            f"the depth image's frame_id {depth_frame.frame_id!r} is not the "
                            f"colour image's {frame.frame_id!r}: the depth must be registered "
                            f"to the colour image (e.g. aligned_depth_to_color)", n)
        try:
            depth = self._decode_depth(depth_frame.payload)             # [H, W] metres
            check_depth(depth, width, height)
        except (InvalidImageError, InvalidDepthError) as exc:
            return _without(PositionCode.INVALID_DEPTH,
                            f"the depth image on {topic} cannot be used: {exc}", n)
        try:
            intrinsics = self._decode_info(info)
            intrinsics.check_size(width, height, "the colour frame")
        except InvalidIntrinsicsError as exc:
            return _without(PositionCode.INVALID_CAMERA_INFO,
                            f"the CameraInfo of camera {camera!r} cannot be used: {exc}", n)
        positions = tuple(region_positions(depth, regions, intrinsics))
        bad = invalid_regions(positions)
        if bad:
            return PositionsOutcome(PositionCode.NO_VALID_DEPTH, bad, positions)
        return PositionsOutcome(
            PositionCode.OK, f"{n} region position(s) from the depth image at "
                             f"{seconds(depth_frame.stamp_ns)}", positions)
