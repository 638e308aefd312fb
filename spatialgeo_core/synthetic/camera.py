"""The pinhole camera of the synthetic world, and the two frames it links.

World frame (metres): z up, the ground is the plane z = 0, the origin is the ground point straight
below the camera, +y is the camera's heading projected on the ground ("straight ahead") and +x is
to its right. The camera has no yaw and no roll, only a downward pitch, so the world x axis is the
camera x axis and "left/right", "width" and clock directions need no further convention.

Camera frame (metres): OpenCV / ROS optical frame: x right, y down, z forward along the optical
axis. Pixel (row v, column u) has its centre at image coordinates (u, v), as OpenCV and ROS
CameraInfo count them, so a centred principal point is ((W - 1) / 2, (H - 1) / 2). The ray of a
pixel is d = ((u - cx) / fx, (v - cy) / fy, 1) in the camera frame: a point t * d on it has
z-depth t, so a depth map times these rays is the point map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, 0, height_m) in the world, pitched down by pitch_deg."""

    width: int                 # image width in pixels
    height: int                # image height in pixels
    fx: float                  # focal lengths in pixels
    fy: float
    cx: float                  # principal point in pixels (pixel centres are integers)
    cy: float
    height_m: float            # height of the optical centre above the ground, metres
    pitch_deg: float           # downward tilt of the optical axis from the horizontal, degrees

    def __post_init__(self):
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("fx", "fy"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.height_m > 0:
            raise ValueError(f"height_m must be > 0 (the camera is above the ground), "
                             f"got {self.height_m}")
        if not -89.0 < self.pitch_deg < 89.0:
            raise ValueError(f"pitch_deg must be in (-89, 89), got {self.pitch_deg}")

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float, height_m: float,
                 pitch_deg: float) -> Camera:
        """Square pixels, a centred principal point and the given horizontal field of view."""
        if not 1.0 < hfov_deg < 179.0:
            raise ValueError(f"hfov_deg must be in (1, 179), got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0,
                   float(height_m), float(pitch_deg))

    @property
    def K(self) -> np.ndarray:
        """[3, 3] intrinsic matrix (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def position(self) -> np.ndarray:
        """[3] optical centre in the world."""
        return np.array([0.0, 0.0, self.height_m])

    @cached_property
    def rotation(self) -> np.ndarray:
        """[3, 3] camera-to-world rotation; its columns are the camera axes in the world."""
        p = math.radians(self.pitch_deg)
        x_axis = [1.0, 0.0, 0.0]
        y_axis = [0.0, -math.sin(p), -math.cos(p)]          # down in the image
        z_axis = [0.0, math.cos(p), -math.sin(p)]           # forward, tilted down
        return np.array([x_axis, y_axis, z_axis]).T

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] world points -> [..., 3] camera-frame points."""
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] camera-frame points -> [..., 3] world points."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.position

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """[..., 3] camera-frame points (z > 0) -> [..., 2] pixel coordinates (u, v)."""
        p = np.asarray(points_cam, dtype=np.float64)
        u = self.fx * p[..., 0] / p[..., 2] + self.cx
        v = self.fy * p[..., 1] / p[..., 2] + self.cy
        return np.stack([u, v], axis=-1)                                      # [..., 2]

    @cached_property
    def rays(self) -> np.ndarray:
        """[H, W, 3] camera-frame ray of every pixel, with z = 1 (float64, read-only)."""
        u = (np.arange(self.width) - self.cx) / self.fx                      # [W]
        v = (np.arange(self.height) - self.cy) / self.fy                     # [H]
        out = np.empty((self.height, self.width, 3))
        out[..., 0] = u[None, :]
        out[..., 1] = v[:, None]
        out[..., 2] = 1.0
        out.flags.writeable = False
        return out

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """[H, W] z-depth -> [H, W, 3] camera-frame point map (inf where depth is not finite)."""
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth of shape {depth.shape} does not match the camera "
                             f"({self.height}, {self.width})")
        finite = np.isfinite(depth)
        points = np.where(finite[..., None], self.rays * np.where(finite, depth, 0.0)[..., None],
                          np.inf)                                              # [H, W, 3]
        return points

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy,
                "cx": self.cx, "cy": self.cy, "height_m": self.height_m,
                "pitch_deg": self.pitch_deg}
