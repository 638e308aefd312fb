"""Plain data types shared by the pipeline, the CLIs, the evaluation and the ROS layer."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from spatialgeo_core.errors import InvalidRegionError, InvalidRequestError


@dataclass(frozen=True)
class Region:
    """One region of an image, referred to in questions as "Region [i]" (i = its index in the
    list).

    box: (x1, y1, x2, y2) in pixels of the original image, at least one pixel wide and high
    (x2 - x1 >= 1, y2 - y1 >= 1: a box's outline is drawn from x1 to x2 - 1).
    mask: [H, W] bool array of the original image's size. At least one of the two is given; when
    both are, the mask is drawn and the box only labels it.
    """

    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def validate(self, width: int, height: int) -> None:
        """Raise InvalidRegionError unless the region lies inside a width x height image."""
        if self.box is None and self.mask is None:
            raise InvalidRegionError("a region needs a box or a mask")
        if self.box is not None:
            if len(self.box) != 4 or not all(np.isfinite(v) for v in self.box):
                raise InvalidRegionError(f"a box is 4 finite numbers x1,y1,x2,y2, got {self.box}")
            x1, y1, x2, y2 = self.box
            if not (x2 > x1 and y2 > y1):
                raise InvalidRegionError(f"box {self.box} is empty (need x2 > x1 and y2 > y1)")
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise InvalidRegionError(f"box {self.box} is narrower than one pixel (need "
                                         "x2 - x1 >= 1 and y2 - y1 >= 1)")
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise InvalidRegionError(
                    f"box {self.box} lies outside the {width}x{height} image")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.shape != (height, width):
                raise InvalidRegionError(
                    f"mask of shape {m.shape} does not match the image ({height}, {width})")
            if not m.any():
                raise InvalidRegionError("mask is empty")

    def key(self) -> tuple:
        """A hashable identity, used to cache the features of an image drawn with these regions."""
        mask_key = None
        if self.mask is not None:
            m = np.ascontiguousarray(np.asarray(self.mask, dtype=bool))
            mask_key = (m.shape, hash(np.packbits(m).tobytes()))
        box_key = None if self.box is None else tuple(float(v) for v in self.box)
        return (box_key, mask_key)


_REGION_REF = re.compile(r"Region\s*\[\s*(\d+)\s*\]", re.IGNORECASE)


def check_region_references(question: str, num_regions: int) -> None:
    """InvalidRequestError when the question names a "Region [i]" beyond the regions given (it
    would be answered about a mark that is not drawn)."""
    missing = sorted({int(i) for i in _REGION_REF.findall(question)} - set(range(num_regions)))
    if missing:
        raise InvalidRequestError(
            f"the question refers to Region [{missing[0]}] but {num_regions} region(s) were "
            f"given (Region [i] is the i-th region, from 0)")


MAX_QUESTION_CHARS = 2000


class Question(str):
    """A question that `check_question` accepted: stripped, not empty, not too long, naming only
    the regions given. It is the text itself (a str); code that receives one does not check it
    again."""

    num_regions: int

    def __new__(cls, text: str, num_regions: int) -> Question:
        self = super().__new__(cls, text)
        self.num_regions = num_regions
        return self


def check_question(question: str, num_regions: int, max_chars: int = MAX_QUESTION_CHARS,
                   limit_name: str = "") -> Question:
    """The question, stripped, as a Question; InvalidRequestError when it is empty, longer than
    `max_chars` (the message names `limit_name`, a setting, when given) or refers to a region
    beyond the `num_regions` given."""
    if isinstance(question, Question) and question.num_regions == num_regions:
        return question
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError("the question is empty")
    text = question.strip()
    if len(text) > max_chars:
        setting = f" ({limit_name})" if limit_name else ""
        raise InvalidRequestError(f"the question has {len(text)} characters; the limit is "
                                  f"{max_chars}{setting}")
    check_region_references(text, num_regions)
    return Question(text, num_regions)


def check_regions(regions: list[Region], width: int, height: int) -> None:
    """InvalidRegionError naming the first region ("Region [i]: ...") that does not fit a
    width x height image."""
    for i, region in enumerate(regions):
        try:
            region.validate(width, height)
        except InvalidRegionError as exc:
            raise InvalidRegionError(f"Region [{i}]: {exc}") from exc


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding options. Greedy (temperature 0) by default, so answers are reproducible."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    min_new_tokens: int = 0    # EOS cannot end the answer before this many tokens (transformers'
                               # min_new_tokens); = max_new_tokens: fixed-length benchmark answers

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise InvalidRequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InvalidRequestError(f"min_new_tokens must be in [0, max_new_tokens = "
                                      f"{self.max_new_tokens}], got {self.min_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InvalidRequestError(f"temperature must be >= 0 and finite, got "
                                      f"{self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Answer:
    """What the pipeline returns for one question."""

    text: str
    num_tokens: int
    input_ids: list[int]
    output_ids: list[int]
    image_span: tuple[int, int]          # [start, end) of the visual tokens inside input_ids
    num_visual_tokens: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    stopped: str = "eos"                  # "eos" | "max_new_tokens" | "cancelled"
    step_logits: list = field(default_factory=list)   # per generated token, [vocab] float32
