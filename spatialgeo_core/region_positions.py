"""Where each region of a question is in 3D: a robust statistic of the registered depth inside its
mask or box, back-projected through the camera's intrinsics. No ROS, no model.

For one region (a mask when it has one, else its box; pixel (u, v) is inside a box when
x1 <= u < x2 and y1 <= v < y2, as boxes are drawn), with a = the region's angular size (the larger
of its box's, or its mask's bounding box's, width / fx and height / fy):
1. valid pixels: finite depth > 0 inside the region;
2. reference depth z_ref. A mask is the object: z_ref is the median depth of its valid pixels.
   A box also holds background (its corners) and maybe other objects: z_ref is the densest depth
   of its core, the central window of CORE_FRACTION of its width and height (the object a box is
   drawn around covers its centre): of the windows [z, z + max(GATE_MIN_M, BOX_GATE * a * z)]
   over the core's valid depths z, the one holding most of them, and z_ref the median of those
   (the whole box's valid pixels when the core has none). The ground behind an object spreads
   over many depths; the object's surface does not;
3. inliers: the valid pixels with |z - z_ref| <= max(GATE_MIN_M, g * a * z_ref), g = BOX_GATE
   for a box and the wider MASK_GATE for a mask, whose gate only drops depth that bleeds across
   the silhouette from far behind it (at 1x the lateral size it cut the far part of objects
   much deeper than wide, seen end-on: 13 cm off on the synthetic world; at 2x none);
4. each inlier pixel is back-projected to the point z * (x, y, 1), (x, y) its undistorted
   normalised coordinates (intrinsics.py); `center_m` is the per-axis median of these points,
   `size_m` their extent along each axis between the EXTENT_PERCENTILES (2nd and 98th: a few
   flying pixels at an edge do not stretch it), `valid_pixels` how many there are.

What `center_m` measures: the middle of the region's *visible surface*, not the centre of the
object behind it. Along the optical axis it lies in front of the object's centre by up to half
the object's depth (a sphere of radius r: about 0.6 r in front), and `size_m[2]` is the depth
extent of the visible surface only. README ("Region positions") gives the errors measured on the
synthetic world against both.

The optical frame is the one of the camera's CameraInfo: x right, y down, z forward, metres.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spatialgeo_core.depth import InvalidDepthError
from spatialgeo_core.errors import InvalidRegionError
from spatialgeo_core.intrinsics import CameraIntrinsics
from spatialgeo_core.types import Region

CORE_FRACTION = 0.5          # a box's central window, as a fraction of its width and height
GATE_MIN_M = 0.10            # the narrowest depth gate and window, metres
MASK_GATE = 2.0              # inliers of a mask: within max(GATE_MIN_M, MASK_GATE * a * z_ref)
EXTENT_PERCENTILES = (2.0, 98.0)   # size_m: the inliers' spread between these, per axis
BOX_GATE = 0.5               # of a box, and the width of its densest-depth window, times a * z


@dataclass(frozen=True)
class RegionPosition:
    """The 3D position of one region, in metres in the camera's optical frame."""

    valid: bool
    center_m: tuple[float, float, float] | None    # None when not valid
    size_m: tuple[float, float, float] | None
    valid_pixels: int                               # inlier pixels the position rests on
    region_pixels: int                              # pixels of the mask or box
    reason: str = ""                                # why it is not valid

    def to_dict(self) -> dict:
        """The JSON form (`spatialgeo ask --json`'s regions_3d entries)."""
        out = {"valid": self.valid,
               "center_m": None if self.center_m is None else [round(v, 4) for v in
                                                               self.center_m],
               "size_m": None if self.size_m is None else [round(v, 4) for v in self.size_m],
               "valid_pixels": self.valid_pixels, "region_pixels": self.region_pixels}
        if self.reason:
            out["reason"] = self.reason
        return out

    def describe(self, index: int) -> str:
        """One line for people, e.g. 'Region [0]: x -0.31 y 0.42 z 3.05 m, ...'."""
        if not self.valid:
            return f"Region [{index}]: no position ({self.reason})"
        x, y, z = self.center_m
        sx, sy, sz = self.size_m
        return (f"Region [{index}]: x {x:+.2f} y {y:+.2f} z {z:.2f} m (camera optical frame), "
                f"extent {sx:.2f} x {sy:.2f} x {sz:.2f} m, {self.valid_pixels} of "
                f"{self.region_pixels} pixels")


def _box_bounds(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel index bounds [c0, c1) x [r0, r1) of the pixels u, v with x1 <= u < x2 and
    y1 <= v < y2 (at least one each way: a box is at least one pixel wide and high and lies in
    the image, types.Region.validate)."""
    x1, y1, x2, y2 = (float(v) for v in box)

    def span(lo: float, hi: float, n: int) -> tuple[int, int]:
        return max(0, math.ceil(lo)), min(n, math.ceil(hi))

    c0, c1 = span(x1, x2, width)
    r0, r1 = span(y1, y2, height)
    return c0, c1, r0, r1


def _core_window(x1: float, y1: float, x2: float, y2: float) -> tuple[float, ...]:
    margin = 0.5 * (1.0 - CORE_FRACTION)
    w, h = x2 - x1, y2 - y1
    return (x1 + margin * w, y1 + margin * h, x2 - margin * w, y2 - margin * h)


def _densest_depth(z: np.ndarray, rel_width: float) -> float:
    """The median of the most populated window [z_i, z_i + max(GATE_MIN_M, rel_width * z_i)]
    over the depths z [N] (N >= 1)."""
    zs = np.sort(z)                                                        # [N]
    ends = np.searchsorted(zs, zs + np.maximum(GATE_MIN_M, rel_width * zs), side="right")
    i = int(np.argmax(ends - np.arange(zs.size)))                         # first of the best
    return float(np.median(zs[i:ends[i]]))


def region_position(depth: np.ndarray, region: Region,
                    intrinsics: CameraIntrinsics) -> RegionPosition:
    """The position of one region (module docstring). `depth`: float [H, W] metres, NaN or <= 0
    where invalid, registered to the image the region was drawn on (the region is assumed to
    fit it: see `region_positions`)."""
    height, width = depth.shape
    if region.mask is not None:
        mask = np.asarray(region.mask, dtype=bool)
        vs, us = np.nonzero(mask)                                          # [N] each
        z = depth[vs, us].astype(np.float64)                               # [N]
        x1, y1, x2, y2 = us.min(), vs.min(), us.max() + 1, vs.max() + 1    # its bounding box
        core = None
    else:
        c0, c1, r0, r1 = _box_bounds(region.box, width, height)
        vv, uu = np.mgrid[r0:r1, c0:c1]                                    # [h, w] each
        vs, us = vv.reshape(-1), uu.reshape(-1)                            # [N] each
        z = depth[r0:r1, c0:c1].astype(np.float64).reshape(-1)             # [N]
        x1, y1, x2, y2 = (float(v) for v in region.box)
        cx1, cy1, cx2, cy2 = _core_window(x1, y1, x2, y2)
        core = (us >= cx1) & (us < cx2) & (vs >= cy1) & (vs < cy2)
    n = int(z.size)
    valid = np.isfinite(z) & (z > 0)
    if not valid.any():
        return RegionPosition(False, None, None, 0, n,
                              f"none of its {n} pixels has a valid depth (0, NaN or inf)")
    angle = max((x2 - x1) / intrinsics.fx, (y2 - y1) / intrinsics.fy)    # angular size, rad
    if region.mask is not None:
        z_ref = float(np.median(z[valid]))
        gate = max(GATE_MIN_M, MASK_GATE * angle * z_ref)
    else:
        core_valid = valid & core
        z_ref = _densest_depth(z[core_valid] if core_valid.any() else z[valid],
                               BOX_GATE * angle)
        gate = max(GATE_MIN_M, BOX_GATE * angle * z_ref)
    inliers = valid & (np.abs(np.where(valid, z, z_ref) - z_ref) <= gate)
    zi = z[inliers]
    x, y = intrinsics.pixel_rays(us[inliers], vs[inliers])
    points = np.stack([x * zi, y * zi, zi], axis=1)                        # [M, 3]
    center = np.median(points, axis=0)                                     # [3]
    lo, hi = np.percentile(points, EXTENT_PERCENTILES, axis=0)             # [3] each
    size = hi - lo                                                         # [3]
    return RegionPosition(True, tuple(float(v) for v in center), tuple(float(v) for v in size),
                          int(inliers.sum()), n)


def region_positions(depth: np.ndarray, regions: Sequence[Region],
                     intrinsics: CameraIntrinsics) -> list[RegionPosition]:
    """The position of every region, in order. Raises InvalidDepthError for a depth that is not
    a 2D array, InvalidIntrinsicsError when the intrinsics belong to another image size, and
    InvalidRegionError naming a region that does not fit the image."""
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise InvalidDepthError(f"depth must be float metres [H, W], got {depth.dtype} of shape "
                                f"{depth.shape}")
    height, width = depth.shape
    intrinsics.check_size(width, height, "the depth image")
    for i, region in enumerate(regions):
        try:
            region.validate(width, height)
        except InvalidRegionError as exc:
            raise InvalidRegionError(f"Region [{i}]: {exc}") from exc
    return [region_position(depth, region, intrinsics) for region in regions]


def invalid_regions(positions: Sequence[RegionPosition]) -> str:
    """'' when every position is valid, else one line naming the regions that have none."""
    return "; ".join(f"Region [{i}]: {p.reason}" for i, p in enumerate(positions) if not p.valid)
