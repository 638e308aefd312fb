"""SpatialRGPT-Bench JSON: reading, writing, RLE (compressed and list counts), bbox fallback."""
import json
import logging

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from spatialgeo_core.eval.spatialrgpt.format import (
    BenchFormatError,
    answer_record,
    decode_rle,
    encode_rle,
    parse_bench_item,
    read_answer_records,
    read_bench,
    reference_value,
    write_answer_records,
    write_bench,
)

# pycocotools' decode trips a NumPy 2 deprecation inside the library itself
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 24, 32


def _masks():
    a = np.zeros((H, W), dtype=bool)
    a[2:10, 3:12] = True
    a[0, 0] = True                       # a pixel at the origin: list counts start with 0 zeros
    b = np.zeros((H, W), dtype=bool)
    b[12:20, 15:30] = True
    b[14:16, 20:22] = False              # a hole
    return a, b


def _compressed(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _list_counts(mask):
    """Uncompressed COCO counts, written independently of the module under test."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _item(**over):
    a, b = _masks()
    item = {
        "id": "sunrgbd_42_7",
        "image_info": {"file_path": "SUNRGBD/kv2/scene/image/0001.jpg", "height": H, "width": W},
        "text_q": "Is Region [0] smaller than Region [1]?",
        "conversations": [
            {"from": "human", "value": "<image>\nIs <mask> smaller than <mask>?"},
            {"from": "gpt", "value": "Yes, Region [0] is smaller than Region [1]."},
        ],
        "rle": [_compressed(a), _list_counts(b)],
        "bbox": [[0, 0, 12, 10], [15, 12, 30, 20]],
        "qa_info": {"type": "qualitative", "category": "small_predicate"},
    }
    item.update(over)
    return item


def test_list_counts_helper_agrees_with_pycocotools():
    a, b = _masks()
    for m in (a, b):
        coded = mask_utils.frPyObjects(_list_counts(m), H, W)
        assert np.array_equal(mask_utils.decode(coded).astype(bool), m)
    assert _list_counts(a)["counts"][0] == 0


def test_read_decodes_compressed_and_list_rle(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([_item()]))
    [item] = read_bench(path)
    a, b = _masks()
    assert item.id == "sunrgbd_42_7"
    assert (item.height, item.width, item.file_path) == (H, W, "SUNRGBD/kv2/scene/image/0001.jpg")
    assert item.region_sources == ["rle", "rle"]
    assert np.array_equal(item.regions[0].mask, a)
    assert np.array_equal(item.regions[1].mask, b)
    assert item.regions[1].box == (15.0, 12.0, 30.0, 20.0)
    assert item.category == "small_predicate" and item.qa_type == "qualitative"
    assert item.question == "Is Region [0] smaller than Region [1]?"
    assert item.reference_answer == "Yes, Region [0] is smaller than Region [1]."
    assert reference_value(item) is True


@pytest.mark.parametrize("compressed", [True, False])
def test_write_read_round_trip(tmp_path, compressed):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([_item(), _item(id=7, rle=None)]))
    items = read_bench(src)
    out = write_bench(items, tmp_path / "sub" / "out.json", compressed_rle=compressed)
    again = read_bench(out)
    assert [i.id for i in again] == ["sunrgbd_42_7", 7]
    for x, y in zip(items, again, strict=True):
        assert (x.text_q, x.conversations, x.category, x.qa_type) == \
               (y.text_q, y.conversations, y.category, y.qa_type)
        for rx, ry in zip(x.regions, y.regions, strict=True):
            assert rx.box == ry.box
            if rx.mask is not None:
                assert np.array_equal(rx.mask, ry.mask)
    raw = json.loads(out.read_text())
    counts = raw[0]["rle"][1]["counts"]
    assert isinstance(counts, str if compressed else list)
    # a bbox-only region is written as its box's mask
    box_mask = again[1].regions[0].mask
    assert box_mask.sum() == 12 * 10 and box_mask[0:10, 0:12].all()


def test_encode_rle_matches_pycocotools():
    a, b = _masks()
    for m in (a, b):
        assert encode_rle(m) == _compressed(m)
        assert encode_rle(m, compressed=False) == _list_counts(m)
        assert np.array_equal(decode_rle(encode_rle(m, compressed=False), H, W), m)


@pytest.mark.parametrize("bad_rle", [
    {"size": [H, W], "counts": "garbage!!"},
    {"size": [H + 1, W], "counts": _list_counts(_masks()[0])["counts"]},
    {"size": [H, W], "counts": [1, 2, 3]},
    {"size": [H, W], "counts": [H * W]},              # decodes to an empty mask
    {"counts": "x"},
])
def test_bad_rle_falls_back_to_clamped_bbox(bad_rle, caplog):
    item = _item(rle=[bad_rle, _compressed(_masks()[1])],
                 bbox=[[-5.0, 2.5, 40.0, 9.0], [15, 12, 30, 20]])
    with caplog.at_level(logging.WARNING):
        parsed = parse_bench_item(item)
    assert parsed.region_sources == ["bbox", "rle"]
    assert parsed.regions[0].mask is None
    assert parsed.regions[0].box == (0.0, 2.5, float(W), 9.0)
    assert "sunrgbd_42_7" in caplog.text and "bbox" in caplog.text


@pytest.mark.parametrize(("change", "message"), [
    ({"image_info": None}, "image_info"),
    ({"image_info": {"file_path": "x.jpg", "height": 0, "width": W}}, "height"),
    ({"text_q": ""}, "text_q"),
    ({"conversations": [{"from": "human", "value": "q"}]}, "gpt turn"),
    ({"qa_info": {"type": "qualitative", "category": "distance_data"}}, "does not belong"),
    ({"qa_info": {"type": "qualitative", "category": "sideways_predicate"}}, "unknown"),
    ({"bbox": [[0, 0, 5, 5]]}, "2 RLE masks but 1 boxes"),
    ({"bbox": [[0, 0, 5], [15, 12, 30, 20]]}, "bbox"),
    ({"rle": [{"size": [H, W], "counts": "bad!"}, _list_counts(_masks()[1])],
      "bbox": [[50, 50, 60, 60], [15, 12, 30, 20]]}, "region 0"),
])
def test_malformed_items_name_the_item(change, message):
    with pytest.raises(BenchFormatError, match=message) as info:
        parse_bench_item(_item(**change))
    assert "sunrgbd_42_7" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_item_without_id_and_non_list_file(tmp_path):
    item = _item()
    del item["id"]
    with pytest.raises(BenchFormatError, match="#3"):
        parse_bench_item(item, index=3)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"items": []}))
    with pytest.raises(BenchFormatError, match="list"):
        read_bench(path)
    path.write_text("{not json")
    with pytest.raises(BenchFormatError, match="JSON"):
        read_bench(path)


@pytest.mark.parametrize(("category", "qa_type", "question", "answer", "expected"), [
    ("height_data", "quantitative", "How tall is Region [0]?", "Region [0] is 10.0 inches tall.",
     0.254),
    ("direction", "quantitative", "If you are at Region [0], where will you find Region [1]?",
     "Region [1] is roughly at 4 o'clock from Region [0].", 4.0),
    ("above_choice", "qualitative", "Which is above, Region [0] or Region [1]?",
     "Positioned higher is Region [1].", "Region [1]"),
    ("behind_predicate", "qualitative", "Is Region [0] behind Region [1]?", "No, it is not.",
     False),
])
def test_reference_value(category, qa_type, question, answer, expected):
    item = parse_bench_item(_item(
        text_q=question, qa_info={"type": qa_type, "category": category},
        conversations=[{"from": "human", "value": "<image>\n<mask> <mask>"},
                       {"from": "gpt", "value": answer}]))
    got = reference_value(item)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)


def test_answer_records_round_trip(tmp_path):
    item = parse_bench_item(_item())
    rec = answer_record(item, "Yes.", "spatialgeo-tiny", latency_ms=12.5)
    assert rec["question_id"] == "sunrgbd_42_7" and rec["gt"] == item.reference_answer
    assert rec["qa_info"] == {"type": "qualitative", "category": "small_predicate"}
    path = write_answer_records([rec, rec], tmp_path / "answers.jsonl")
    assert read_answer_records(path) == [rec, rec]
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(BenchFormatError, match=":3"):
        read_answer_records(path)
