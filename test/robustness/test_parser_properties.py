"""Property tests (hypothesis): the parsers that read what a user, a camera or a model writes never
fail with anything but the project's own errors (spatialgeo_core.errors), whatever they are fed.

- regions: `--region` text (the CLI's parser), then validation and drawing; questions.jsonl
  lines with random regions, then their masks decoded;
- image messages: sensor_msgs/Image with random encoding, sizes, step, byte order and data, and
  CompressedImage with random or damaged PNG / JPEG bytes;
- answers: the distance, clock, metric, predicate and choice parsers and score_item on text
  made of the words they look for.
"""
from __future__ import annotations

import argparse
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from spatialgeo_core.cli import _parse_box
from spatialgeo_core.errors import SpatialGeoError
from spatialgeo_core.image_msgs import (
    ENCODINGS,
    compressed_to_rgb,
    depth_to_meters,
    image_to_array,
    image_to_rgb,
)
from spatialgeo_core.regions import draw_regions
from spatialgeo_core.types import Region

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
W, H = 40, 30
IMAGE = np.zeros((H, W, 3), np.uint8)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=-5, max_value=50), st.integers(-10, 100),
    st.sampled_from([0, 0.5, 1, 10, 10.5, 39.5, 40, 40.25, 29.9, 30, 1e308, -0.0]))


def only_our_errors(fn, *args, **kwargs):
    """fn's value, or None when it raised one of the project's errors."""
    try:
        return fn(*args, **kwargs)
    except SpatialGeoError:
        return None


# -------------------------------------------------------------------------------------------------
# regions


box_texts = st.one_of(
    st.text(max_size=30),
    st.lists(numbers, min_size=0, max_size=6).map(lambda v: ",".join(map(str, v))),
    st.lists(st.sampled_from(["1", "2.5", "nan", "inf", "-1", "1e9", "", " ", "x", "0x10"]),
             min_size=1, max_size=5).map(",".join))


@SETTINGS
@given(texts=st.lists(box_texts, min_size=1, max_size=3))
@example(texts=["10,10,10.5,10.5"])                    # narrower than a pixel: a PIL ValueError
def test_region_text_is_refused_by_the_cli_or_drawn_or_refused_by_the_core(texts):
    regions = []
    for text in texts:
        try:
            regions.append(_parse_box(text))
        except argparse.ArgumentTypeError:         # the CLI's usage error: exit 2, one line
            return
    only_our_errors(draw_regions, IMAGE, regions)


masks = st.one_of(
    st.builds(lambda seed, p: np.random.default_rng(seed).random((H, W)) < p,
              st.integers(0, 2**16), st.floats(0, 1)),
    st.builds(lambda h, w: np.ones((h, w), bool), st.integers(1, 50), st.integers(1, 50)),
    st.builds(lambda seed: np.random.default_rng(seed).random((H, W)), st.integers(0, 99)),
    st.just(np.ones((H, W, 3), np.uint8)), st.just(np.ones((0,), bool)))


@SETTINGS
@given(box=st.none() | st.tuples(numbers, numbers, numbers, numbers), mask=st.none() | masks)
def test_a_region_is_drawn_or_refused_with_an_invalid_region_error(box, mask):
    only_our_errors(draw_regions, IMAGE, [Region(box=box, mask=mask)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
rle_counts = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=12),
    st.lists(st.integers(-3, W * H), max_size=6), json_values)
region_objects = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "box": st.one_of(json_values, st.lists(numbers, min_size=4, max_size=4)),
        "mask_rle": st.one_of(json_values, st.fixed_dictionaries({
            "size": st.one_of(json_values, st.just([H, W]),
                              st.lists(st.integers(-1, 3000), min_size=2, max_size=2),
                              st.just([40000, 40000])),
            "counts": rle_counts}))}))
question_objects = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=4), st.integers(0, 9)),
     "frame_index": st.one_of(st.integers(-1, 3), json_values),
     "question": st.sampled_from(["How far is Region [0]?", "", 3]),
     "reference": st.sampled_from(["It is 2 m.", None]),
     "category": st.sampled_from(["distance_data", "left_predicate", "bogus", None])},
    optional={"regions": st.one_of(json_values, st.lists(region_objects, max_size=3)),
              "stamp_ns": json_values, "stamp": json_values, "topic": json_values,
              "type": json_values})


@SETTINGS
@given(lines=st.lists(st.one_of(question_objects.map(json.dumps), st.text(max_size=20)),
                      min_size=1, max_size=5))
@example(lines=["0\x850"])                             # one line: U+0085 does not end it
@example(lines=[json.dumps({"id": "a", "frame_index": 0, "question": "How far is Region [0]?",
                            "reference": "It is 2 m.", "category": "distance_data",
                            "regions": [{"mask_rle": {"size": [3, 3], "counts": "0"}}]})])
def test_question_lines_are_records_or_line_errors_and_their_masks_decode_or_refuse(lines,
                                                                                    tmp_path_factory):
    pytest.importorskip("pycocotools")
    from spatialgeo_core.eval.questions import read_questions

    path = tmp_path_factory.mktemp("q") / "q.jsonl"
    text = "\n".join(lines)
    path.write_text(text, encoding="utf-8", newline="")
    parsed = only_our_errors(read_questions, path)
    if parsed is None:
        return
    records, errors = parsed
    read_lines = re.split(r"\r\n|\r|\n", text)           # as read_text reads them
    assert len(records) + len(errors) == sum(1 for ln in read_lines if ln.strip())
    for q in records:
        regions = only_our_errors(lambda q=q: q.regions)
        if regions is not None:
            only_our_errors(draw_regions, np.zeros((H, W, 3), np.uint8), list(regions))


# -------------------------------------------------------------------------------------------------
# image messages


@SETTINGS
@given(encoding=st.sampled_from([*ENCODINGS, "bogus", "", "RGB8"]),
       height=st.integers(-2, 70000), width=st.integers(-2, 70000),
       step=st.integers(-8, 300), big_endian=st.sampled_from([0, 1, True]),
       data=st.binary(max_size=4096))
def test_image_messages_decode_or_raise_an_invalid_image_error(encoding, height, width, step,
                                                               big_endian, data):
    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                          is_bigendian=big_endian, data=data)
    for decode in (image_to_array, image_to_rgb, depth_to_meters):
        out = only_our_errors(decode, msg)
        if out is not None:
            assert out.shape[:2] == (height, width)


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


ENCODED = {"png": _encoded("PNG"), "jpeg": _encoded("JPEG")}


@SETTINGS
@given(fmt=st.sampled_from(["png", "jpeg"]), cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
       random_bytes=st.none() | st.binary(max_size=512),
       format_name=st.sampled_from(["png", "jpeg", "rgb8; compressedDepth", "", "16UC1"]))
def test_compressed_images_decode_or_raise_an_invalid_image_error(fmt, cut, flips, random_bytes,
                                                                  format_name):
    data = bytearray(ENCODED[fmt] if random_bytes is None else random_bytes)
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    msg = SimpleNamespace(format=format_name, data=bytes(data[:cut] if cut < 32 else data))
    rgb = only_our_errors(compressed_to_rgb, msg)
    if rgb is not None:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


# -------------------------------------------------------------------------------------------------
# answers

WORDS = ["Region [0]", "Region [1]", "is", "about", "meters", "m", "cm", "feet", "ft", "inches",
         "'", '"', "1/0", "0/0", "1 1/2", "and a half", "one", "twelve", "thousand", "1e400",
         "99999999999999999999999", "-3", "0", "2.5", "3-4", "to", "or", "o'clock", "at",
         "13 o'clock", "12:30", "left", "right", "above", "below", "behind", "in front of",
         "taller", "shorter", "wider", "thinner", "bigger", "smaller", "yes", "no", "not",
         "Yes,", "No.", ".", ",", "\n", "Region [0]: 3.2 m ahead.", "So", "therefore", "×", "½",
         "٣", "𝟙"]
answer_texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=4)), max_size=14).map(" ".join))
CATEGORIES = ["left_predicate", "tall_choice", "distance_data", "width_data", "direction",
              "behind_predicate", "big_choice"]
QUESTIONS = ["Is Region [0] to the left of Region [1]?", "Which is taller, Region [0] or "
             "Region [1]?", "How far is Region [0] from Region [1]?", "", "What?"]


@SETTINGS
@given(text=answer_texts, question=st.sampled_from(QUESTIONS) | st.text(max_size=30),
       category=st.sampled_from(CATEGORIES),
       unit=st.sampled_from([None, "m", "cm", "ft", "in"]))
def test_answer_parsers_read_or_give_none(text, question, category, unit):
    from spatialgeo_core.answer_parsing import (
        answer_claims,
        parse_choice,
        parse_clock_hours,
        parse_distance_m,
        parse_metric_value,
        parse_predicate,
    )
    from spatialgeo_core.eval.metrics import score_item

    only_our_errors(answer_claims, text)
    only_our_errors(parse_distance_m, text, default_unit=unit)
    only_our_errors(parse_clock_hours, text)
    only_our_errors(parse_metric_value, text)
    only_our_errors(parse_predicate, text, category if "predicate" in category
                    else "left_predicate", question)
    only_our_errors(parse_choice, text, question, category if "choice" in category else None)
    only_our_errors(score_item, category, question, text, text, default_unit=unit)
