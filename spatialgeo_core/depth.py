"""Depth images as float32 metres: from arrays, files and (via image_msgs.depth_to_meters) ROS
messages. Invalid pixels (no measurement) are NaN. No ROS.

A depth image here is *z-depth registered to the colour image*: pixel (u, v) of the depth holds
the distance along the optical axis of the surface seen at pixel (u, v) of the colour frame, so
it has the colour frame's size (`check_depth`).

Files (`spatialgeo ask --depth FILE`): a single-channel 16-bit PNG or TIFF (ROS 16UC1 convention:
millimetres, 0 = no data), a 32-bit float TIFF, or a .npy array (integer or float). `scale` is
metres per stored unit; by default 0.001 for integer data (millimetres) and 1.0 for float data
(metres).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from spatialgeo_core.errors import SpatialGeoError

MM_SCALE = 0.001                         # metres per unit of integer depth (millimetres)


class InvalidDepthError(SpatialGeoError, ValueError):
    """A depth image that cannot be used: wrong encoding or dtype, or not the colour image's
    size (it must be registered to it)."""


def default_scale(dtype: np.dtype) -> float:
    """Metres per stored unit when none is given: millimetres for integers, metres for floats."""
    return MM_SCALE if np.issubdtype(dtype, np.integer) else 1.0


def depth_from_array(arr: np.ndarray, scale: float | None = None) -> np.ndarray:
    """[H, W] integer or float depth -> float32 [H, W] metres; NaN where there is no measurement
    (0 for integers; non-finite or <= 0 for floats)."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidDepthError(f"a depth image is one channel [H, W], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidDepthError(f"depth must be integer or float data, got {arr.dtype}")
    scale = default_scale(arr.dtype) if scale is None else float(scale)
    if not (np.isfinite(scale) and scale > 0):
        raise InvalidDepthError(f"the depth scale (metres per unit) must be > 0, got {scale}")
    out = arr.astype(np.float32) * np.float32(scale)
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def load_depth_file(path: str | Path, scale: float | None = None) -> np.ndarray:
    """A depth file (module docstring) -> float32 [H, W] metres, NaN where invalid."""
    path = Path(path)
    if not path.is_file():
        raise InvalidDepthError(f"depth file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidDepthError(f"cannot read depth array {path}: {exc}") from exc
        return depth_from_array(arr, scale)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("I;16", "I;16L", "I;16B", "I", "F"):
                raise InvalidDepthError(
                    f"depth file {path} is a {mode} image; a depth image is one channel of "
                    f"16-bit integers (millimetres) or 32-bit floats (metres)")
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidDepthError(f"cannot read depth file {path}: {exc}") from exc
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return depth_from_array(arr, scale)


def check_depth(depth: np.ndarray, width: int, height: int) -> None:
    """InvalidDepthError unless `depth` is a [height, width] array: registered to a width x
    height colour image."""
    shape = np.shape(depth)
    if len(shape) != 2:
        raise InvalidDepthError(f"a depth image is one channel [H, W], got shape {shape}")
    if shape != (height, width):
        raise InvalidDepthError(
            f"the depth image is {shape[1]}x{shape[0]}, the colour image {width}x{height}: the "
            f"depth must be registered to the colour image (same size, same pixels)")
