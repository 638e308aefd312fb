"""questions.jsonl: the questions of a rosbag evaluation, one JSON object per line.

    {"id": "scene3-q0",                      # unique, str (an int is taken as its decimal str)
     "stamp_ns": 1700000000100000000,        # header stamp of the frame asked about, or
     "stamp": {"sec": 1700000000, "nanosec": 100000000},     # the same as a builtin Time
     "frame_index": 1,                       # or: the n-th message (from 0) of the topic
     "topic": "/camera/image_raw",           # Image or CompressedImage; optional when the bag
                                             # has exactly one image topic
     "question": "How far is Region [0] from Region [1]?",
     "regions": [{"box": [x1, y1, x2, y2]}, {"mask_rle": {"size": [H, W], "counts": "..."}}],
     "reference": "Region [0] is 1.2 meters from Region [1].",
     "category": "distance_data",            # a SpatialRGPT-Bench category
     "type": "quantitative",                 # optional; must agree with the category
     "positions": [{"object_center_m": [x, y, z], "visible_median_m": [x, y, z]}, ...]}
                                             # optional: each region's 3D ground truth in the
                                             # camera optical frame (eval-bag scores positions)

A stamp (stamp_ns or stamp) or a frame_index is required; when both are given the stamp is used
(through the node's frame selection) and the index is kept for the record. Stamp 0 means "the
latest frame" to the node, which has no meaning for a recorded bag, so it is refused. A region
has a box, a COCO RLE mask ("counts" compressed str or a list of run lengths), or both; whether
it fits the image is checked against the frame it is asked about. A mask is checked when the
file is read (its size against spatialgeo_core.limits, its run lengths against its size) but
decoded only when its question is answered (`QuestionRecord.regions`), so a file of many masks
never holds them all in memory.

A malformed line does not stop the reading: it becomes a LineError naming its line number (and
its id when that could be read), which the runner records as an error result.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from spatialgeo_core.answer_parsing import category_kind
from spatialgeo_core.errors import InvalidRegionError, SpatialGeoError
from spatialgeo_core.eval.spatialrgpt.format import QA_TYPES, check_rle, decode_rle
from spatialgeo_core.types import Region

NS_PER_S = 1_000_000_000


class QuestionFormatError(SpatialGeoError, ValueError):
    """The questions file cannot be read, or one of its lines is malformed (the message names the
    file and line)."""


@dataclass(frozen=True)
class RegionSpec:
    """A region as written in the file: its box and its checked, not yet decoded, RLE."""

    box: tuple[float, float, float, float] | None = None
    mask_rle: dict | None = None

    def region(self) -> Region:
        """The Region, its mask decoded now (InvalidRegionError when it cannot be)."""
        mask = None
        if self.mask_rle is not None:
            height, width = self.mask_rle["size"]
            try:
                mask = decode_rle(self.mask_rle, height, width)          # [H, W] bool
            except ValueError as exc:
                raise InvalidRegionError(str(exc)) from exc
        return Region(box=self.box, mask=mask)


@dataclass(frozen=True)
class QuestionRecord:
    """One parsed line of questions.jsonl."""

    id: str
    line: int                                  # 1-based line number in the file
    question: str
    reference: str
    category: str
    qa_type: str                               # "qualitative" | "quantitative"
    region_specs: tuple[RegionSpec, ...] = ()
    stamp_ns: int | None = None                # header stamp of the frame (None: use the index)
    frame_index: int | None = None             # n-th message of the topic, from 0
    topic: str | None = None                   # None: the bag's only image topic
    positions: tuple[dict, ...] | None = None  # per region {truth name: [x, y, z] metres}

    @property
    def regions(self) -> tuple[Region, ...]:
        """The regions, masks decoded on each call (InvalidRegionError naming the region)."""
        out = []
        for i, spec in enumerate(self.region_specs):
            try:
                out.append(spec.region())
            except InvalidRegionError as exc:
                raise InvalidRegionError(f"Region [{i}]: {exc}") from exc
        return tuple(out)


@dataclass(frozen=True)
class LineError:
    """A line that could not be parsed."""

    line: int
    message: str                               # "FILE:LINE: what is wrong"
    id: str | None = None                      # the line's id, when it could be read

    @property
    def record_id(self) -> str:
        """The id its error result is stored under."""
        return self.id or f"line:{self.line}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _stamp(obj: dict) -> int | None:
    stamp_ns = obj.get("stamp_ns")
    if stamp_ns is not None and (not _is_int(stamp_ns) or stamp_ns < 0):
        raise ValueError(f"'stamp_ns' must be a non-negative integer, got {stamp_ns!r}")
    stamp = obj.get("stamp")
    if stamp is not None:
        if (not isinstance(stamp, dict) or not _is_int(stamp.get("sec"))
                or not _is_int(stamp.get("nanosec")) or stamp["sec"] < 0
                or not 0 <= stamp["nanosec"] < NS_PER_S):
            raise ValueError(f"'stamp' must be {{'sec': int >= 0, 'nanosec': 0 .. 999999999}}, "
                             f"got {stamp!r}")
        from_stamp = stamp["sec"] * NS_PER_S + stamp["nanosec"]
        if stamp_ns is not None and stamp_ns != from_stamp:
            raise ValueError(f"'stamp_ns' {stamp_ns} and 'stamp' {stamp} disagree")
        stamp_ns = from_stamp
    if stamp_ns == 0:
        raise ValueError("stamp 0 asks a running node for its latest frame, which has no "
                         "meaning for a recorded bag: give the frame's header stamp or "
                         "'frame_index'")
    return stamp_ns


def _region(raw, i: int) -> RegionSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"region {i} must be an object with 'box' and/or 'mask_rle', "
                         f"got {raw!r}")
    box = raw.get("box")
    rle = raw.get("mask_rle")
    if box is None and rle is None:
        raise ValueError(f"region {i} has neither 'box' nor 'mask_rle' (keys: {sorted(raw)})")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise ValueError(f"region {i}: 'box' is [x1, y1, x2, y2] in pixels, got {box!r}")
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"region {i}: box {box} is empty (need x2 > x1 and y2 > y1)")
        box = (x1, y1, x2, y2)
    if rle is not None:
        size = rle.get("size") if isinstance(rle, dict) else None
        if (not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size)
                or min(size) <= 0):
            raise ValueError(f"region {i}: 'mask_rle' is {{'size': [H, W], 'counts': ...}}, "
                             f"got size {size!r}")
        try:
            check_rle(rle, size[0], size[1])            # checked now, decoded when answered
        except ValueError as exc:
            raise ValueError(f"region {i}: {exc}") from exc
    return RegionSpec(box=box, mask_rle=rle)


def _text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def parse_question(obj, line: int = 0) -> QuestionRecord:
    """One decoded JSON line -> QuestionRecord; ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"a line holds one JSON object, got {type(obj).__name__}")
    qid = obj.get("id")
    if _is_int(qid):
        qid = str(qid)
    if not isinstance(qid, str) or not qid.strip():
        raise ValueError(f"'id' must be a non-empty string, got {qid!r}")
    stamp_ns = _stamp(obj)
    frame_index = obj.get("frame_index")
    if frame_index is not None and (not _is_int(frame_index) or frame_index < 0):
        raise ValueError(f"'frame_index' must be an integer >= 0, got {frame_index!r}")
    if stamp_ns is None and frame_index is None:
        raise ValueError("give the frame as 'stamp_ns' (or 'stamp') or as 'frame_index'")
    topic = obj.get("topic")
    if topic is not None and (not isinstance(topic, str) or not topic.strip()):
        raise ValueError(f"'topic' must be a non-empty string when given, got {topic!r}")
    question = _text(obj, "question")
    reference = _text(obj, "reference")
    category = obj.get("category")
    kind = category_kind(category)                  # ValueError naming the known categories
    derived = "qualitative" if kind in ("predicate", "choice") else "quantitative"
    qa_type = obj.get("type", derived)
    if qa_type not in QA_TYPES:
        raise ValueError(f"'type' must be one of {QA_TYPES}, got {qa_type!r}")
    if qa_type != derived:
        raise ValueError(f"category {category!r} is {derived}, but 'type' says {qa_type!r}")
    raw_regions = obj.get("regions", [])
    if not isinstance(raw_regions, list):
        raise ValueError(f"'regions' must be a list, got {type(raw_regions).__name__}")
    regions = tuple(_region(r, i) for i, r in enumerate(raw_regions))
    positions = _positions(obj.get("positions"), len(regions))
    return QuestionRecord(id=qid, line=line, question=question, reference=reference,
                          category=category, qa_type=qa_type, region_specs=regions,
                          stamp_ns=stamp_ns, frame_index=frame_index,
                          topic=topic.strip() if topic else None, positions=positions)


def _positions(raw, n: int) -> tuple[dict, ...] | None:
    """The optional 'positions' ground truth: one object per region, each value 3 numbers."""
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != n:
        raise ValueError(f"'positions' must be a list with one entry per region ({n}), "
                         f"got {raw!r}")
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not all(
                isinstance(v, list) and len(v) == 3 and all(_is_number(c) for c in v)
                for v in entry.values()):
            raise ValueError(f"positions[{i}] must map names to [x, y, z] in metres, "
                             f"got {entry!r}")
    return tuple(dict(entry) for entry in raw)


def read_questions(path: str | Path) -> tuple[list[QuestionRecord], list[LineError]]:
    """Parse a questions.jsonl file: (the questions, the lines that could not be parsed).

    Blank lines are skipped; a repeated id is an error of the later line. Raises
    QuestionFormatError only when the file itself cannot be read or holds no line at all.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QuestionFormatError(f"questions file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFormatError(f"cannot read questions file {path}: {exc}") from exc
    records: list[QuestionRecord] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}                   # id -> first line that used it
    # lines end at \n only: str.splitlines would also cut at U+2028 or U+0085 inside a string
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        qid = None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(LineError(lineno, f"{path}:{lineno}: not valid JSON: {exc}"))
            continue
        if isinstance(obj, dict) and (isinstance(obj.get("id"), str) or _is_int(obj.get("id"))):
            qid = str(obj["id"]).strip() or None
        if qid is not None and qid in seen:
            errors.append(LineError(lineno, f"{path}:{lineno}: id {qid!r} repeats line "
                                            f"{seen[qid]}"))
            continue
        if qid is not None:
            seen[qid] = lineno
        try:
            records.append(parse_question(obj, lineno))
        except ValueError as exc:
            errors.append(LineError(lineno, f"{path}:{lineno}: {exc}", qid))
    if not records and not errors:
        raise QuestionFormatError(f"questions file {path} holds no questions")
    return records, errors
