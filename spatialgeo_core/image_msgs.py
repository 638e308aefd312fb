"""Decoding sensor_msgs/Image and CompressedImage into arrays. No rclpy, no cv_bridge, no OpenCV.

Used by the ROS node (through spatialgeo_ros.conversions) and by the offline bag evaluation, so
both decode frames the same way. Every function takes any object with the fields of the ROS message
(rclpy messages, rosbags' message classes, simple test objects).

`image_to_array` is the passthrough decode (the message's own layout, like cv_bridge's
`imgmsg_to_cv2(msg, "passthrough")`): it honours `step` (row padding of any size), `is_bigendian`
and the encoding, and returns a contiguous array in native byte order. `array_to_rgb` turns such an
array into the model's input, uint8 [H, W, 3] RGB, with the colour rules of cv_bridge /
rosbags-image (16-bit channels are scaled by 255/65535 and truncated; alpha is dropped; grey is
replicated; YUV 4:2:2 uses OpenCV's fixed-point BT.601 conversion).

`open_image` decodes an image file (a path, or the bytes of a CompressedImage) by the same rules,
so a 16-bit PNG gives the same pixels whether it comes as a file (`spatialgeo ask`, the benchmarks,
training data) or in a message. Every decoder checks spatialgeo_core.limits first.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from spatialgeo_core.errors import InvalidImageError, SpatialGeoError
from spatialgeo_core.limits import check_image_pixels

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class EncodingInfo:
    dtype: str          # numpy dtype name of one channel
    channels: int
    rgb: str            # layout: rgb bgr rgba bgra mono uyvy yuyv; "" = not a colour image


# The encodings the node accepts. Colour ones can be asked about; depth ones only decode
# (depth_to_meters).
ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo("uint8", 3, "rgb"),
    "bgr8": EncodingInfo("uint8", 3, "bgr"),
    "rgba8": EncodingInfo("uint8", 4, "rgba"),
    "bgra8": EncodingInfo("uint8", 4, "bgra"),
    "mono8": EncodingInfo("uint8", 1, "mono"),
    "mono16": EncodingInfo("uint16", 1, "mono"),
    "rgb16": EncodingInfo("uint16", 3, "rgb"),
    "bgr16": EncodingInfo("uint16", 3, "bgr"),
    "rgba16": EncodingInfo("uint16", 4, "rgba"),
    "bgra16": EncodingInfo("uint16", 4, "bgra"),
    "uyvy": EncodingInfo("uint8", 2, "uyvy"),
    "yuv422": EncodingInfo("uint8", 2, "uyvy"),        # ROS's name for UYVY
    "yuyv": EncodingInfo("uint8", 2, "yuyv"),
    "yuv422_yuy2": EncodingInfo("uint8", 2, "yuyv"),   # ROS's name for YUYV
    "8UC1": EncodingInfo("uint8", 1, ""),
    "16UC1": EncodingInfo("uint16", 1, ""),            # depth in millimetres
    "32FC1": EncodingInfo("float32", 1, ""),           # depth in metres
}
COLOR_ENCODINGS: tuple[str, ...] = tuple(k for k, v in ENCODINGS.items() if v.rgb)
DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "32FC1")
MASK_ENCODINGS: tuple[str, ...] = ("mono8", "8UC1")


def _byte_view(data) -> np.ndarray:
    """The message's `data` (bytes, bytearray, array.array, numpy array or list) as flat uint8."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def image_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image -> array in the message's own layout, [H, W] or [H, W, C], native order.

    Raises InvalidImageError for an unknown encoding, an empty image, a step shorter than a row or
    data shorter than the rows it should hold.
    """
    info = ENCODINGS.get(msg.encoding)
    if info is None:
        raise InvalidImageError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"empty image ({width}x{height})")
    check_image_pixels(width, height, f"{msg.encoding} image")
    dtype = np.dtype(info.dtype)
    row_bytes = width * info.channels * dtype.itemsize
    if step < row_bytes:
        raise InvalidImageError(
            f"step {step} is shorter than a row of {width} {msg.encoding} pixels "
            f"({row_bytes} bytes)")
    buf = _byte_view(msg.data)
    needed = (height - 1) * step + row_bytes      # the last row's padding may be missing
    if buf.size < needed:
        raise InvalidImageError(
            f"{msg.encoding} image {width}x{height} with step {step} needs {needed} bytes, "
            f"data has {buf.size}")
    rows = np.ndarray(shape=(height, row_bytes), dtype=np.uint8, buffer=buf,
                      strides=(step, 1))           # [H, row_bytes], padding skipped
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    arr = rows.copy().view(wire)                   # [H, W*C] in the message's byte order
    arr = arr.astype(dtype.newbyteorder("="), copy=False)   # native order, same values
    if info.channels == 1:
        return arr.reshape(height, width)          # [H, W]
    return arr.reshape(height, width, info.channels)   # [H, W, C]


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    # cv_bridge / rosbags-image: multiply by 255/65535 (in float64) and truncate
    return np.multiply(arr, 255.0 / 65535.0).astype(np.uint8)


# OpenCV's fixed-point ITU-R BT.601 YUV -> RGB (color_yuv.simd.hpp), so results match it exactly
_SHIFT = 20
_CY, _CUB, _CUG, _CVG, _CVR = 1220542, 2116026, -409993, -852492, 1673527


def _yuv422_to_rgb(arr: np.ndarray, layout: str) -> np.ndarray:
    height, width = arr.shape[:2]
    if width % 2:
        raise InvalidImageError(f"a YUV 4:2:2 image needs an even width, got {width}")
    a = arr.astype(np.int64)
    if layout == "uyvy":                            # bytes U Y0 V Y1: pixel = (chroma, luma)
        y, c = a[..., 1], a[..., 0]
    else:                                           # yuyv: bytes Y0 U Y1 V: pixel = (luma, chroma)
        y, c = a[..., 0], a[..., 1]
    u = np.repeat(c[:, 0::2], 2, axis=1) - 128      # [H, W]
    v = np.repeat(c[:, 1::2], 2, axis=1) - 128      # [H, W]
    yy = np.maximum(y - 16, 0) * _CY
    half = 1 << (_SHIFT - 1)
    r = (yy + half + _CVR * v) >> _SHIFT
    g = (yy + half + _CVG * v + _CUG * u) >> _SHIFT
    b = (yy + half + _CUB * u) >> _SHIFT
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)   # [H, W, 3]


def array_to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """An array in `encoding`'s layout (from image_to_array) -> uint8 [H, W, 3] RGB, contiguous."""
    info = ENCODINGS.get(encoding)
    if info is None or not info.rgb:
        raise InvalidImageError(
            f"encoding {encoding!r} is not a colour image; colour encodings: "
            f"{', '.join(COLOR_ENCODINGS)}")
    if info.rgb in ("uyvy", "yuyv"):
        return _yuv422_to_rgb(arr, info.rgb)
    if info.rgb == "mono":
        arr = np.repeat(arr[..., None], 3, axis=-1)     # [H, W] -> [H, W, 3]
    elif info.rgb in ("bgr", "bgra"):
        arr = arr[..., 2::-1]                           # [H, W, 3], B<->R, alpha dropped
    elif info.rgb == "rgba":
        arr = arr[..., :3]                              # [H, W, 3]
    return np.ascontiguousarray(_scale_to_uint8(arr))


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image of a colour encoding -> uint8 [H, W, 3] RGB."""
    return array_to_rgb(image_to_array(msg), msg.encoding)


def decoded_to_rgb(arr: np.ndarray) -> np.ndarray:
    """An OpenCV-decoded image (cv_bridge.compressed_imgmsg_to_cv2(msg, 'passthrough'): grey, BGR
    or BGRA, 8 or 16 bit) -> uint8 [H, W, 3] RGB."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return array_to_rgb(arr, "mono16" if arr.dtype == np.uint16 else "mono8")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        bits = "16" if arr.dtype == np.uint16 else "8"
        return array_to_rgb(arr, ("bgr" if arr.shape[2] == 3 else "bgra") + bits)
    raise InvalidImageError(f"cannot read a decoded image of shape {arr.shape} as colour")


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG or anything PIL reads) -> uint8 [H, W, 3] RGB."""
    if "compresseddepth" in msg.format.lower().replace(" ", ""):
        raise InvalidImageError(
            f"format {msg.format!r} is a compressed depth image, not a colour image")
    return open_image(io.BytesIO(_byte_view(msg.data).tobytes()),
                      f"compressed image (format {msg.format!r})")


_GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def pil_to_rgb(img) -> np.ndarray:
    """A decoded PIL image -> uint8 [H, W, 3] RGB by the rules of `array_to_rgb`: 16-bit grey (a
    16-bit PNG, mode I;16 or I) is scaled by 255/65535 as mono16, alpha is dropped. A 32-bit
    image holding values outside 0 .. 65535, and a float image (mode F), have no such rule and
    are refused rather than clipped."""
    if img.mode in _GREY16_MODES or img.mode == "I":
        arr = np.asarray(img)                                        # [H, W] uint16 or int32
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InvalidImageError(
                f"a 32-bit integer image with values {arr.min()} .. {arr.max()} has no colour "
                "scale (16-bit grey is 0 .. 65535); convert it to 8 or 16 bits")
        return array_to_rgb(arr.astype(np.uint16), "mono16")
    if img.mode == "F":
        raise InvalidImageError("a floating-point image (mode F) has no colour scale; convert it "
                                "to 8 or 16 bits")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))  # [H, W, 3]


def open_image(source: str | Path | BinaryIO, what: str | None = None) -> np.ndarray:
    """An encoded image (a path or a binary file object) -> uint8 [H, W, 3] RGB.

    The pixel limit is checked from the header, before anything is decoded. Raises
    InvalidImageError naming `what` (default: the path) for a missing, unreadable, corrupt or
    too large image.
    """
    from PIL import Image, UnidentifiedImageError

    what = what or f"image {source}"
    try:
        with warnings.catch_warnings():
            # the limit checked below takes the place of Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                check_image_pixels(img.width, img.height, what)
                img.load()
                return pil_to_rgb(img)
    except SpatialGeoError:
        raise
    except FileNotFoundError:
        raise InvalidImageError(f"{what} does not exist") from None
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"{what} is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        verb = "read" if isinstance(source, str | Path) else "decode"
        raise InvalidImageError(f"cannot {verb} {what}: {type(exc).__name__}: {exc}") from exc


def depth_to_meters(msg) -> np.ndarray:
    """sensor_msgs/Image 16UC1 (millimetres, 0 = no data) or 32FC1 (metres) -> float32 [H, W] in
    metres, NaN where there is no measurement."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InvalidImageError(
            f"depth images are {' or '.join(DEPTH_ENCODINGS)}, got {msg.encoding!r}")
    arr = image_to_array(msg)
    if msg.encoding == "16UC1":
        out = arr.astype(np.float32) / 1000.0
        out[arr == 0] = np.nan
        return out
    out = arr.astype(np.float32, copy=True)
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
