"""Set-of-marks region prompts: regions are drawn on the image and named "Region [i]" in the
question.

The rendering is part of the evaluation protocol (benchmark numbers depend on it), so it is fixed
here:
- On the original image (before padding and resizing), regions are drawn in list order,
  i = 0, 1, ...
- Colour of region i: PALETTE[i % 8] (RGB).
- A mask is alpha-blended with its colour (alpha 0.35) and its boundary pixels (mask pixels with a
  4-neighbour outside the mask) are painted in the full colour, dilated to the line width.
- A box is drawn as a rectangle outline in the full colour. When a region has both, the mask is
  drawn and the box only places the label.
- Line width: max(2, round(0.006 * max(W, H))) pixels.
- Label: the text "i" (the index alone, so "Region [i]" in text matches mark i in the image), white
  on a filled rectangle of the region colour, font height max(10, round(0.035 * max(W, H))) px
  (PIL's default font at that size), with its top-left corner at the top-left of the region's box
  (the mask's bounding box when there is no box), moved inside the image when it would leave it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spatialgeo_core.processor import to_pil_rgb
from spatialgeo_core.types import Region, check_regions

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
)
MASK_ALPHA = 0.35


def line_width(w: int, h: int) -> int:
    return max(2, round(0.006 * max(w, h)))


def font_size(w: int, h: int) -> int:
    return max(10, round(0.035 * max(w, h)))


def _boundary(mask: np.ndarray, width: int) -> np.ndarray:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    edge = m & ~inner                                          # [H, W]
    for _ in range(max(0, width - 1) // 2):                    # dilate to the line width
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def draw_regions(image: Image.Image | np.ndarray, regions: list[Region]) -> Image.Image:
    """Check the regions against the image (InvalidRegionError naming "Region [i]") and return a
    marked copy (RGB); without regions, the image as RGB (not a copy)."""
    img = to_pil_rgb(image)
    w, h = img.size
    check_regions(regions, w, h)
    if not regions:
        return img
    lw, fs = line_width(w, h), font_size(w, h)
    arr = np.asarray(img).astype(np.float32)                   # [H, W, 3]
    for i, r in enumerate(regions):
        if r.mask is not None:
            colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
            m = np.asarray(r.mask, dtype=bool)
            arr[m] = (1 - MASK_ALPHA) * arr[m] + MASK_ALPHA * colour
            arr[_boundary(m, lw)] = colour
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=fs)
    for i, r in enumerate(regions):
        colour = PALETTE[i % len(PALETTE)]
        if r.box is not None and r.mask is None:
            x1, y1, x2, y2 = (float(v) for v in r.box)
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=lw)
        if r.box is not None:
            x0, y0 = float(r.box[0]), float(r.box[1])
        else:
            ys, xs = np.nonzero(np.asarray(r.mask, dtype=bool))
            x0, y0 = float(xs.min()), float(ys.min())
        label = str(i)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 2 * lw, bottom - top + 2 * lw
        x0 = min(max(0.0, x0), max(0.0, w - tw))
        y0 = min(max(0.0, y0), max(0.0, h - th))
        draw.rectangle([x0, y0, x0 + tw, y0 + th], fill=colour)
        draw.text((x0 + lw - left, y0 + lw - top), label, fill=(255, 255, 255), font=font)
    return img
