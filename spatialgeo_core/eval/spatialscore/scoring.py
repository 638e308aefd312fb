"""SpatialScore v0 scoring without a judge, in two modes: `upstream` and `strict`.

`upstream` reproduces the rules of SpatialScore's v0 evaluation (haoningwu3639/SpatialScore,
`version_0/utils/util.py` and the scoring block of `version_0/test_qwen.py` /
`test_all-in-one.py`), quirks included, so that numbers compare with published ones. This is our
own code written from those rules; each function's docstring names the upstream behaviour it
reproduces. `strict` is the same but for three quirks:

- multiple choice: no fallback to the first letter a-f found anywhere in the answer
  (upstream reads "The chair" as option E);
- judgment: "right" is not a yes word (upstream reads "No, it is on the right" as yes);
- lengths: a unit outside the conversion table fails the item (upstream reads it as cm, so "3 km"
  is 3 cm and "2 or 3 meters" is 2 "or", i.e. 2 cm).

Everything else is shared, including upstream behaviours that are arguably quirks too (written
down where they happen): yes words are looked for before no words ("not correct" is yes), an open
answer counts as a length whenever its reference contains the letter "m" anywhere, the value and
the unit of a length are found by separate searches, a bare number in a length answer is wrong,
and numbers elsewhere must be exactly equal.

An item's score is 1.0 or 0.0, except VSI-Bench open answers, which score their mean relative
accuracy. Accuracy = 100 * sum(score) / N (upstream's `score_sum / total * 100`), overall, per
`source` and per `category` (and here also per `question_type`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

MODES = ("upstream", "strict")
QUESTION_TYPES = ("multi-choice", "judgment", "open-ended")

# the three upstream behaviours that strict mode drops (ItemScore.quirks names the ones that
# decided an upstream reading)
FIRST_LETTER = "first_letter_fallback"
RIGHT_AS_YES = "right_as_yes"
UNKNOWN_UNIT = "unknown_unit_as_cm"
QUIRKS = (FIRST_LETTER, RIGHT_AS_YES, UNKNOWN_UNIT)

# --- patterns shared by upstream's three extractors ------------------------------------------
_TAGS = re.compile(r"</?(?:CONCLUSION|conclusion|ANSWER|answer|ASSISTANT|assistant)>")
_ASSISTANT_LETTER = re.compile(r"ASSISTANT:\s*\(?([A-Fa-f])\)?")      # case-sensitive "ASSISTANT"

# --- multiple choice (extract_option) -------------------------------------------------------
_LONE_OPTION = re.compile(r"^[A-Fa-f]\.?$")
_CONCLUSION_OPTION = (
    re.compile(r"<conclusion>\s*\(([A-Fa-f])\).*?</conclusion>", re.IGNORECASE),
    re.compile(r"<conclusion>\s*\(?([A-Fa-f])\)?\.?\s*</conclusion>", re.IGNORECASE),
)
_OPTION_FORMS = (
    re.compile(r"(?:answer|option)[:\s]*\(?([A-Fa-f])\)?\.?", re.IGNORECASE),
    re.compile(r"(?:^|\s)\(?([A-Fa-f])\)\.?(?:$|\s|\.)", re.IGNORECASE),
    re.compile(r"(?:^|\s)([A-Fa-f])\.?(?:$|\s|\.|,)", re.IGNORECASE),
    re.compile(r"(?:^|\s)([A-Fa-f])\.(?:$|\s)", re.IGNORECASE),
)
_ANY_OPTION_LETTER = re.compile(r"[A-Fa-f]")

# --- judgment (extract_yes_no) --------------------------------------------------------------
_CONCLUSION_YES_NO = re.compile(r"<conclusion>\s*(yes|no)\s*</conclusion>", re.IGNORECASE)
_YES_WORDS = (r"\byes\b", r"\byeah\b", r"\byep\b", r"\bcorrect\b", r"\btrue\b", r"\bright\b",
              r"\bagreed?\b")
_NO_WORDS = (r"\bno\b", r"\bnope\b", r"\bnot\b", r"\bfalse\b", r"\bwrong\b", r"\bincorrect\b",
             r"\bdisagreed?\b")
_RIGHT = r"\bright\b"

# --- numbers (extract_number) ---------------------------------------------------------------
_CONCLUSION_NUMBER = re.compile(r"<conclusion>\s*(\d+)\s*</conclusion>", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NUMBER_WORDS = (   # upstream's dict order matters: "seventeen" is read as "seven" first
    ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"),
    ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"),
    ("eleven", "11"), ("twelve", "12"), ("thirteen", "13"), ("fourteen", "14"),
    ("fifteen", "15"), ("sixteen", "16"), ("seventeen", "17"), ("eighteen", "18"),
    ("nineteen", "19"), ("twenty", "20"), ("first", "1"), ("second", "2"), ("third", "3"),
    ("fourth", "4"), ("fifth", "5"), ("sixth", "6"), ("seventh", "7"), ("eighth", "8"),
    ("ninth", "9"), ("tenth", "10"),
)

# --- lengths (extract_numeric_with_unit) ----------------------------------------------------
# the first pattern that matches gives the value (resp. the unit), even when its group then
# holds no number; value and unit are searched independently
_VALUE_FORMS = (
    re.compile(r"\\scalar\{([^}]+)\}"),
    re.compile(r"\*\*([\d.]+)\s*(?:[a-zA-Z]+)\*\*"),
    re.compile(r"(?:approximately|about|roughly)\s*\**([\d.]+)\s*(?:[a-zA-Z]+)\**",
               re.IGNORECASE),
    re.compile(r"(\d+\.?\d*)\s*(?:[a-zA-Z]+)"),
)
_UNIT_FORMS = (
    re.compile(r"\\distance_unit\{([^}]+)\}"),
    re.compile(r"\*\*\d+\.?\d*\s*([a-zA-Z]+)\*\*"),
    re.compile(r"(?:approximately|about|roughly)\s*\**\d+\.?\d*\s*([a-zA-Z]+)\**",
               re.IGNORECASE),
    re.compile(r"\d+\.?\d*\s*([a-zA-Z]+)"),
)
_DECIMAL = re.compile(r"\d+\.?\d*")
_REFERENCE_LENGTH = re.compile(r"(\d+\.?\d*)\s*([a-zA-Z]+)")
CM_PER_UNIT = {
    "m": 100, "meter": 100, "meters": 100, "metre": 100, "metres": 100,
    "cm": 1, "centimeter": 1, "centimeters": 1, "mm": 0.1,
    "ft": 30.48, "foot": 30.48, "feet": 30.48, "in": 2.54, "inch": 2.54, "inches": 2.54,
}
LENGTH_RATIO = 2.0                 # correct when max(p/g, g/p) < 2.0
# an open answer is scored as a length when its reference contains any of these as a substring
# (upstream's test; "m" alone makes any reference with an "m" in it a length)
_LENGTH_MARKERS = ("meter", "meters", "m", "cm", "centimeter", "centimeters", "km", "kilometer",
                   "kilometers", "inch", "inches", "ft", "foot", "feet")

# --- VSI-Bench mean relative accuracy -------------------------------------------------------
MRA_START, MRA_END, MRA_INTERVAL = 0.5, 0.95, 0.05
MRA_SOURCE = "VSI-Bench_8"
EXACT_TEXT_SOURCE = "RealWorldQA"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _strip_tags(text: str) -> str:
    return _TAGS.sub("", text).strip()


def read_option(text: str, mode: str = "upstream") -> tuple[str, tuple[str, ...]]:
    """The option letter (upper case) an answer gives, and the quirks used; upstream's
    `extract_option`.

    In order: the whole answer is one letter a-f (optionally with a period); "ASSISTANT:" then a
    letter; a letter in <conclusion> tags; "answer"/"option" followed by a letter (so "answer
    accurately" gives A); a letter in parentheses; a lone letter between spaces or at the ends (so
    the article "a" gives A); a letter with a period; and upstream only, the first letter a-f
    anywhere (quirk `first_letter_fallback`). When nothing matches, the answer without its
    <answer>/<conclusion>/<assistant> tags, which then has to equal the reference's reading.
    The tag-free text is used only for that last return: every search runs on the raw answer.
    """
    _check_mode(mode)
    text = text.strip()
    if _LONE_OPTION.match(text):
        return text[0].upper(), ()
    m = _ASSISTANT_LETTER.search(text)
    if m:
        return m.group(1).upper(), ()
    for pattern in (*_CONCLUSION_OPTION, *_OPTION_FORMS):
        m = pattern.search(text)
        if m:
            return m.group(1).upper(), ()
    if mode == "upstream":
        m = _ANY_OPTION_LETTER.search(text)
        if m:
            return m.group(0).upper(), (FIRST_LETTER,)
    return _strip_tags(text), ()


def read_yes_no(text: str, mode: str = "upstream") -> tuple[str, tuple[str, ...]]:
    """"Yes", "No" or what else an answer says, and the quirks used; upstream's `extract_yes_no`.

    In order: the whole answer is yes/no; "ASSISTANT:" then a letter a-f (returned as the letter,
    which never equals a yes/no reference); yes/no in <conclusion> tags; then whole words in the
    lower-cased, tag-free answer, the yes words first (yes, yeah, yep, correct, true, right,
    agree(d)), then the no words (no, nope, not, false, wrong, incorrect, disagree(d)): so "not
    correct" is yes. "right" is a yes word upstream only (quirk `right_as_yes` when it decided).
    Otherwise the tag-free answer.
    """
    _check_mode(mode)
    text = text.strip()
    if text.lower() in ("yes", "no"):
        return text.capitalize(), ()
    m = _ASSISTANT_LETTER.search(text)
    if m:
        return m.group(1).upper(), ()
    clean = _strip_tags(text)
    lower = clean.lower()
    m = _CONCLUSION_YES_NO.search(text)
    if m:
        return m.group(1).capitalize(), ()
    for pattern in _YES_WORDS:
        if pattern == _RIGHT and mode == "strict":
            continue
        if re.search(pattern, lower):
            return "Yes", ((RIGHT_AS_YES,) if pattern == _RIGHT else ())
    for pattern in _NO_WORDS:
        if re.search(pattern, lower):
            return "No", ()
    return clean, ()


def read_number(text: str) -> str:
    """The number an answer gives, as text (or the tag-free answer when none); upstream's
    `extract_number`.

    In order: the answer is all digits; "ASSISTANT:" then a letter (returned as the letter, which
    is then no number); digits in <conclusion> tags; the first decimal number (no sign: "-3" is
    "3"); a number word (zero .. twenty, first .. tenth) at the start, between spaces, after
    "there are" / "there is" / "shows" or at the end, in upstream's word order (so "seventeen"
    is 7, "tenth" 10 via "ten"); a number word as a whole word.
    """
    text = text.strip()
    if text.isdigit():
        return text
    m = _ASSISTANT_LETTER.search(text)
    if m:
        return m.group(1).upper()
    clean = _strip_tags(text)
    lower = clean.lower()
    m = _CONCLUSION_NUMBER.search(text)
    if m:
        return m.group(1)
    m = _NUMBER.search(lower)
    if m:
        return m.group(0)
    for word, digit in _NUMBER_WORDS:
        if (lower.startswith(word) or f" {word} " in lower or f"there are {word}" in lower
                or f"there is {word}" in lower or f"shows {word}" in lower
                or lower.endswith(f" {word}")):
            return digit
    words = lower.split()
    for word, digit in _NUMBER_WORDS:
        if word in words:
            return digit
    return clean


def to_float(text: str) -> float | None:
    """float(text), or None where Python's float() refuses it (upstream's bare `except`)."""
    try:
        return float(text)
    except ValueError:
        return None


def read_length(text: str) -> tuple[float | None, str | None]:
    """(value, unit) of a length answer; upstream's `extract_numeric_with_unit` without the
    comparison.

    The value is the first number inside the first of: \\scalar{...}; **<number><unit>**;
    "approximately|about|roughly" <number><unit>; <number><letters>. The unit, lower-cased, is
    the letters of the first of: \\distance_unit{...}; **<number><unit>**; "approximately|..."
    <number><unit>; <number><letters>. The two searches are independent (the unit may come from
    another number than the value), and the first pattern that matches is final even when its
    group holds no number (value None). A bare number has no unit.
    """
    text = _strip_tags(text)
    value = unit = None
    for pattern in _VALUE_FORMS:
        m = pattern.search(text)
        if m:
            numbers = _DECIMAL.findall(m.group(1))
            value = float(numbers[0]) if numbers else None
            break
    for pattern in _UNIT_FORMS:
        m = pattern.search(text)
        if m:
            unit = m.group(1).lower().strip()
            break
    return value, unit


def reference_is_length(reference: str) -> bool:
    """Whether an open-ended item is scored as a length: upstream's substring test of the
    lower-cased reference against meter, m, cm, km, inch, ft, foot, feet, ... (any "m" counts)."""
    lower = reference.lower()
    return any(marker in lower for marker in _LENGTH_MARKERS)


def mean_relative_accuracy(pred: float, target: float) -> float:
    """VSI-Bench's mean relative accuracy as upstream computes it: the fraction of thresholds t
    with |pred - target| / target <= 1 - t (infinite error for target 0), over
    np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2)) -- 10 thresholds, not the 11 the
    formula intends, because the float quotient is 8.999... and int() truncates."""
    count = int((MRA_END - MRA_START) / MRA_INTERVAL + 2)
    thresholds = np.linspace(MRA_START, MRA_END, count)
    error = abs(pred - target) / target if target != 0 else float("inf")
    return float((error <= 1 - thresholds).mean())


@dataclass(frozen=True)
class ItemScore:
    """The score of one answer under one mode."""

    score: float                          # 1.0 / 0.0, or a mean relative accuracy
    rule: str                             # option | yes_no | length | exact_text | number | mra
    pred: str | float | None = None       # what was read from the answer
    gt: str | float | None = None         # what was read from the reference
    quirks: tuple[str, ...] = ()          # upstream quirks that decided this score (QUIRKS)
    detail: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quirks"] = list(self.quirks)
        for key in ("pred", "gt"):            # JSON has no inf / nan ("inf" is a float to Python)
            if isinstance(d[key], float) and not math.isfinite(d[key]):
                d[key] = str(d[key])
        return d


def _score_length(pred: str, reference: str, mode: str) -> ItemScore:
    """Upstream: value and unit of the answer (both needed), the first <number><letters> of the
    reference; both zero is right, one zero wrong; otherwise both in cm (an unknown unit read as
    cm; strict: wrong) and right when max(p/g, g/p) < 2.0."""
    value, unit = read_length(pred)
    shown = None if value is None else f"{value:g} {unit or ''}".strip()
    if value is None or unit is None:
        return ItemScore(0.0, "length", shown, None,
                         detail="no value in the answer" if value is None else
                         "no unit in the answer")
    m = _REFERENCE_LENGTH.search(reference)
    if not m:
        return ItemScore(0.0, "length", shown, None, detail="no length in the reference")
    gt_value, gt_unit = float(m.group(1)), m.group(2).lower().strip()
    gt_shown = f"{gt_value:g} {gt_unit}"
    if value == 0 or gt_value == 0:
        return ItemScore(float(value == 0 and gt_value == 0), "length", shown, gt_shown,
                         detail="a zero length: right only when both are zero")
    unknown = [u for u in (unit, gt_unit) if u not in CM_PER_UNIT]
    if unknown and mode == "strict":
        return ItemScore(0.0, "length", shown, gt_shown,
                         detail=f"unknown unit {', '.join(map(repr, unknown))}")
    pred_cm = value * CM_PER_UNIT.get(unit, 1)
    gt_cm = gt_value * CM_PER_UNIT.get(gt_unit, 1)
    ratio = max(pred_cm / gt_cm, gt_cm / pred_cm)
    return ItemScore(float(ratio < LENGTH_RATIO), "length", shown, gt_shown,
                     quirks=(UNKNOWN_UNIT,) if unknown else (),
                     detail=f"{pred_cm:g} cm vs {gt_cm:g} cm (ratio {ratio:.3g})")


def _score_number(pred: str, reference: str, source: str) -> ItemScore:
    """Upstream: float(extract_number(...)) of both (an unreadable answer is 0.0); VSI-Bench by
    mean relative accuracy (a zero answer scores 1 only for a zero reference), others by exact
    equality. An unreadable reference stops upstream's run with an exception; here the item
    scores 0 and says so."""
    pred_value = to_float(read_number(pred))
    pred_value = 0.0 if pred_value is None else pred_value
    gt_value = to_float(read_number(reference))
    rule = "mra" if source == MRA_SOURCE else "number"
    if gt_value is None:
        return ItemScore(0.0, rule, pred_value, None,
                         detail="no number in the reference (upstream stops with an error)")
    if rule == "mra":
        if pred_value == 0:
            score = 1.0 if gt_value == 0.0 else 0.0
        else:
            score = mean_relative_accuracy(pred_value, gt_value)
        return ItemScore(score, rule, pred_value, gt_value)
    return ItemScore(float(pred_value == gt_value), rule, pred_value, gt_value)


def score_answer(question_type: str, source: str, pred: str, reference: str,
                 mode: str = "upstream") -> ItemScore:
    """Score an answer against an item's reference under `mode`, by its question_type (compared
    lower-cased, as upstream) and source. ValueError for a question type v0 does not have."""
    _check_mode(mode)
    qtype = question_type.lower()
    if qtype == "multi-choice":
        got, quirks = read_option(pred, mode)
        want, ref_quirks = read_option(reference, mode)
        return ItemScore(float(got.upper() == want.upper()), "option", got, want,
                         quirks + ref_quirks)
    if qtype == "judgment":
        got, quirks = read_yes_no(pred, mode)
        want, ref_quirks = read_yes_no(reference, mode)
        return ItemScore(float(got.lower() == want.lower()), "yes_no", got, want,
                         quirks + ref_quirks)
    if qtype != "open-ended":
        raise ValueError(f"unknown question_type {question_type!r}; SpatialScore v0 has "
                         f"{', '.join(QUESTION_TYPES)}")
    if reference_is_length(reference):
        return _score_length(pred, reference, mode)
    if source == EXACT_TEXT_SOURCE:
        return ItemScore(float(pred.lower() == reference.lower()), "exact_text", pred,
                         reference)
    return _score_number(pred, reference, source)


# -------------------------------------------------------------------------------------------------
# Aggregation


def _block(scores: list[float]) -> dict:
    total = len(scores)
    score_sum = float(sum(scores))
    return {"accuracy": 100.0 * score_sum / total if total else 0.0, "score_sum": score_sum,
            "total": total}


def aggregate(scored: Iterable[tuple[dict, float]]) -> dict:
    """{"overall", "by_source", "by_category", "by_question_type"} of (item fields, score)
    pairs, each block {"accuracy" (percent), "score_sum", "total"}, keys in first-seen order.
    Upstream names a missing source or category "unknown"."""
    overall: list[float] = []
    groups: dict[str, dict[str, list[float]]] = {
        "by_source": {}, "by_category": {}, "by_question_type": {}}
    for item, score in scored:
        overall.append(score)
        for key, field in (("by_source", "source"), ("by_category", "category"),
                           ("by_question_type", "question_type")):
            groups[key].setdefault(str(item.get(field) or "unknown"), []).append(score)
    out = {"overall": _block(overall)}
    for key, by in groups.items():
        out[key] = {name: _block(values) for name, values in by.items()}
    return out
