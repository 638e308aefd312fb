"""Depth images of the synthetic world as a depth camera publishes them, and the 3D ground truth
of each object region to score region positions against.

The renderer's depth is exact z-depth in metres (inf for the sky), registered to the colour image
by construction (the same camera, the same pixels). As a ROS depth image (REP 118):
- "16UC1": millimetres, rounded; 0 = no measurement (the sky, and anything beyond 65.535 m);
- "32FC1": metres, float32; +inf = beyond range (the sky).

Ground truth per region (`region_truth`), in the camera's optical frame, metres:
- `object_center_m`: the centre of the object's 3D bounding box (render.ObjectInfo.center_camera);
- `visible_median_m`: the per-axis median of the exact points of the object's visible pixels,
  which is what spatialgeo_core.region_positions measures (the middle of the visible surface);
  along the optical axis it lies in front of `object_center_m`.
"""
from __future__ import annotations

import numpy as np

from spatialgeo_core.synthetic.render import Rendering

DEPTH_ENCODINGS = ("16UC1", "32FC1")
MAX_MM = 65535


def depth_array(rendering: Rendering, encoding: str) -> np.ndarray:
    """The rendering's depth as the [H, W] array of a 16UC1 (uint16 mm) or 32FC1 (float32 m)
    image."""
    depth = rendering.depth.astype(np.float64)                             # [H, W] metres
    if encoding == "16UC1":
        mm = np.where(np.isfinite(depth), np.rint(depth * 1000.0), 0.0)
        return np.where(mm <= MAX_MM, mm, 0.0).astype(np.uint16)           # [H, W]
    if encoding == "32FC1":
        return np.where(np.isfinite(depth), depth, np.inf).astype(np.float32)
    raise ValueError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}")


def region_truth(rendering: Rendering, obj: int) -> dict:
    """{"object_center_m", "visible_median_m"} of object `obj` (module docstring)."""
    points = rendering.points[rendering.mask(obj)].astype(np.float64)     # [N, 3]
    if points.size == 0:
        raise ValueError(f"object {obj} is not visible: it has no visible points")
    info = rendering.objects[obj]
    return {"object_center_m": [round(float(v), 5) for v in info.center_camera],
            "visible_median_m": [round(float(v), 5) for v in np.median(points, axis=0)]}
