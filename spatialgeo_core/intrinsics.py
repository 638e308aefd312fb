"""A camera's intrinsics and lens distortion: pixels -> rays in the camera's optical frame.

Conventions are ROS CameraInfo's and OpenCV's: the optical frame has x right, y down, z forward;
pixel (row v, column u) has its centre at image coordinates (u, v); K = [[fx, 0, cx], [0, fy, cy],
[0, 0, 1]]. A depth image holds z-depth, so the point of pixel (u, v) with depth z is
z * (x, y, 1), where (x, y) are the pixel's undistorted normalised coordinates.

Distortion: `d` holds the coefficients of `distortion_model` in CameraInfo's order.
- all coefficients zero (or none): a pinhole camera, whatever the model's name;
- "plumb_bob" (k1, k2, p1, p2, k3) and "rational_polynomial" (k1, k2, p1, p2, k3, k4, k5, k6):
  honoured. Pixels are undistorted by OpenCV's fixed-point iteration (the one of
  cv::undistortPoints), run to convergence (change < 1e-12) or MAX_ITERATIONS; `distort` is the
  forward model, and the two round-trip (test/core/test_region_positions.py checks both, and
  against OpenCV where it is installed);
- any other model with a nonzero coefficient ("equidistant" fisheye, thin-prism or tilted
  OpenCV models, unknown names) is refused with InvalidIntrinsicsError naming it.

`from_camera_info` reads a sensor_msgs/CameraInfo (any object with its fields: rclpy's, rosbags',
a test's), for the node and for the bag evaluation. Pure numpy; no ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spatialgeo_core.errors import SpatialGeoError

SUPPORTED_MODELS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8}
MAX_ITERATIONS = 100


class InvalidIntrinsicsError(SpatialGeoError, ValueError):
    """Intrinsics that cannot place pixels: a non-positive focal length, a size that does not
    match the image, or a distortion model that is not supported."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels, the image size they belong to (0 = not known, not checked)
    and the lens distortion (see the module docstring)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int = 0
    height: int = 0
    distortion_model: str = ""
    d: tuple[float, ...] = ()

    def __post_init__(self):
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidIntrinsicsError(f"{name} must be a finite number > 0, got {value}")
        for name in ("cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidIntrinsicsError(f"{name} must be finite, got {getattr(self, name)}")
        if self.width < 0 or self.height < 0:
            raise InvalidIntrinsicsError(
                f"width and height must be >= 0 (0 = not known), got {self.width}x{self.height}")
        if not all(math.isfinite(c) for c in self.d):
            raise InvalidIntrinsicsError(f"distortion coefficients must be finite, got {self.d}")
        if self.distorted:
            expected = SUPPORTED_MODELS.get(self.distortion_model)
            if expected is None:
                raise InvalidIntrinsicsError(
                    f"distortion model {self.distortion_model!r} with nonzero coefficients "
                    f"{list(self.d)} is not supported: use {' or '.join(SUPPORTED_MODELS)}, or "
                    f"rectified images (zero coefficients)")
            if any(c != 0.0 for c in self.d[expected:]):
                raise InvalidIntrinsicsError(
                    f"{self.distortion_model} has {expected} coefficients; {len(self.d)} given "
                    f"with nonzero ones beyond them ({list(self.d)})")

    @property
    def distorted(self) -> bool:
        """True when some distortion coefficient is nonzero."""
        return any(c != 0.0 for c in self.d)

    def _coefficients(self) -> tuple[float, ...]:
        """(k1, k2, p1, p2, k3, k4, k5, k6), zeros where the model has fewer."""
        return tuple(self.d[:8]) + (0.0,) * (8 - min(8, len(self.d)))

    def check_size(self, width: int, height: int, what: str = "the image") -> None:
        """InvalidIntrinsicsError when the intrinsics' size is known and is not width x height."""
        if self.width and self.height and (self.width, self.height) != (width, height):
            raise InvalidIntrinsicsError(
                f"the intrinsics are for a {self.width}x{self.height} image, {what} is "
                f"{width}x{height}")

    def distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised undistorted coordinates -> distorted ones (the lens model, forward)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if not self.distorted:
            return x, y
        k1, k2, p1, p2, k3, k4, k5, k6 = self._coefficients()
        r2 = x * x + y * y
        radial = (1 + ((k3 * r2 + k2) * r2 + k1) * r2) / (1 + ((k6 * r2 + k5) * r2 + k4) * r2)
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd

    def undistort(self, xd: np.ndarray, yd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised distorted coordinates -> undistorted ones (OpenCV's iteration)."""
        x0, y0 = np.asarray(xd, dtype=np.float64), np.asarray(yd, dtype=np.float64)
        if not self.distorted:
            return x0, y0
        k1, k2, p1, p2, k3, k4, k5, k6 = self._coefficients()
        x, y = x0.copy(), y0.copy()
        for _ in range(MAX_ITERATIONS):
            r2 = x * x + y * y
            icdist = (1 + ((k6 * r2 + k5) * r2 + k4) * r2) / (1 + ((k3 * r2 + k2) * r2 + k1) * r2)
            dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            nx, ny = (x0 - dx) * icdist, (y0 - dy) * icdist
            change = max(float(np.max(np.abs(nx - x), initial=0.0)),
                         float(np.max(np.abs(ny - y), initial=0.0)))
            x, y = nx, ny
            if change < 1e-12:
                break
        return x, y

    def pixel_rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates [N] -> normalised undistorted (x, y) [N] each: the point of pixel
        (u, v) at z-depth z is (x * z, y * z, z)."""
        xd = (np.asarray(u, dtype=np.float64) - self.cx) / self.fx
        yd = (np.asarray(v, dtype=np.float64) - self.cy) / self.fy
        return self.undistort(xd, yd)

    def project(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] optical-frame points (z > 0) -> [..., 2] pixel coordinates (u, v), through
        the lens model."""
        p = np.asarray(points, dtype=np.float64)
        xd, yd = self.distort(p[..., 0] / p[..., 2], p[..., 1] / p[..., 2])
        return np.stack([self.fx * xd + self.cx, self.fy * yd + self.cy], axis=-1)  # [..., 2]


def parse_intrinsics(text: str, width: int = 0, height: int = 0) -> CameraIntrinsics:
    """"fx,fy,cx,cy" (pixels) -> pinhole CameraIntrinsics; InvalidIntrinsicsError otherwise."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InvalidIntrinsicsError(f"intrinsics are fx,fy,cx,cy in pixels, got {text!r}")
    fx, fy, cx, cy = values
    return CameraIntrinsics(fx, fy, cx, cy, width, height)


def from_camera_info(msg, rectified: bool = False) -> CameraIntrinsics:
    """sensor_msgs/CameraInfo -> CameraIntrinsics: K and D for raw images (pixels are then
    undistorted), or with `rectified` P's fx, fy, cx, cy and no distortion (image_rect topics,
    as depth_image_proc reads them). InvalidIntrinsicsError when it cannot place pixels: an
    uncalibrated camera's zero K (or P), binning, a region of interest, an unsupported model."""
    width, height = int(msg.width), int(msg.height)
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1:
        raise InvalidIntrinsicsError(
            f"binning {msg.binning_x}x{msg.binning_y} is not supported: publish the binned "
            f"image's own calibration")
    roi = (int(msg.roi.x_offset), int(msg.roi.y_offset), int(msg.roi.width),
           int(msg.roi.height))
    if roi != (0, 0, 0, 0) and roi != (0, 0, width, height):
        raise InvalidIntrinsicsError(
            f"a region of interest ({roi[2]}x{roi[3]} at {roi[0]}, {roi[1]}) is not supported")
    if rectified:
        p = [float(v) for v in msg.p]
        if len(p) != 12 or not any(p):
            raise InvalidIntrinsicsError("P is zero: the camera is not calibrated "
                                         "(CameraInfo.p)")
        return CameraIntrinsics(p[0], p[5], p[2], p[6], width, height)
    k = [float(v) for v in msg.k]
    if len(k) != 9 or not any(k):
        raise InvalidIntrinsicsError("K is zero: the camera is not calibrated (CameraInfo.k)")
    return CameraIntrinsics(k[0], k[4], k[2], k[5], width, height, str(msg.distortion_model),
                            tuple(float(v) for v in msg.d))
