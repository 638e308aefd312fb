"""One path from a frame to an answer, for every caller: the node (spatialgeo_ros), eval-bag,
eval-bench and eval-spatialscore.

    result = answer_frame(pipeline, key, load, question, regions, options)

`key` names the frame (the node's buffered camera frame, a bag frame, an image file) and `load()`
gives its image when the pipeline's feature cache does not hold it yet: the image is decoded and
converted once while the frame stays cached, however many questions ask about it. The question is
checked once (`types.check_question`; a `types.Question` that a caller checked already is not
checked again), the regions once, where they are drawn on the image (`regions.draw_regions`,
InvalidRegionError naming "Region [i]"), then the pipeline encodes, prefills and decodes
(`SpatialGeoPipeline.answer_batch`) and the answer's metric value is read
(`answer_parsing.parse_metric_value`). Errors are the core's exception classes
(spatialgeo_core.errors); the ROS layer maps them to statuses, the evaluations to error records.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spatialgeo_core.answer_parsing import parse_metric_value
from spatialgeo_core.types import Answer, GenerationOptions, Region

# importing this module does not import torch: the ROS layer's plain modules import it
if TYPE_CHECKING:
    from spatialgeo_core.feature_cache import FrameFeatures, ImageSource


@dataclass(frozen=True)
class FrameAnswer:
    """An answer, the metric value it states, and the frame it is about."""

    answer: Answer
    value: float | None            # metres for a length, hours for a clock direction; else None
    unit: str                      # "m", "o'clock" or ""
    frame: FrameFeatures           # .image (RGB, without marks), .size (width, height)


def answer_frame(pipeline, key: Hashable, load: Callable[[], ImageSource], question: str,
                 regions: Sequence[Region] = (), options: GenerationOptions | None = None, *,
                 on_text: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> FrameAnswer:
    """Answer `question` about the frame named `key` with `regions` drawn on it (module
    docstring). `pipeline` is a SpatialGeoPipeline (or anything with its `frame` and `answer`);
    `on_text` gets the answer so far, `should_stop` is polled between tokens (the answer then
    ends "cancelled")."""
    frame = pipeline.frame(key, load)
    answer = pipeline.answer(frame, question, list(regions) or None, options, on_text=on_text,
                             should_stop=should_stop)
    parsed = parse_metric_value(answer.text)
    value, unit = parsed if parsed is not None else (None, "")
    return FrameAnswer(answer, value, unit, frame)
