"""Limits that keep one bad input from taking the machine's memory, in one place.

An image (a file, a CompressedImage, a raw Image message) and a region mask (a COCO RLE, whose
`size` is that of its image) may hold at most `max_image_pixels()` pixels. The default,
DEFAULT_MAX_IMAGE_PIXELS, covers an 8K frame and a 48-megapixel photo; the environment variable
SPATIALGEO_MAX_IMAGE_PIXELS changes it for every entry point (CLI, evaluation, training data, the
ROS node). The model only ever sees a 336 x 336 image, so a larger limit only costs memory: a
12000 x 9000 PNG takes ~5 GB to decode, mark and resize. Pillow refuses images of more than
2 x `PIL.Image.MAX_IMAGE_PIXELS` (~179 megapixels) whatever this limit says.
"""
from __future__ import annotations

import os

from spatialgeo_core.errors import ConfigError, InvalidImageError, InvalidRegionError

MAX_IMAGE_PIXELS_ENV = "SPATIALGEO_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


def max_image_pixels() -> int:
    """The pixel limit of images and masks: SPATIALGEO_MAX_IMAGE_PIXELS, else the default."""
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_IMAGE_PIXELS_ENV}={raw!r}: expected a positive number of pixels")
    return value


def _too_large(width: int, height: int) -> str | None:
    limit = max_image_pixels()
    if width * height <= limit:
        return None
    return (f"{width}x{height} = {width * height:,} pixels is more than the limit of "
            f"{limit:,} ({MAX_IMAGE_PIXELS_ENV})")


def check_image_pixels(width: int, height: int, what: str) -> None:
    """InvalidImageError when a width x height image is over the limit (checked before
    decoding)."""
    problem = _too_large(width, height)
    if problem:
        raise InvalidImageError(f"{what} is too large: {problem}")


def check_mask_pixels(height: int, width: int, what: str) -> None:
    """InvalidRegionError when a mask of height x width is over the limit (checked before
    decoding)."""
    problem = _too_large(width, height)
    if problem:
        raise InvalidRegionError(f"{what} is too large: {problem}")
