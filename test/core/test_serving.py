"""The one path from a frame to an answer (serving.answer_frame), as the node and the
evaluations take it: the frame decoded and converted once while cached, the regions checked where
they are drawn, the question checked once, the value read; and no deprecated cache argument."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from spatialgeo_core.errors import InvalidRegionError, InvalidRequestError
from spatialgeo_core.processor import to_pil_rgb
from spatialgeo_core.serving import answer_frame
from spatialgeo_core.types import GenerationOptions, Question, Region, check_question

OPTS = GenerationOptions(max_new_tokens=4)


def _image(seed=0, h=60, w=80):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_a_frame_is_decoded_once_and_answers_with_its_value(tiny_pipeline):
    decoded = []

    def load():
        decoded.append(1)
        return _image(1)

    regions = [Region(box=(2, 2, 30, 30)), Region(box=(40, 10, 78, 58))]
    first = answer_frame(tiny_pipeline, "camera@1", load, "How far is Region [0] from Region [1]?",
                         regions, OPTS)
    again = answer_frame(tiny_pipeline, "camera@1", load, "Is Region [0] left of Region [1]?",
                         regions, OPTS)
    assert decoded == [1] and again.frame is first.frame and first.frame.size == (80, 60)
    assert len(first.frame.visual) == 1                        # drawn once, with the marks
    assert first.answer.num_tokens >= 1 and again.answer.timings_ms["encode"] == 0.0
    assert (first.value is None) == (first.unit == "")


def test_regions_are_checked_where_they_are_drawn_before_the_model_runs(tiny_pipeline):
    frame_key = "camera@2"
    with pytest.raises(InvalidRegionError, match=r"Region \[1\]: box .* outside the 80x60"):
        answer_frame(tiny_pipeline, frame_key, lambda: _image(2), "Where is Region [1]?",
                     [Region(box=(1, 1, 5, 5)), Region(box=(70, 0, 90, 10))], OPTS)
    assert not tiny_pipeline.frame(frame_key, lambda: pytest.fail("loaded twice")).visual
    with pytest.raises(InvalidRequestError, match=r"refers to Region \[2\]"):
        answer_frame(tiny_pipeline, frame_key, lambda: _image(2), "Is Region [2] big?",
                     [Region(box=(1, 1, 5, 5))], OPTS)


def test_a_checked_question_is_not_checked_again():
    q = check_question("  How far is Region [0]?  ", 1, max_chars=30, limit_name="the limit")
    assert isinstance(q, Question) and q == "How far is Region [0]?" and q.num_regions == 1
    assert check_question(q, 1) is q
    with pytest.raises(InvalidRequestError, match=r"31 characters; the limit is 30 \(the lim"):
        check_question("x" * 31, 0, max_chars=30, limit_name="the limit")
    with pytest.raises(InvalidRequestError, match=r"refers to Region \[0\]"):
        check_question(q, 0)                   # checked against other regions: again


def test_an_rgb_image_is_converted_once():
    rgb = to_pil_rgb(_image(3))
    assert to_pil_rgb(rgb) is rgb              # an RGB image is used as it is, not copied


def test_serving_warns_of_no_deprecated_argument(tiny_dir):
    """The cache is passed under the name the installed transformers keeps (kv_cache.CACHE_ARG):
    first question, cached prefix, batch and static cache."""
    from spatialgeo_core.load_options import LoadOptions
    from spatialgeo_core.pipeline import SpatialGeoPipeline

    for options in (LoadOptions(str(tiny_dir)), LoadOptions(str(tiny_dir), static_cache=True)):
        pipe = SpatialGeoPipeline.from_pretrained(options)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            frame = pipe.encode(_image(4))
            pipe.answer(frame, "How far?", options=OPTS)
            pipe.answer(frame, "How far is it now?", options=OPTS)
            pipe.answer_batch(frame, ["Is it left?", "Which one is taller?"], options=OPTS)
