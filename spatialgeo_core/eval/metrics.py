"""SpatialRGPT-Bench metrics, scored by rules (default) or by an optional OpenAI-compatible judge.

Definitions follow the reference scorer (AnjieCheng/SpatialRGPT evaluate_spatial_with_gpt4.py):

- qualitative (`*_predicate`, `*_choice`): accuracy per group below/above, left/right, big/small,
  tall/short, wide/thin, behind/front, and overall (micro: all items; macro: mean of the groups);
- quantitative (distance_data, horizontal_distance_data, vertical_distance_data, width_data,
  height_data): success iff 0.75*gt <= pred <= 1.25*gt; absolute relative error
  |pred - gt| / (gt + 1e-4) averaged over the items whose answers were read; an unreadable answer
  counts as unsuccessful and is left out of the error average (its count is reported);
- direction: circular hour error min(d, 12 - d), success iff <= 1 hour, mean error also in degrees
  (x30).

Unlike the reference scorer, a failed judge call never reuses the previous item's mark (the item
is counted as a failure), tall/short and wide/thin have one bucket each, and questions are put into
the judge prompt verbatim (never passed through str.format).
"""
from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

from spatialgeo_core.answer_parsing import (
    QUANTITATIVE_CATEGORIES,
    RELATION_GROUP,
    category_kind,
    category_relation,
    parse_choice,
    parse_clock_hours,
    parse_distance_m,
    parse_predicate,
)
from spatialgeo_core.errors import SpatialGeoError

logger = logging.getLogger(__name__)

REL_ERROR_EPS = 1e-4           # as the reference: |pred - gt| / (gt + 1e-4)
SUCCESS_LOW, SUCCESS_HIGH = 0.75, 1.25
DIRECTION_TOLERANCE_H = 1.0
DEGREES_PER_HOUR = 30.0


class JudgeError(SpatialGeoError):
    """A judge call failed (network, timeout, HTTP status, or a reply not in the JSON asked)."""


@dataclass(frozen=True)
class JudgeConfig:
    """An OpenAI-compatible chat endpoint used as judge instead of the rules (off by default)."""

    judge_url: str                 # API base, e.g. "http://127.0.0.1:8000/v1"; + /chat/completions
    model: str                     # model name sent in the request
    api_key: str | None = None     # sent as "Authorization: Bearer ..." when given
    timeout_s: float = 30.0        # per request

    def __post_init__(self):
        parsed = urlparse(self.judge_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"judge_url must be an http(s) URL, got {self.judge_url!r}")
        if not self.model:
            raise ValueError("model must be a non-empty model name")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class ItemScore:
    """The score of one bench item."""

    category: str
    kind: str                                   # "predicate" | "choice" | "distance" | "direction"
    group: str                                  # accuracy group ("left/right") or the category
    success: bool
    parsed: bool                                # reference and prediction were both read
    reference_parsed: bool
    prediction_value: float | bool | str | None = None   # meters, hours, yes/no or chosen label
    reference_value: float | bool | str | None = None
    error: float | None = None                  # distance: relative error; direction: hours
    source: str = "rules"                       # "rules" | "judge"
    detail: str = ""
    judge_failed: bool = False                  # the judge call failed (not the reference)

    def to_dict(self) -> dict:
        return asdict(self)


def _group(category: str, kind: str) -> str:
    if kind in ("predicate", "choice"):
        return RELATION_GROUP[category_relation(category)]
    return category


def _distance_outcome(gt: float, pred: float) -> tuple[bool, float]:
    success = SUCCESS_LOW * gt <= pred <= SUCCESS_HIGH * gt
    return success, abs(pred - gt) / (gt + REL_ERROR_EPS)


def _hour_error(gt: float, pred: float) -> float:
    d = abs(gt - pred) % 12.0
    return min(d, 12.0 - d)


def _from_values(category: str, kind: str, gt, pred, source: str) -> ItemScore:
    group = _group(category, kind)
    if gt is None:
        logger.warning("%s: the reference answer could not be read", category)
        return ItemScore(category, kind, group, False, False, False, pred, None, None, source,
                         "reference not read")
    if pred is None:
        return ItemScore(category, kind, group, False, False, True, None, gt, None, source,
                         "prediction not read")
    if kind == "distance":
        success, error = _distance_outcome(float(gt), float(pred))
    elif kind == "direction":
        error = _hour_error(float(gt), float(pred))
        success = error <= DIRECTION_TOLERANCE_H
    else:
        success, error = gt == pred, None
    return ItemScore(category, kind, group, bool(success), True, True, pred, gt, error, source)


def score_item(category: str, question: str, prediction: str, reference: str, *,
               default_unit: str | None = None, judge: JudgeConfig | None = None) -> ItemScore:
    """Score one answer against the reference answer of a bench item.

    default_unit: unit of a bare number in the prediction ("m", "cm", ...); None: such a number is
    unreadable. judge: score with an LLM judge instead of the rules.
    """
    kind = category_kind(category)
    if judge is not None:
        return _judge_item(judge, category, kind, question, prediction, reference)
    if kind == "predicate":
        gt = parse_predicate(reference, category, question)
        pred = parse_predicate(prediction, category, question)
    elif kind == "choice":
        gt = parse_choice(reference, question, category)
        pred = parse_choice(prediction, question, category)
    elif kind == "distance":
        gt = parse_distance_m(reference)
        pred = parse_distance_m(prediction, default_unit=default_unit)
    else:
        gt = parse_clock_hours(reference)
        pred = parse_clock_hours(prediction)
    return score_values(category, kind, gt, pred)


def score_values(category: str, kind: str, gt, pred) -> ItemScore:
    """The rules' outcome for values already read (gt: the reference's, pred: the answer's):
    a length within SUCCESS_LOW-SUCCESS_HIGH of gt, a clock direction within
    DIRECTION_TOLERANCE_H, else equal."""
    return _from_values(category, kind, gt, pred, "rules")


def score_records(records: Iterable[dict], *, default_unit: str | None = None,
                  judge: JudgeConfig | None = None) -> list[ItemScore]:
    """Score answer records in the reference generator's JSONL layout.

    Each record has "question", "pred", "gt" and "qa_info": {"category": ...}.
    """
    scores = []
    for i, rec in enumerate(records):
        try:
            category = rec["qa_info"]["category"]
            question, pred, gt = rec["question"], rec["pred"], rec["gt"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"answer record {i} lacks field {exc}") from exc
        scores.append(score_item(category, question, pred, gt, default_unit=default_unit,
                                 judge=judge))
    return scores


# ------------------------------------------------------------------------------------------
# Aggregation

def _pct(num: int, den: int) -> float | None:
    return None if den == 0 else 100.0 * num / den


def _mean(values: list[float]) -> float | None:
    return None if not values else sum(values) / len(values)


def _qual_block(items: list[ItemScore]) -> dict:
    correct = sum(s.success for s in items)
    return {
        "accuracy_pct": _pct(correct, len(items)),
        "correct": correct,
        "total": len(items),
        "parse_failures": sum(not s.parsed for s in items),
    }


def _quant_block(items: list[ItemScore]) -> dict:
    parsed = [s for s in items if s.parsed]
    deltas = [max(s.prediction_value / s.reference_value, s.reference_value / s.prediction_value)
              for s in parsed if s.prediction_value > 0 and s.reference_value > 0]
    return {
        "success_pct": _pct(sum(s.success for s in items), len(items)),
        "abs_rel": _mean([s.error for s in parsed]),
        "delta_1.25_pct": _pct(sum(d < 1.25 for d in deltas), len(parsed)),
        "successes": sum(s.success for s in items),
        "total": len(items),
        "parsed": len(parsed),
        "parse_failures": len(items) - len(parsed),
    }


def _direction_block(items: list[ItemScore]) -> dict:
    parsed = [s for s in items if s.parsed]
    mean_h = _mean([s.error for s in parsed])
    return {
        "success_pct": _pct(sum(s.success for s in items), len(items)),
        "mean_error_hours": mean_h,
        "mean_error_deg": None if mean_h is None else mean_h * DEGREES_PER_HOUR,
        "successes": sum(s.success for s in items),
        "total": len(items),
        "parsed": len(parsed),
        "parse_failures": len(items) - len(parsed),
    }


def aggregate(scores: Iterable[ItemScore]) -> dict:
    """Per-category, per-group and overall numbers (JSON-serialisable; None where no items).

    Percentages are in [0, 100]; "abs_rel" is a fraction. Only groups/categories with items appear.
    """
    scores = list(scores)
    qual = [s for s in scores if s.kind in ("predicate", "choice")]
    quant = [s for s in scores if s.kind == "distance"]
    direction = [s for s in scores if s.kind == "direction"]

    groups = {g: _qual_block([s for s in qual if s.group == g])
              for g in sorted({s.group for s in qual})}
    group_accs = [b["accuracy_pct"] for b in groups.values()]
    qual_overall = _qual_block(qual)
    qual_overall["mean_group_accuracy_pct"] = _mean(group_accs)

    quant_categories = {c: _quant_block([s for s in quant if s.category == c])
                        for c in QUANTITATIVE_CATEGORIES if any(s.category == c for s in quant)}
    return {
        "num_items": len(scores),
        "parse_failures": sum(not s.parsed for s in scores),
        "reference_parse_failures": sum(not s.reference_parsed for s in scores),
        "judge_failures": sum(s.judge_failed for s in scores),
        "qualitative": {
            "groups": groups,
            "categories": {c: _qual_block([s for s in qual if s.category == c])
                           for c in sorted({s.category for s in qual})},
            "overall": qual_overall,
        },
        "quantitative": {"categories": quant_categories, "overall": _quant_block(quant)},
        "direction": _direction_block(direction),
    }


# ------------------------------------------------------------------------------------------
# Optional judge

_SYSTEM = "You are a helpful assistant designed to output JSON."
_QUAL_TASK = (
    "You evaluate a response to a spatial question against the correct answer.\n"
    "Output JSON {\"your_mark\": 1} when the response states the same fact as the answer "
    "(the same yes/no, or the same chosen region), else {\"your_mark\": 0}.\n\n"
    "Example:\nQuestion: Is Region [0] to the left of Region [1]?\n"
    "Answer: Incorrect, Region [0] is not on the left side of Region [1].\n"
    "Response: In fact, Region [0] is to the right of Region [1].\n{\"your_mark\": 1}\n\n"
    "Example:\nQuestion: Which is above, Region [0] or Region [1]?\nAnswer: Region [1] is above.\n"
    "Response: Region [0] is higher up.\n{\"your_mark\": 0}\n\n")
_DIST_TASK = (
    "You evaluate a response to a spatial question against the correct answer.\n"
    "Convert the length in the answer and in the response to meters (1 inch = 0.0254 m, "
    "1 foot = 0.3048 m, 1 cm = 0.01 m) and output JSON "
    "{\"answer_in_meters\": <float>, \"response_in_meters\": <float>}.\n\n"
    "Example:\nQuestion: What is the height of Region [1]?\n"
    "Answer: The height of Region [1] is 10.0 inches.\nResponse: It is 48.47 centimeters.\n"
    "{\"answer_in_meters\": 0.254, \"response_in_meters\": 0.4847}\n\n")
_DIR_TASK = (
    "You evaluate a response to a spatial question against the correct answer.\n"
    "Extract the clock direction (an integer 1-12) of the answer and of the response and output "
    "JSON {\"answer_direction\": <int>, \"response_direction\": <int>}.\n\n"
    "Example:\nQuestion: If you are at Region [0], where will you find Region [1]?\n"
    "Answer: Region [0] will find Region [1] around the 12 o'clock direction.\n"
    "Response: Region [1] is at 11 o'clock from Region [0].\n"
    "{\"answer_direction\": 12, \"response_direction\": 11}\n\n")


def _judge_json(cfg: JudgeConfig, prompt: str) -> dict:
    body = {
        "model": cfg.model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}],
    }
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    request = urllib.request.Request(cfg.judge_url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(body).encode("utf-8"), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            reply = json.loads(response.read().decode("utf-8"))
        content = reply["choices"][0]["message"]["content"]
        result = json.loads(content)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise JudgeError(f"judge request to {cfg.judge_url} failed: {exc}") from exc
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise JudgeError(f"judge reply is not the expected JSON: {exc}") from exc
    if not isinstance(result, dict):
        raise JudgeError(f"judge reply is not a JSON object: {content!r}")
    return result


def _number(result: dict, key: str) -> float:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise JudgeError(f"judge reply has no number {key!r}: {result}")
    try:
        number = float(value)
    except ValueError as exc:
        raise JudgeError(f"judge reply {key}={value!r} is not a number") from exc
    if not math.isfinite(number):
        raise JudgeError(f"judge reply {key}={value!r} is not finite")
    return number


def _judge_item(cfg: JudgeConfig, category: str, kind: str, question: str, prediction: str,
                reference: str) -> ItemScore:
    task = {"distance": _DIST_TASK, "direction": _DIR_TASK}.get(kind, _QUAL_TASK)
    prompt = (task + "Your turn:\nQuestion: " + question + "\nAnswer: " + reference
              + "\nResponse: " + prediction + "\n")
    group = _group(category, kind)
    try:
        result = _judge_json(cfg, prompt)
        if kind in ("predicate", "choice"):
            mark = _number(result, "your_mark")
            if mark not in (0.0, 1.0):
                raise JudgeError(f"judge mark must be 0 or 1, got {mark}")
            return ItemScore(category, kind, group, mark == 1.0, True, True, source="judge")
        if kind == "distance":
            gt, pred = _number(result, "answer_in_meters"), _number(result, "response_in_meters")
        else:
            gt, pred = _number(result, "answer_direction"), _number(result, "response_direction")
    except JudgeError as exc:
        logger.warning("judge failed on a %s item: %s", category, exc)
        return ItemScore(category, kind, group, False, False, True, source="judge",
                         detail=f"judge failed: {exc}", judge_failed=True)
    return _from_values(category, kind, gt, pred, "judge")
