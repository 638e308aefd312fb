"""What the model saw, for people: the set-of-marks image of a question with the question, the
answer and the regions' 3D positions written under it. No ROS.

The image part is `regions.draw_regions(frame, regions)`, the very image the pipeline encodes for
that question (before the processor pads it to a square and resizes it), pixel for pixel; the
text goes into a panel below it, so that nothing covers the marks. The node publishes it on
`annotated_image`; `spatialgeo ask --annotate FILE` writes it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spatialgeo_core.region_positions import RegionPosition
from spatialgeo_core.regions import PALETTE, draw_regions
from spatialgeo_core.types import Region

PANEL_RGB = (24, 24, 24)
TEXT_RGB = (255, 255, 255)
MIN_TEXT_PX = 11


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (at spaces, or inside a word that
    is longer than a line)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=font) > width and len(line) > 1:
                cut = len(line) - 1
                while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def annotated_image(image: Image.Image | np.ndarray, regions: Sequence[Region], question: str,
                    answer: str,
                    positions: Sequence[RegionPosition] | None = None) -> Image.Image:
    """The set-of-marks image of `regions` on `image` with a text panel below: the question, the
    answer and, when given, one line per region position in the region's mark colour."""
    marked = draw_regions(image, list(regions))
    w, h = marked.size
    size = max(MIN_TEXT_PX, round(0.03 * max(w, h)))
    font = ImageFont.load_default(size=size)
    pad = max(2, size // 3)
    measure = ImageDraw.Draw(marked)
    rows: list[tuple[str, tuple[int, int, int]]] = []
    for prefix, text in (("Q: ", question), ("A: ", answer)):
        rows += [(line, TEXT_RGB) for line in _wrap(measure, prefix + text.strip(), font,
                                                    w - 2 * pad)]
    for i, position in enumerate(positions or ()):
        colour = PALETTE[i % len(PALETTE)]
        rows += [(line, colour) for line in _wrap(measure, position.describe(i), font,
                                                  w - 2 * pad)]
    line_h = size + pad
    out = Image.new("RGB", (w, h + pad + len(rows) * line_h + pad), PANEL_RGB)
    out.paste(marked, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (line, colour) in enumerate(rows):
        draw.text((pad, h + pad + k * line_h), line, fill=colour, font=font)
    return out
