"""The SpatialRGPT-Bench annotation format (`SpatialRGPT-Bench_v1.json`) and answer records.

One item of the JSON list::

    {"id": ..., "image_info": {"file_path": str, "height": int, "width": int},
     "text_q": "Is Region [0] smaller than Region [1]?",
     "conversations": [{"from": "human", "value": "<image>\\nIs <mask> smaller than <mask>?"},
                       {"from": "gpt", "value": "<reference answer with Region [i]>"}],
     "rle": [COCO RLE per <mask>], "bbox": [[x1, y1, x2, y2] per <mask>],
     "qa_info": {"type": "qualitative" | "quantitative", "category": "small_predicate"}}

RLE "counts" may be a compressed string or an uncompressed list of run lengths (column-major, as
COCO). When a region's RLE cannot be decoded (or does not match the image size) its bbox is used
instead, and that is logged. Answer records are the JSONL lines of the reference generator
(question_id, image, question, pred, gt, model_id, qa_info), plus optional extra fields.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from spatialgeo_core.answer_parsing import (
    category_kind,
    parse_choice,
    parse_clock_hours,
    parse_distance_m,
    parse_predicate,
)
from spatialgeo_core.errors import InvalidRegionError, SpatialGeoError
from spatialgeo_core.limits import check_mask_pixels
from spatialgeo_core.types import Region

logger = logging.getLogger(__name__)

QA_TYPES = ("qualitative", "quantitative")


class BenchFormatError(SpatialGeoError, ValueError):
    """A bench item is malformed; the message names the item id (or its index in the list)."""


@dataclass(frozen=True)
class Turn:
    """One conversation turn: speaker is "human" or "gpt" (the JSON key is "from")."""

    speaker: str
    value: str


@dataclass
class BenchItem:
    """One SpatialRGPT-Bench question, with its regions decoded."""

    id: str | int
    file_path: str                     # relative to the Omni3D datasets root
    height: int
    width: int
    text_q: str                        # the question with "Region [i]" names
    conversations: list[Turn]
    regions: list[Region]              # index i is "Region [i]"
    qa_type: str                       # "qualitative" | "quantitative"
    category: str
    region_sources: list[str] = field(default_factory=list)   # per region: "rle" | "bbox"

    @property
    def question(self) -> str:
        return self.text_q

    @property
    def reference_answer(self) -> str:
        """The first "gpt" turn."""
        return next(t.value for t in self.conversations if t.speaker == "gpt")


# ------------------------------------------------------------------------------------------
# RLE

def check_rle(rle: dict, height: int, width: int) -> None:
    """ValueError unless `rle` is a usable COCO RLE of a non-empty height x width mask, found
    without decoding the mask: the size is checked against the pixel limit
    (spatialgeo_core.limits; InvalidRegionError) and the run lengths are read from the counts."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError("an RLE is a dict with 'size' and 'counts'")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or list(size) != [height, width]:
        raise ValueError(f"RLE size {size} does not match the image ({height}, {width})")
    check_mask_pixels(height, width, "RLE mask")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError("uncompressed RLE counts must be integers >= 0")
        runs = counts
    elif isinstance(counts, (str, bytes)):
        runs = _compressed_runs(counts.decode("latin-1") if isinstance(counts, bytes) else counts)
    else:
        raise ValueError(f"RLE counts of type {type(counts).__name__}")
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(f"RLE counts do not sum to {height}x{width} = {height * width}")
    if not any(runs[1::2]):
        raise ValueError("decoded mask is empty")


def _compressed_runs(counts: str) -> list[int]:
    """The run lengths of COCO's compressed counts string: each number in 5-bit groups (+ 48,
    bit 0x20 = more groups follow, bit 0x10 of the last = negative), numbers from the third on
    stored as the difference to the number two before."""
    runs: list[int] = []
    i, n = 0, len(counts)
    while i < n:
        x, shift, more = 0, 0, True
        while more:
            if i >= n:
                raise ValueError("RLE counts string ends inside a number")
            c = ord(counts[i]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts holds {counts[i]!r}, not a COCO RLE character")
            x |= (c & 0x1F) << shift
            more, i, shift = bool(c & 0x20), i + 1, shift + 5
            if not more and c & 0x10:
                x |= -1 << shift
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


def decode_rle(rle: dict, height: int, width: int) -> np.ndarray:
    """COCO RLE (compressed string or list counts) -> [H, W] bool mask; ValueError if unusable
    (InvalidRegionError, a ValueError, when it is larger than the pixel limit)."""
    check_rle(rle, height, width)
    counts = rle["counts"]
    if isinstance(counts, list):
        coded = mask_utils.frPyObjects({"size": [height, width], "counts": counts},
                                       height, width)
    else:
        coded = {"size": [height, width],
                 "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    mask = np.asarray(mask_utils.decode(coded), dtype=bool)
    if mask.shape != (height, width):
        raise ValueError(f"decoded mask has shape {mask.shape}, expected ({height}, {width})")
    return mask


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """[H, W] mask -> COCO RLE dict; compressed "counts" is an ASCII str, else a list of ints."""
    m = np.asarray(mask, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    height, width = m.shape
    if compressed:
        coded = mask_utils.encode(np.asfortranarray(m))
        return {"size": [height, width], "counts": coded["counts"].decode("ascii")}
    flat = m.flatten(order="F")                                     # [H*W], column-major as COCO
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]                                           # counts start with zeros
    return {"size": [height, width], "counts": [int(r) for r in runs]}


def _box_mask(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return mask


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


# ------------------------------------------------------------------------------------------
# Reading

def _fail(item_id, what: str) -> BenchFormatError:
    return BenchFormatError(f"bench item {item_id!r}: {what}")


def _clamped_box(item_id, raw, width: int, height: int):
    if (not isinstance(raw, (list, tuple)) or len(raw) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
            or not all(math.isfinite(v) for v in raw)):
        raise _fail(item_id, f"a bbox is [x1, y1, x2, y2], got {raw!r}")
    x1, y1, x2, y2 = (float(v) for v in raw)
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if not (x2 > x1 and y2 > y1):
        return None
    return (x1, y1, x2, y2)


def parse_bench_item(obj: dict, index: int | None = None) -> BenchItem:
    """One JSON item -> BenchItem; BenchFormatError naming the item when it is malformed."""
    label = f"#{index}" if index is not None else "?"
    if not isinstance(obj, dict):
        raise BenchFormatError(f"bench item {label} is a {type(obj).__name__}, not an object")
    item_id = obj.get("id")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise BenchFormatError(f"bench item {label} has no valid 'id'")

    info = obj.get("image_info")
    if not isinstance(info, dict):
        raise _fail(item_id, "missing 'image_info'")
    file_path, height, width = info.get("file_path"), info.get("height"), info.get("width")
    if not isinstance(file_path, str) or not file_path:
        raise _fail(item_id, "image_info.file_path must be a non-empty string")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _fail(item_id, f"image_info.{name} must be a positive integer, got {value!r}")

    text_q = obj.get("text_q")
    if not isinstance(text_q, str) or not text_q.strip():
        raise _fail(item_id, "'text_q' must be a non-empty string")
    raw_turns = obj.get("conversations")
    if not isinstance(raw_turns, list):
        raise _fail(item_id, "'conversations' must be a list")
    turns = []
    for turn in raw_turns:
        if (not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt")
                or not isinstance(turn.get("value"), str)):
            raise _fail(item_id, f"a conversation turn is {{'from': human|gpt, 'value': str}}, "
                                 f"got {turn!r}")
        turns.append(Turn(turn["from"], turn["value"]))
    if not any(t.speaker == "gpt" for t in turns) or not any(t.speaker == "human" for t in turns):
        raise _fail(item_id, "'conversations' needs a human and a gpt turn")

    qa = obj.get("qa_info")
    if not isinstance(qa, dict) or qa.get("type") not in QA_TYPES:
        raise _fail(item_id, f"qa_info.type must be one of {QA_TYPES}, got {qa!r}")
    category = qa.get("category")
    try:
        kind = category_kind(category)
    except ValueError as exc:
        raise _fail(item_id, str(exc)) from exc
    if (kind in ("predicate", "choice")) != (qa["type"] == "qualitative"):
        raise _fail(item_id, f"category {category!r} does not belong to type {qa['type']!r}")

    rles, boxes = obj.get("rle"), obj.get("bbox")
    for name, value in (("rle", rles), ("bbox", boxes)):
        if value is not None and not isinstance(value, list):
            raise _fail(item_id, f"'{name}' must be a list")
    if rles and boxes and len(rles) != len(boxes):
        raise _fail(item_id, f"{len(rles)} RLE masks but {len(boxes)} boxes")
    n_regions = len(boxes or rles or [])
    n_masks = sum(t.value.count("<mask>") for t in turns if t.speaker == "human")
    if n_masks != n_regions:
        logger.warning("bench item %r: %d <mask> tokens but %d regions", item_id, n_masks,
                       n_regions)

    regions, sources = [], []
    for i in range(n_regions):
        box = _clamped_box(item_id, boxes[i], width, height) if boxes else None
        mask = None
        if rles:
            try:
                mask = decode_rle(rles[i], height, width)
            except ValueError as exc:
                logger.warning("bench item %r region %d: RLE not usable (%s); using its bbox",
                               item_id, i, exc)
        if mask is None and box is None:
            raise _fail(item_id, f"region {i} has neither a decodable RLE nor a non-empty bbox")
        region = Region(box=box, mask=mask)
        try:
            region.validate(width, height)
        except InvalidRegionError as exc:
            raise _fail(item_id, f"region {i}: {exc}") from exc
        regions.append(region)
        sources.append("rle" if mask is not None else "bbox")

    return BenchItem(id=item_id, file_path=file_path, height=height, width=width, text_q=text_q,
                     conversations=turns, regions=regions, qa_type=qa["type"], category=category,
                     region_sources=sources)


def read_bench(path: str | Path) -> list[BenchItem]:
    """Read a SpatialRGPT-Bench JSON file (a list of items)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BenchFormatError(f"{path} must hold a JSON list of items, got {type(data).__name__}")
    items = [parse_bench_item(obj, index=i) for i, obj in enumerate(data)]
    fallbacks = sum(src == "bbox" for item in items for src in item.region_sources)
    logger.info("read %d bench items from %s (%d regions from bbox)", len(items), path, fallbacks)
    return items


# ------------------------------------------------------------------------------------------
# Writing

def bench_item_to_dict(item: BenchItem, compressed_rle: bool = True) -> dict:
    """BenchItem -> the JSON object of the bench format (masks re-encoded as RLE)."""
    rles, boxes = [], []
    for region in item.regions:
        if region.mask is not None:
            mask = np.asarray(region.mask, dtype=bool)
            box = region.box if region.box is not None else _mask_box(mask)
        else:
            box = region.box
            mask = _box_mask(box, item.height, item.width)
        rles.append(encode_rle(mask, compressed=compressed_rle))
        boxes.append([float(v) for v in box])
    return {
        "id": item.id,
        "image_info": {"file_path": item.file_path, "height": item.height, "width": item.width},
        "text_q": item.text_q,
        "conversations": [{"from": t.speaker, "value": t.value} for t in item.conversations],
        "rle": rles,
        "bbox": boxes,
        "qa_info": {"type": item.qa_type, "category": item.category},
    }


def write_bench(items: Iterable[BenchItem], path: str | Path, compressed_rle: bool = True) -> Path:
    """Write items as a SpatialRGPT-Bench JSON list; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [bench_item_to_dict(item, compressed_rle=compressed_rle) for item in items]
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------
# Reference answers and answer records

def reference_value(item: BenchItem) -> bool | str | float | None:
    """What the reference answer says: yes/no (predicate), the chosen region (choice), meters
    (distances and sizes) or clock hours (direction); None when it cannot be read."""
    kind = category_kind(item.category)
    answer = item.reference_answer
    if kind == "predicate":
        return parse_predicate(answer, item.category, item.text_q)
    if kind == "choice":
        return parse_choice(answer, item.text_q, item.category)
    if kind == "distance":
        return parse_distance_m(answer)
    return parse_clock_hours(answer)


def answer_record(item: BenchItem, prediction: str, model_id: str, **extra) -> dict:
    """The reference generator's JSONL record of one answer, plus `extra` (e.g. latency_ms)."""
    record = {
        "question_id": item.id,
        "image": item.file_path,
        "question": item.text_q,
        "pred": prediction,
        "gt": item.reference_answer,
        "model_id": model_id,
        "qa_info": {"type": item.qa_type, "category": item.category},
    }
    record.update(extra)
    return record


def write_answer_records(records: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def read_answer_records(path: str | Path) -> list[dict]:
    """Read a JSONL file of answer records (blank lines skipped)."""
    records = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchFormatError(f"{path}:{lineno} is not valid JSON: {exc}") from exc
    return records
