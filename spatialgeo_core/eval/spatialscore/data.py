"""The SpatialScore v0 data format, its subsets, and the question asked for an item.

A v0 file (`SpatialScore.json`, `SpatialScore-Hard.json`) is one JSON list of items::

    {"index": 23080, "category": "Depth and Distance", "subcategory": "Absolute",
     "question_type": "open-ended",            # or "multi-choice", "judgment"
     "input_modality": "single-image",         # or "multi-images", "video"
     "question": "How deep is the area defined by the bounding box coordinates (588, 433, 713,
                  529), measured in meters?\\n...",   # options, when any, are inline
     "answer": "1.72 meters",                  # "B", "(B)", "Yes", "4", "1.72 meters"
     "img_paths": ["./dataset/VGBench/depth_vqa/depth_vqa_0137.jpg"],
     "source": "VGBench", "index_origin": 137, "category_origin": "metric_depth_vqa"}

`img_paths` are relative to the folder that holds `dataset/` (upstream runs from `version_0/`):
that folder is `--root`. Saved predictions (`--score-only`) are such items with the model's raw
output in `pred_answer`; upstream's own result files (`all_results.json`), which name the index
`id` and the reference `gt_answer`, are read too.

The CVPR 2026 version of SpatialScore has a data format that is not public: a file that is not a
v0 list is refused with a message saying so, rather than read wrongly.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spatialgeo_core.errors import SpatialGeoError
from spatialgeo_core.eval.spatialscore.scoring import QUESTION_TYPES
from spatialgeo_core.types import Region

MODALITIES = ("single-image", "multi-images", "video")
SUBSETS = ("all", "vgbench", "hard")
VGBENCH = "VGBench"
HARD_FILE = "SpatialScore-Hard.json"
_V0_KEYS = ("question_type", "input_modality", "img_paths")
_NOT_V0 = ("is not in the SpatialScore v0 format (a JSON list of items with question_type, "
           "input_modality and img_paths): the CVPR 2026 version's data format is not public "
           "and is not supported; use the v0 files (SpatialScore.json, SpatialScore-Hard.json)")

# upstream's per-source instruction, placed before the question (`process_model_input` of
# version_0/test_qwen.py; "\s" and "\d" stand as written in its non-raw strings)
CHOICE_INSTRUCTION = (
    "**Please select the most appropriate answer from options (A), (B), (C), (D), (E), or (F).**"
    "\n**Respond ONLY with the letter and its parentheses, for example: (A)**\n\nQuestion: ")
CONCISE_INSTRUCTION = ("**Answer concisely with a single word, number, or option (e.g., yes, "
                       "no, 5, 2.2, A).**\n\nQuestion: ")
LENGTH_INSTRUCTION = (
    "You will be provided with a question and a 2D image. The question involves measuring the "
    "precise distance in 3D space through a 2D image. You will answer the question by providing "
    "a numeric answer consisting of a scalar and a distance unit in the format of "
    "**\\scalar{scalar} \\distance_unit{distance unit}** at the end of your response.\n"
    "Let's think step by step and start by finding good reference objects or object parts in "
    "the image.\n\nQuestion:")
_INSTRUCTION_BY_SOURCE = {
    **dict.fromkeys(("cvbench", "MMIU", "BLINK", "3DSRBench", "MMVP"), CHOICE_INSTRUCTION),
    **dict.fromkeys(("spatialbench", "VSR-ZeroShot", "VSR-Random", "SpatialSense",
                     "VSI-Bench_8", "RealWorldQA"), CONCISE_INSTRUCTION),
    **dict.fromkeys(("QSpatialBench-Plus", "QSpatialBench-ScanNet"), LENGTH_INSTRUCTION),
}

# "(x1, y1, x2, y2)": four numbers in parentheses (3-D points have three and are left alone)
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
BOX_TEXT = re.compile(r"\(" + ",".join([_NUM] * 4) + r"\)")


class SpatialScoreFormatError(SpatialGeoError, ValueError):
    """The file is not SpatialScore v0 data, or one of its items is malformed (the message names
    the item)."""


@dataclass(frozen=True)
class SpatialScoreItem:
    """One v0 item, checked; `raw` is the object as read (kept in the result records)."""

    index: int
    question_type: str                        # lower case, one of scoring.QUESTION_TYPES
    input_modality: str
    question: str
    answer: str
    img_paths: tuple[str, ...]
    source: str
    category: str
    raw: dict
    pred_answer: str | None = None            # saved predictions only

    @property
    def id(self) -> str:
        return str(self.index)


@dataclass(frozen=True)
class Entry:
    """An item of the selection: parsed, or the error that kept it from parsing. `index` is its
    position in the selection (what sharding uses), `id` its v0 index as a string."""

    index: int
    id: str
    item: SpatialScoreItem | None = None
    error: SpatialScoreFormatError | None = None

    @property
    def skip_reason(self) -> str | None:
        """Why the pipeline does not answer it (it answers about one image), or None."""
        if self.item is None or self.item.input_modality == "single-image":
            return None
        return (f"{self.item.input_modality}: {len(self.item.img_paths)} images, and the "
                f"pipeline answers about one image")


def instruction(source: str, question_type: str) -> str:
    """Upstream's instruction for an item (VGBench: the length instruction for open-ended items,
    the concise one otherwise); SpatialScoreFormatError for a source upstream has none for (its
    script stops with "Unsupported dataset name")."""
    if source == VGBENCH:
        return LENGTH_INSTRUCTION if question_type == "open-ended" else CONCISE_INSTRUCTION
    try:
        return _INSTRUCTION_BY_SOURCE[source]
    except KeyError:
        raise SpatialScoreFormatError(
            f"source {source!r} has no instruction in SpatialScore v0 (known: "
            f"{', '.join(sorted([VGBENCH, *_INSTRUCTION_BY_SOURCE]))})") from None


def _text(obj: dict, key: str, label: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise SpatialScoreFormatError(f"item {label}: '{key}' must be a non-empty string, got "
                                      f"{value!r}")
    return value


def parse_item(obj, position: int, predictions: bool = False) -> SpatialScoreItem:
    """One v0 item -> SpatialScoreItem; SpatialScoreFormatError naming it when it is malformed.
    predictions: the item must carry `pred_answer`, and upstream's result names (`id`,
    `gt_answer`) stand for `index` and `answer` where those are absent."""
    label = f"#{position}"
    if not isinstance(obj, dict):
        raise SpatialScoreFormatError(f"item {label} is a {type(obj).__name__}, not an object")
    index = obj.get("index", obj.get("id") if predictions else None)
    if not isinstance(index, int) or isinstance(index, bool):
        raise SpatialScoreFormatError(f"item {label} has no integer 'index'")
    label = f"{index} ({label})"
    qtype = _text(obj, "question_type", label)
    if qtype.lower() not in QUESTION_TYPES:
        raise SpatialScoreFormatError(f"item {label}: unknown question_type {qtype!r} "
                                      f"(v0 has {', '.join(QUESTION_TYPES)})")
    modality = _text(obj, "input_modality", label)
    if modality not in MODALITIES:
        raise SpatialScoreFormatError(f"item {label}: unknown input_modality {modality!r} "
                                      f"(v0 has {', '.join(MODALITIES)})")
    paths = obj.get("img_paths")
    if (not isinstance(paths, list) or not paths
            or not all(isinstance(p, str) and p.strip() for p in paths)):
        raise SpatialScoreFormatError(f"item {label}: 'img_paths' must be a non-empty list of "
                                      f"paths, got {paths!r}")
    if modality == "single-image" and len(paths) != 1:
        raise SpatialScoreFormatError(f"item {label}: a single-image item with {len(paths)} "
                                      f"img_paths")
    answer_key = "answer" if "answer" in obj or not predictions else "gt_answer"
    pred = None
    if predictions:
        pred = obj.get("pred_answer")
        if not isinstance(pred, str):
            raise SpatialScoreFormatError(f"item {label}: 'pred_answer' (the model's raw "
                                          f"output) must be a string, got {pred!r}")
    return SpatialScoreItem(
        index=index, question_type=qtype.lower(), input_modality=modality,
        question=_text(obj, "question", label), answer=_text(obj, answer_key, label),
        img_paths=tuple(paths), source=_text(obj, "source", label),
        category=_text(obj, "category", label, default="unknown"), raw=obj, pred_answer=pred)


# -------------------------------------------------------------------------------------------------
# Files and subsets


def _read_json(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpatialScoreFormatError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpatialScoreFormatError(f"cannot read {what} {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if path.suffix == ".jsonl":
            return _read_jsonl(text, path)
        raise SpatialScoreFormatError(f"{what} {path} is not valid JSON ({exc}); it "
                                      f"{_NOT_V0}") from exc


def _read_jsonl(text: str, path: Path) -> list:
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SpatialScoreFormatError(f"{path}:{lineno} is not valid JSON: {exc}") \
                    from exc
    return items


def read_v0(path: str | Path, what: str = "data file") -> list:
    """The raw items of a v0 file (a JSON list; JSONL for a .jsonl file). Refuses a file that is
    not a list of v0 items (the CVPR 2026 format among them) with SpatialScoreFormatError."""
    path = Path(path)
    data = _read_json(path, what)
    if not isinstance(data, list):
        raise SpatialScoreFormatError(f"{what} {path} holds a JSON {type(data).__name__}: it "
                                      f"{_NOT_V0}")
    if not data:
        raise SpatialScoreFormatError(f"{what} {path} holds no items")
    if not any(isinstance(o, dict) and any(k in o for k in _V0_KEYS) for o in data):
        raise SpatialScoreFormatError(f"{what} {path} {_NOT_V0}")
    return data


def hard_indices(data_path: Path, hard_path: str | Path | None) -> set | None:
    """The v0 indices of SpatialScore-Hard (from --hard, else SpatialScore-Hard.json beside the
    data file); None when the data file is that file itself (every item is in the subset)."""
    data_path = Path(data_path)
    path = Path(hard_path) if hard_path else data_path.with_name(HARD_FILE)
    if path.resolve() == data_path.resolve():
        return None
    if not path.exists():
        raise SpatialScoreFormatError(
            f"--subset hard needs {HARD_FILE} (the hard items' indices): not found at {path}; "
            f"give it with --hard FILE, or pass it as --data")
    return {o.get("index") for o in read_v0(path, "hard-subset file") if isinstance(o, dict)}


def select(data: list, subset: str, hard: set | None = None, limit: int | None = None) -> list:
    """The raw items of a subset ("all", "vgbench": source VGBench, "hard": index in `hard`,
    None meaning all), in file order, then the first `limit` of them."""
    if subset not in SUBSETS:
        raise SpatialScoreFormatError(f"--subset must be one of {SUBSETS}, got {subset!r}")
    if subset == "vgbench":
        data = [o for o in data if isinstance(o, dict) and o.get("source") == VGBENCH]
    elif subset == "hard" and hard is not None:
        data = [o for o in data if isinstance(o, dict) and o.get("index") in hard]
    if limit is not None:
        data = data[:max(0, limit)]
    return data


def entries(data: list, predictions: bool = False) -> list[Entry]:
    """Parse the selected items; a malformed one, or one whose index repeats an earlier item's,
    becomes an Entry with its error (recorded, not fatal)."""
    out: list[Entry] = []
    seen: set[str] = set()
    for i, obj in enumerate(data):
        try:
            item = parse_item(obj, i, predictions)
        except SpatialScoreFormatError as exc:
            raw = obj.get("index") if isinstance(obj, dict) else None
            qid = str(raw) if isinstance(raw, int) and str(raw) not in seen else f"#{i}"
            seen.add(qid)
            out.append(Entry(i, qid, error=exc))
            continue
        if item.id in seen:
            out.append(Entry(i, f"#{i}", error=SpatialScoreFormatError(
                f"item #{i}: index {item.index} repeats an earlier item")))
            continue
        seen.add(item.id)
        out.append(Entry(i, item.id, item=item))
    return out


def image_path(root: Path, rel: str) -> Path:
    """root / an item's img_path; SpatialScoreFormatError for an absolute path or one that
    leaves root."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise SpatialScoreFormatError(f"img_path {rel!r} must be relative to --root and stay "
                                      f"inside it")
    return Path(root) / pure


# -------------------------------------------------------------------------------------------------
# --draw-boxes


def boxes_as_regions(question: str, width: int, height: int) -> tuple[str, list[Region]]:
    """The boxes written in a question as "(x1, y1, x2, y2)", as set-of-marks regions, and the
    question with each such box named "Region [i]" (i in order of first mention; a box written
    twice is one region). A tuple that is not a box with x2 > x1 and y2 > y1 overlapping the
    width x height image is left as written; a box reaching past the image is clipped to it."""
    regions: list[Region] = []
    names: dict[tuple[float, ...], str] = {}

    def name(m: re.Match) -> str:
        x1, y1, x2, y2 = (float(v) for v in m.groups())
        key = (x1, y1, x2, y2)
        if key not in names:
            box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
            if not (box[2] > box[0] and box[3] > box[1]):
                return m.group(0)
            names[key] = f"Region [{len(regions)}]"
            regions.append(Region(box=box))
        return names[key]

    return BOX_TEXT.sub(name, question), regions
