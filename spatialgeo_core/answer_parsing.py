"""Rule-based parsing of free-text spatial answers (no LLM, pure Python + `re`).

One module of its own in the core, used by every reader of answers: evaluation scores with it
(no judge model), the synthetic world words its answers so that it reads them back, and the node
(spatialgeo_core.serving) gives an answer its metric value with it. The phrasings covered are
those of the bench's reference answers (the SpatialRGPT data templates) and the usual ways a
model words the same facts.

Rules, so that scores are reproducible:

- Lengths are converted with 1 in = 0.0254 m, 1 ft = 0.3048 m, 1 yd = 0.9144 m (as the reference
  judge).
- When an answer mentions several distinct lengths, the *first complete quantity* is taken. A
  quantity is a number with a unit, a compound of decreasing units of one system joined by nothing,
  a comma or "and" ("3 feet 2 inches", "1 m 20 cm", "5'10\""), or a range ("2 to 3 meters",
  "between 2 m and 3 m"), which gives its midpoint. "1.5 m (about 5 feet)" gives 1.5.
- A bare number with no unit gives None unless `default_unit` is passed.
- Commas: "1,5 m" is 1.5 m (decimal comma); "1,500 mm" is 1500 mm (a comma followed by exactly
  three digits is a thousands separator).
- Region labels ("Region [0]") are removed before looking for numbers, so their indices never
  count.
- Predicates: a leading yes/no word ("Yes", "Indeed", "Correct", "No", "Incorrect", "That is
  False") decides, even when the rest of the answer words the relation differently; otherwise the
  first statement of the relation, of its opposite or of an equality ("aligned", "as tall as")
  decides, with the negations of its clause counted and its subject checked against the
  question's first region ("Region [1] is to the right of Region [0]" affirms "Region [0] is left
  of Region [1]"). A negated opposite affirms ("not to the right" answers "left?" with yes).
- Choices: the region the statement of the relation (or its opposite) picks; failing that, the
  one region named ("Region [1]."), unless the answer words another relation instead ("which is
  wider?" - "Region [1] is shorter."): such an off-topic answer is unreadable (None), as it is for
  a predicate.

An answer is read at its conclusion (as a judge model reads it). It is split into statements
(sentences: ".", "!", "?" or ";" followed by a space or the end). A statement that lists a
region's facts ("Region [0]: 3.2 m ahead, 0.4 m left.") is a premise, not an answer: when the
answer has other statements, only those, its claims, are read. The claims are tried from the last
to the first, each by the rules above, and the first that answers what was asked decides (for a
choice, a claim that states the asked relation or its opposite); failing all, the claims are read
together by the rules above (the first claim then decides, as for a one-sentence answer). So
"Region [0]: 0.4 m right. Region [1]: 1.2 m right. So Region [0] is to the left of Region [1]."
answers "Is Region [0] right of Region [1]?" with no, and a distance answer that lists both
regions' positions before "So they are 1.5 m apart." gives 1.5 m. An answer made only of facts is
read as a whole for a length or a direction ("Region [0]: 0.8 m wide.") and answers no comparison.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# Categories of SpatialRGPT-Bench

QUALITATIVE_RELATIONS: tuple[str, ...] = (
    "below", "above", "left", "right", "big", "small",
    "tall", "short", "wide", "thin", "behind", "front",
)
OPPOSITE: dict[str, str] = {
    "below": "above", "above": "below", "left": "right", "right": "left",
    "big": "small", "small": "big", "tall": "short", "short": "tall",
    "wide": "thin", "thin": "wide", "behind": "front", "front": "behind",
}
# the accuracy groups of the reference scorer (its unreachable "long/short" bucket is dropped)
RELATION_GROUP: dict[str, str] = {
    "below": "below/above", "above": "below/above", "left": "left/right", "right": "left/right",
    "big": "big/small", "small": "big/small", "tall": "tall/short", "short": "tall/short",
    "wide": "wide/thin", "thin": "wide/thin", "behind": "behind/front", "front": "behind/front",
}
PREDICATE_CATEGORIES: tuple[str, ...] = tuple(f"{r}_predicate" for r in QUALITATIVE_RELATIONS)
CHOICE_CATEGORIES: tuple[str, ...] = tuple(f"{r}_choice" for r in QUALITATIVE_RELATIONS)
QUANTITATIVE_CATEGORIES: tuple[str, ...] = (
    "distance_data", "horizontal_distance_data", "vertical_distance_data", "width_data",
    "height_data",
)
DIRECTION_CATEGORY = "direction"


def category_kind(category: str) -> str:
    """'predicate', 'choice', 'distance' or 'direction'; ValueError for an unknown category."""
    if category in PREDICATE_CATEGORIES:
        return "predicate"
    if category in CHOICE_CATEGORIES:
        return "choice"
    if category in QUANTITATIVE_CATEGORIES:
        return "distance"
    if category == DIRECTION_CATEGORY:
        return "direction"
    raise ValueError(f"unknown SpatialRGPT-Bench category {category!r}")


def category_relation(category: str) -> str:
    """The relation word of a qualitative category ('left_choice' -> 'left')."""
    if category_kind(category) not in ("predicate", "choice"):
        raise ValueError(f"category {category!r} is not qualitative")
    return category.rsplit("_", 1)[0]


# ------------------------------------------------------------------------------------------
# Shared normalisation

_QUOTES = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ",
})
_LABEL_RE = re.compile(
    r"<\s*region\s*(\d+)\s*>|\bregion\s*\[\s*(\d+)\s*\]|\bregion\s*#?\s*(\d+)\b|\[\s*(\d+)\s*\]")


def _basic_normalize(text: str) -> str:
    return " ".join(text.translate(_QUOTES).lower().split())


def _label_index(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


def _labels_to_tokens(text: str) -> str:
    """'region [3]' / 'region 3' / '<region3>' / '[3]' -> '<r3>' (text already lower-cased)."""
    return _LABEL_RE.sub(lambda m: f"<r{_label_index(m)}>", text)


def _strip_labels(text: str) -> str:
    return _LABEL_RE.sub("region", text)


_STATEMENT_END_RE = re.compile(r"(?<=[.!?;])\s+")
_FACT_LIST_RE = re.compile(r"^\W*(?:<\s*region\s*\d+\s*>|region\s*\[\s*\d+\s*\])\s*:",
                           re.IGNORECASE)


def answer_claims(text: str, facts_answer: bool = True) -> list[str]:
    """The statements of an answer that can answer a question, in order: every statement but
    those that list a region's facts ("Region [1]: 0.5 m up."). When the answer has no other
    kind: every statement if facts_answer (a length or a direction: "Region [0]: 0.8 m wide."
    answers "How wide is Region [0]?"), else none (a fact compares nothing)."""
    statements = [s for s in _STATEMENT_END_RE.split(text.strip()) if s]
    claims = [s for s in statements if not _FACT_LIST_RE.match(s)]
    return claims or (statements if facts_answer else [])


def _read_conclusion(text: str, read_claim, read_all=None, facts_answer: bool = True):
    """`read_claim` applied to the answer's claims from the last to the first: the first result
    that is not None; failing that, `read_all` (default: read_claim) of all claims together."""
    claims = answer_claims(text, facts_answer)
    for claim in reversed(claims):
        got = read_claim(claim)
        if got is not None:
            return got
    if len(claims) < 2 and read_all is None:
        return None
    return (read_all or read_claim)(" ".join(claims))


# ------------------------------------------------------------------------------------------
# Number words

_ONES: dict[str, int] = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split())
}
_TENS: dict[str, int] = {
    w: 10 * i for i, w in enumerate(
        "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)
}
_SCALES: dict[str, int] = {"hundred": 100, "thousand": 1000}
_NUM_WORD = "|".join(sorted([*_ONES, *_TENS, *_SCALES], key=len, reverse=True))
_DIGIT_WORD = "|".join(w for w, v in _ONES.items() if v < 10)
_RUN_RE = re.compile(
    rf"\b(?:{_NUM_WORD})(?:[\s-]+(?:and[\s-]+)?(?:{_NUM_WORD})\b|\s+point(?:\s+(?:{_DIGIT_WORD})\b)+)*\b")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _convert_run(run: str) -> str:
    """'twenty-three' -> '23', 'two point five' -> '2.5', 'one hundred and five' -> '105'."""
    tokens = [t for t in re.split(r"[\s-]+", run) if t]
    out: list[str] = []
    total = current = 0
    have = False
    prev: str | None = None

    def flush() -> None:
        nonlocal total, current, have, prev
        if have:
            out.append(_fmt(total + current))
        total = current = 0
        have = False
        prev = None

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "point":
            digits = []
            while i < len(tokens) and tokens[i] in _ONES and _ONES[tokens[i]] < 10:
                digits.append(str(_ONES[tokens[i]]))
                i += 1
            out.append(f"{total + current}.{''.join(digits) or '0'}")
            total = current = 0
            have = False
            prev = None
        elif tok == "and":
            if prev in _SCALES:
                continue
            flush()
            out.append("and")
        elif tok in _ONES:
            starts_new = prev == "ones" or (prev == "tens" and _ONES[tok] >= 10)
            if starts_new or (_ONES[tok] == 0 and have):
                flush()
            current += _ONES[tok]
            have, prev = True, "ones"
        elif tok in _TENS:
            if prev in ("ones", "tens"):
                flush()
            current += _TENS[tok]
            have, prev = True, "tens"
        elif tok == "hundred":
            current = (current or 1) * 100
            have, prev = True, tok
        elif tok == "thousand":
            total += (current or 1) * 1000
            current = 0
            have, prev = True, tok
    flush()
    return " ".join(out)


def _words_to_digits(text: str) -> str:
    text = re.sub(r"\ban?\s+(hundred|thousand)\b", r"one \1", text)
    text = re.sub(r"\ban?\s+dozen\b", "12", text)
    text = _RUN_RE.sub(lambda m: _convert_run(m.group(0)), text)
    text = re.sub(r"(\d+)\s+point\s+(\d+)", r"\1.\2", text)
    return re.sub(r"(?<![\d.])\bpoint\s+(\d+)", r"0.\1", text)


# ------------------------------------------------------------------------------------------
# Lengths

UNIT_TO_M: dict[str, float] = {
    "km": 1000.0, "m": 1.0, "cm": 0.01, "mm": 0.001,
    "mi": 1609.344, "yd": 0.9144, "ft": 0.3048, "in": 0.0254,
}
# (system, rank): a compound such as "3 ft 2 in" needs one system and strictly falling ranks
_UNIT_ORDER: dict[str, tuple[str, int]] = {
    "km": ("metric", 3), "m": ("metric", 2), "cm": ("metric", 1), "mm": ("metric", 0),
    "mi": ("imperial", 3), "yd": ("imperial", 2), "ft": ("imperial", 1), "in": ("imperial", 0),
}
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_IN_OK = (r"(?=\s*(?:$|[^a-z\s]|(?:wide|tall|high|long|deep|thick|away|apart|from|and|across|to|or"
          r"|in\s+(?:width|height|length|diameter|size))\b))")
_UNIT = (
    r"(?P<unit>kilomet(?:er|re)s?|kms?|millimet(?:er|re)s?|mm|centimet(?:er|re)s?|cms?"
    r"|met(?:er|re)s?|mtrs?|m|miles?|yards?|yds?|feets?|foot|ft|''|'"
    rf"|inch(?:es)?|in\.|in{_IN_OK}|\")(?![a-z])"
)
_UNIT_WORD = (r"(?:kilomet(?:er|re)s?|centimet(?:er|re)s?|millimet(?:er|re)s?|met(?:er|re)s?"
              r"|miles?|yards?|feet|foot|inch(?:es)?)\b")
_QTY_RE = re.compile(
    rf"(?P<between>\bbetween\s+)?(?<![\d.])(?P<a>{_NUM})"
    rf"(?:\s*(?:-|\bto\b|\bor\b|\band\b)\s*(?P<b>{_NUM}))?\s*-?\s*{_UNIT}")
_BARE_RE = re.compile(
    rf"(?<![\d.])(?P<a>{_NUM})(?:\s*(?:-|\bto\b|\bor\b|\band\b)\s*(?P<b>{_NUM}))?(?!\.?\d)")
_ZERO_RE = re.compile(
    r"\b(?:no|zero)\s+(?:vertical\s+|horizontal\s+|discernible\s+)?(?:distance|gap|separation)\b"
    r"(?!\s+(?:information|data|estimate|measurement))|\bin\s+(?:immediate\s+)?(?:vertical\s+)?contact\b")
_COMPOUND_GAP = re.compile(r"\s*(?:,|and|,\s*and|plus|&)?\s*")
_RANGE_GAP = re.compile(r"\s*(?:-|to|or)\s*")


def _unit_key(unit: str) -> str:
    u = unit.rstrip(".")
    if u.startswith("kilo") or u in ("km", "kms"):
        return "km"
    if u.startswith("milli") or u == "mm":
        return "mm"
    if u.startswith("centi") or u in ("cm", "cms"):
        return "cm"
    if u.startswith(("met", "mtr")) or u == "m":
        return "m"
    if u.startswith("mile"):
        return "mi"
    if u.startswith(("yard", "yd")):
        return "yd"
    if u.startswith(("fee", "foo", "ft")) or u == "'":
        return "ft"
    return "in"   # inch, inches, in, ", ''


def _mixed_fraction(m: re.Match) -> str:
    whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return m.group(0) if den == 0 else _fmt(whole + num / den)


def _fraction(m: re.Match) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    return m.group(0) if den == 0 else _fmt(num / den)


def _add_half(m: re.Match) -> str:
    unit = m.group(2) or ""
    return f"{_fmt(float(m.group(1)) + 0.5)}{' ' + unit if unit else ''}"


def _normalize_lengths(text: str) -> str:
    t = _strip_labels(_basic_normalize(text))
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)           # 1,500 -> 1500
    t = re.sub(r"(?<=\d),(?=\d)", ".", t)                     # 1,5 -> 1.5
    t = _words_to_digits(t)
    t = re.sub(r"(\d+)\s+(\d+)/(\d+)", _mixed_fraction, t)
    t = re.sub(r"(?<![\d.])(\d+)/(\d+)(?![\d.])", _fraction, t)
    t = re.sub(r"(\d*)\s*([\u00bd\u00bc\u00be])", lambda m: _fmt(
        int(m.group(1) or 0) + {"\u00bd": 0.5, "\u00bc": 0.25, "\u00be": 0.75}[m.group(2)]), t)
    t = re.sub(r"(\d+(?:\.\d+)?)()\s+and\s+an?\s+half\b", _add_half, t)   # 1 and a half
    t = re.sub(rf"\bhalf\s+(?:of\s+)?an?\s+(?={_UNIT_WORD})", "0.5 ", t)
    t = re.sub(rf"\ban?\s+half[\s-]+(?:of\s+an?\s+)?(?={_UNIT_WORD})", "0.5 ", t)
    t = re.sub(rf"\ban?\s+quarter\s+(?:of\s+an?\s+)?(?={_UNIT_WORD})", "0.25 ", t)
    t = re.sub(r"\ban?\s+couple(?:\s+of)?\b|\bcouple\s+of\b", "2", t)
    t = re.sub(rf"\ban?\s+(?={_UNIT_WORD})", "1 ", t)
    t = re.sub(rf"(\d+(?:\.\d+)?)\s*({_UNIT_WORD})\s+and\s+an?\s+half\b", _add_half, t)
    # 5'10, five foot ten (feet and inches with the inch unit left out)
    return re.sub(r"(\d)\s*('|\bfeet\b|\bfoot\b|\bft\b)\s*(\d{1,2}(?:\.\d+)?)(?![\d.])"
                  r"(?!\s*(?:[a-z\"']))", lambda m: f"{m.group(1)}' {m.group(3)}\"", t)


@dataclass(frozen=True)
class _Qty:
    start: int
    end: int
    meters: float
    unit: str
    is_range: bool
    between: bool


def _quantities(t: str) -> list[_Qty]:
    out = []
    for m in _QTY_RE.finditer(t):
        unit = _unit_key(m.group("unit"))
        a = float(m.group("a"))
        b = float(m.group("b")) if m.group("b") else None
        value = a if b is None else (a + b) / 2
        out.append(_Qty(m.start(), m.end(), value * UNIT_TO_M[unit], unit, b is not None,
                        bool(m.group("between"))))
    return out


def _compound(t: str, qtys: list[_Qty], i: int) -> tuple[float, int]:
    """Sum qtys[i], qtys[i+1], ... while they form one compound; returns (meters, next index)."""
    value = qtys[i].meters
    j = i + 1
    while j < len(qtys):
        prev, cur = qtys[j - 1], qtys[j]
        sys_p, rank_p = _UNIT_ORDER[prev.unit]
        sys_c, rank_c = _UNIT_ORDER[cur.unit]
        if (prev.is_range or cur.is_range or sys_p != sys_c or rank_c >= rank_p
                or not _COMPOUND_GAP.fullmatch(t[prev.end:cur.start])):
            break
        value += cur.meters
        j += 1
    return value, j


def parse_distance_m(text: str, default_unit: str | None = None) -> float | None:
    """The length an answer concludes with, in meters (the module's rules: the last claim that
    states a length, its first complete quantity); None when there is none.

    default_unit: one of UNIT_TO_M's keys, used for a bare number when no number has a unit.
    """
    if default_unit is not None and default_unit not in UNIT_TO_M:
        raise ValueError(f"default_unit must be one of {sorted(UNIT_TO_M)}, got {default_unit!r}")
    return _read_conclusion(text, lambda claim: _distance_in(claim, default_unit))


def _distance_in(text: str, default_unit: str | None) -> float | None:
    """The first length mentioned in `text`, in meters; None when there is none."""
    t = _normalize_lengths(text)
    qtys = _quantities(t)
    if qtys:
        value, j = _compound(t, qtys, 0)
        if j < len(qtys):
            gap = t[qtys[j - 1].end:qtys[j].start]
            if _RANGE_GAP.fullmatch(gap) or (qtys[0].between and re.fullmatch(r"\s*and\s*", gap)):
                second, _ = _compound(t, qtys, j)
                value = (value + second) / 2
        return value
    if _ZERO_RE.search(t):
        return 0.0
    if default_unit is not None and "clock" not in t:
        m = _BARE_RE.search(t)
        if m:
            a = float(m.group("a"))
            b = float(m.group("b")) if m.group("b") else None
            return (a if b is None else (a + b) / 2) * UNIT_TO_M[default_unit]
    return None


# ------------------------------------------------------------------------------------------
# Clock directions

_OCLOCK_RE = re.compile(
    r"(?<![\d.])(\d{1,2})(?::([0-5]\d))?\s*-?\s*(?:o\s*'\s*clock|o\s*clock|oclock|o'clock)\b")
_HHMM_RE = re.compile(r"(?<![\d.:])(\d{1,2}):([0-5]\d)(?![\d:])")
_AT_RE = re.compile(
    r"(?:\bat\s+(?:about\s+|around\s+|roughly\s+|approximately\s+|the\s+)*(\d{1,2})"
    r"|(?<![\d.])(\d{1,2})\s+(?:direction|position)\b)"
    r"(?![\d.:])(?!\s*(?:%|degrees?\b|meters?\b|m\b|cm\b|feet\b|ft\b|inch|in\b))")


def _hours(h: int, minutes: int = 0) -> float | None:
    if not 0 <= h <= 12:
        return None
    value = (h % 12) + minutes / 60.0
    return 12.0 if value == 0 else value


def parse_clock_hours(text: str) -> float | None:
    """A clock direction in hours in (0, 12] ("3 o'clock" -> 3.0, "10:30" -> 10.5, 12 not 0).

    In the claim that concludes the answer (module docstring), the first "N o'clock" wins; else
    the first "HH:MM"; else, when the text speaks of a clock at all, the first "at N" / "N
    direction".
    """
    return _read_conclusion(text, _clock_in)


def _clock_in(text: str) -> float | None:
    t = _words_to_digits(_strip_labels(_basic_normalize(text)))
    m = _OCLOCK_RE.search(t)
    if m:
        return _hours(int(m.group(1)), int(m.group(2) or 0))
    m = _HHMM_RE.search(t)
    if m:
        return _hours(int(m.group(1)), int(m.group(2)))
    if "clock" in t:
        m = _AT_RE.search(t)
        if m:
            return _hours(int(m.group(1) or m.group(2)))
    return None


def parse_metric_value(text: str) -> tuple[float, str] | None:
    """(value, unit) of an answer for the ROS response: (meters, "m") or (hours, "o'clock").

    Read at the answer's conclusion (module docstring): in the last claim that states one, a
    claim that speaks of a clock gives its direction; otherwise its first length; a bare "HH:MM"
    counts as a clock direction when no length is found. None when there is neither, so an
    answer that lists the regions' facts and concludes "So Region [0] is left of Region [1]."
    has no value.
    """
    return _read_conclusion(text, _metric_in)


def _metric_in(text: str) -> tuple[float, str] | None:
    if "clock" in text.lower():
        hours = _clock_in(text)
        if hours is not None:
            return hours, "o'clock"
    meters = _distance_in(text, None)
    if meters is not None:
        return meters, "m"
    hours = _clock_in(text)
    if hours is not None:
        return hours, "o'clock"
    return None


# ------------------------------------------------------------------------------------------
# Qualitative relations

_REL_PHRASES: dict[str, tuple[str, ...]] = {
    "left": (r"\bleft\b", r"\bleftward"),
    "right": (r"\bright\b", r"\brightward"),
    "above": (r"\babove\b", r"\bover\b", r"\bhigher\b", r"\bon top of\b", r"\batop\b",
              r"\bup\s+(?:high|higher)\b"),
    "below": (r"\bbelow\b", r"\bunder(?:neath)?\b", r"\bbeneath\b", r"\blower\b"),
    "big": (r"\bbigger\b", r"\blarger\b", r"\bbig\b", r"\blarge\b", r"\bhuge\b",
            r"\b(?:greater|more|larger|bigger) (?:in )?(?:size|volume)\b", r"\bmore space\b",
            r"\bsize (?:is |that is )?(?:not )?(?:greater|larger|bigger)\b",
            r"\bexceeds?\b", r"\bsurpass(?:es)?\b"),
    "small": (r"\bsmaller\b", r"\bsmall\b", r"\btinier\b", r"\btiny\b", r"\bless space\b",
              r"\b(?:less|lesser|smaller) (?:in )?(?:size|volume)\b",
              r"\bsize (?:is |that is )?(?:not )?(?:less|smaller)\b"),
    "tall": (r"\btaller\b", r"\btall\b", r"\b(?:greater|more|larger|bigger|higher) height\b",
             r"\bheight (?:is |that is )?(?:not )?(?:greater|larger|bigger|more|higher)\b",
             r"\bexceeds?\b", r"\bsurpass(?:es)?\b"),
    "short": (r"\bshorter\b", r"\bshort\b", r"\b(?:less|lesser|smaller|lower) height\b",
              r"\bheight (?:is |that is )?(?:not )?(?:less|lower|smaller)\b"),
    "wide": (r"\bwider\b", r"\bwide\b", r"\bbroader\b",
             r"\b(?:greater|more|larger|bigger) width\b",
             r"\bwidth (?:is |that is )?(?:not )?(?:greater|larger|bigger|more)\b",
             r"\bexceeds?\b", r"\bsurpass(?:es)?\b"),
    "thin": (r"\bthinner\b", r"\bthin\b", r"\bnarrower\b", r"\bnarrow\b", r"\bslimmer\b",
             r"\b(?:less|lesser|smaller) width\b",
             r"\bwidth (?:is |that is )?(?:not )?(?:less|smaller|narrower)\b"),
    "behind": (r"\bbehind\b", r"\bfurther\b", r"\bfarther\b", r"\bmore distant\b",
               r"\b(?:at|in) the back\b", r"\bin back of\b", r"\bbackward", r"\bdeeper\b"),
    "front": (r"\bin front\b", r"\bfront\b", r"\bcloser\b", r"\bnearer\b", r"\bless distant\b",
              r"\bbefore\b", r"\bahead of\b", r"\bforward"),
}
# "as X as": equal unless negated, and "not as X as" states the opposite of X
_AS_ADJ: dict[str, str] = {
    "left": r"far left", "right": r"far right", "above": r"high", "below": r"low",
    "big": r"big|large", "small": r"small|tiny", "tall": r"tall|high", "short": r"short",
    "wide": r"wide|broad", "thin": r"thin|narrow|slim", "behind": r"far|distant",
    "front": r"close|near",
}
_EQUAL_RE = (r"\baligned\b|\bneither\b|\bsame (?:horizontal |vertical )?(?:level|height|size|width"
             r"|elevation|plane|position|space|depth|distance)\b|\b(?:equal|similar|comparable)"
             r" (?:in )?(?:size|height|width|distance|depth|elevation)\b"
             r"|\b(?:equally|similarly) (?:sized|tall|wide|big|large)\b")
_NEGATOR_RE = re.compile(
    r"\bnot\b|n't\b|\bnever\b|\bno\b(?!\s+doubt)|\bneither\b|\bnor\b|\bhardly\b|\bcannot\b"
    r"|\b(?:isnt|arent|doesnt|dont|wasnt|werent)\b")
_CLAUSE_BREAK_RE = re.compile(r"[.!?;](?=\s|$)|\bbut\b|\bhowever\b|\bwhereas\b|\bwhile\b")
_SENTENCE_BREAK_RE = re.compile(r"[.!?;](?=\s|$)")
_TOKEN_RE = re.compile(r"<[rc]\d+>")
_OBJECT_MARKER_RE = re.compile(
    r"(?:\b(?:of|than|from|to|as|with|compared to|relative to)\s*)?$")
_PREPOSITION_PHRASE_RE = re.compile(
    r"^(?:behind|above|over|below|under|underneath|beneath|atop|before)$")

_FILLER_RE = re.compile(
    r"^[\s\"'*(\[]*(?:(?:well|so|hmm|ok|okay|i think|i believe|the answer is|answer)[\s,:]*)*")
_POSITIVE_LEAD_RE = re.compile(
    r"(?:yes|yeah|yep|yup|indeed|correct|correctly|true|affirmative|absolutely|certainly|definitely"
    r"|sure|of course|that is (?:true|correct|right)|that's (?:true|correct|right)|it is true)\b")
_NEGATIVE_LEAD_RE = re.compile(
    r"(?:no(?!\s+doubt)|nope|nah|not really|not at all|incorrect|false|wrong|negative"
    r"|that is (?:false|incorrect|wrong|not (?:true|correct|right))"
    r"|that's (?:false|incorrect|wrong|not (?:true|correct|right))|it is false)\b")


@dataclass(frozen=True)
class _RelationHit:
    direction: int | None          # +1: subject has the relation; -1: the opposite; 0: equal
    subject: str | None            # label token ("<r0>", "<c1>") of the subject, when one is seen
    obj: str | None                # label token of the object when only the object is seen


def _phrase_table(relation: str) -> list[tuple[re.Pattern, str]]:
    opp = OPPOSITE[relation]
    table = [(re.compile(p), "pos") for p in _REL_PHRASES[relation]]
    table += [(re.compile(p), "opp") for p in _REL_PHRASES[opp]]
    table.append((re.compile(rf"\bas (?:{_AS_ADJ[relation]}) as\b"), "eq_pos"))
    table.append((re.compile(rf"\bas (?:{_AS_ADJ[opp]}) as\b"), "eq_opp"))
    table.append((re.compile(_EQUAL_RE), "eq"))
    return table


def _first_hit(text: str, relation: str) -> tuple[re.Match, str] | None:
    best: tuple[re.Match, str] | None = None
    for pattern, kind in _phrase_table(relation):
        m = pattern.search(text)
        if m is None:
            continue
        if (best is None or m.start() < best[0].start()
                or (m.start() == best[0].start() and m.end() > best[0].end())):
            best = (m, kind)
    return best


def _relation_in_text(text: str, relation: str) -> _RelationHit | None:
    """Find the first statement of `relation` (or its opposite/equality) in tokenised text."""
    hit = _first_hit(text, relation)
    if hit is None:
        return None
    m, kind = hit
    clause_start = max((b.end() for b in _CLAUSE_BREAK_RE.finditer(text, 0, m.start())), default=0)
    negated = len(_NEGATOR_RE.findall(text[clause_start:m.end()])) % 2 == 1
    direction: int | None = {
        "pos": -1 if negated else 1,
        "opp": 1 if negated else -1,
        "eq": None if negated else 0,
        "eq_pos": -1 if negated else 0,
        "eq_opp": 1 if negated else 0,
    }[kind]
    sent_start = max((b.end() for b in _SENTENCE_BREAK_RE.finditer(text, 0, m.start())), default=0)
    sent_end_m = _SENTENCE_BREAK_RE.search(text, m.end())
    sent_end = sent_end_m.start() if sent_end_m else len(text)
    before = _TOKEN_RE.findall(text[sent_start:m.start()])
    if before:
        return _RelationHit(direction, before[-1], None)
    after = list(_TOKEN_RE.finditer(text, m.end(), sent_end))
    if not after:
        return _RelationHit(direction, None, None)
    gap = text[m.end():after[0].start()]
    is_object = (_PREPOSITION_PHRASE_RE.match(m.group(0)) is not None and not gap.strip()) or (
        gap.strip() != "" and _OBJECT_MARKER_RE.search(gap).group(0).strip() != "")
    if not is_object:
        return _RelationHit(direction, after[0].group(0), None)
    if len(after) > 1 and after[1].group(0) != after[0].group(0):
        return _RelationHit(direction, after[1].group(0), None)
    return _RelationHit(direction, None, after[0].group(0))


def _ordered_tokens(text: str) -> list[str]:
    seen: list[str] = []
    for tok in _TOKEN_RE.findall(text):
        if tok not in seen:
            seen.append(tok)
    return seen


def _polarity(text: str) -> bool | None:
    t = _FILLER_RE.sub("", text, count=1)
    if _NEGATIVE_LEAD_RE.match(t):
        return False
    if _POSITIVE_LEAD_RE.match(t):
        return True
    return None


def parse_predicate(text: str, category: str, question: str | None = None) -> bool | None:
    """Does the answer affirm "Region A is <relation> Region B"? None when it cannot be told.

    category: a `*_predicate` category. question: the bench question; its first region label is A
    (without it, the subject of a restated relation is taken to be A).
    """
    if category_kind(category) != "predicate":
        raise ValueError(f"parse_predicate needs a *_predicate category, got {category!r}")
    relation = category_relation(category)
    return _read_conclusion(text, lambda claim: _predicate_in(claim, relation, question),
                            facts_answer=False)


def _predicate_in(text: str, relation: str, question: str | None) -> bool | None:
    t = _labels_to_tokens(_basic_normalize(text))
    polarity = _polarity(t)
    if polarity is not None:
        return polarity
    hit = _relation_in_text(t, relation)
    if hit is None or hit.direction is None:
        return None
    direction = hit.direction
    if question is not None and direction != 0:
        q_tokens = _ordered_tokens(_labels_to_tokens(_basic_normalize(question)))
        if len(q_tokens) >= 2:
            a, b = q_tokens[0], q_tokens[1]
            if hit.subject == b or (hit.subject is None and hit.obj == a):
                direction = -direction
    return direction == 1


# ------------------------------------------------------------------------------------------
# Choices

_NAME_PATTERNS = (
    re.compile(r"\bbetween\s+(.+?)\s+and\s+(.+?)\s*[,?]"),
    re.compile(r",\s*(.+?),?\s+or\s+(.+?)\s*(?:[,?.]|$)"),
    re.compile(r"^(?:which|who)\s+(?:one\s+)?(?:is|are)\s+\w+(?:\s+\w+)?\s+(.+?)\s+or\s+(.+?)\s*\?"),
)
_ARTICLE_RE = re.compile(r"^(?:the|a|an)\s+")


def _question_candidates(question: str) -> list[tuple[str, str]]:
    """[(display, token)] of the two things a choice question compares; [] when not found."""
    q = _labels_to_tokens(_basic_normalize(question))
    tokens = _ordered_tokens(q)
    if len(tokens) >= 2:
        return [(f"Region [{tok[2:-1]}]", tok) for tok in tokens if tok.startswith("<r")]
    for pattern in _NAME_PATTERNS:
        m = pattern.search(q)
        if m:
            names = [_ARTICLE_RE.sub("", g.strip(" ,.?!\"'")) for g in m.groups()]
            if all(names) and names[0] != names[1]:
                return [(name, f"<c{k}>") for k, name in enumerate(names)]
    return []


def _infer_relation(question: str) -> str | None:
    q = _labels_to_tokens(_basic_normalize(question))
    best: tuple[int, str] | None = None
    for relation in QUALITATIVE_RELATIONS:
        for pattern in _REL_PHRASES[relation]:
            m = re.search(pattern, q)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), relation)
    return None if best is None else best[1]


def parse_choice(text: str, question: str, category: str | None = None) -> str | None:
    """Which of the two compared things the answer picks: "Region [i]" or the object's name.

    question: the choice question ("Which is more to the left, Region [0] or Region [1]?"); it
    names the candidates and, unless `category` (a `*_choice` category) is given, the relation.
    Returns None when the answer picks neither, both, or cannot be read.
    """
    if category is not None and category_kind(category) != "choice":
        raise ValueError(f"parse_choice needs a *_choice category, got {category!r}")
    relation = category_relation(category) if category else _infer_relation(question)
    candidates = _question_candidates(question)
    return _read_conclusion(
        text, lambda claim: _choice_in(claim, relation, candidates, stated_only=True),
        lambda claims: _choice_in(claims, relation, candidates, stated_only=False),
        facts_answer=False)


def _choice_in(text: str, relation: str | None, candidates: list[tuple[str, str]],
               stated_only: bool) -> str | None:
    """The thing `text` picks; stated_only: only from a statement of the relation (or its
    opposite), never from a region merely named."""
    t = _labels_to_tokens(_basic_normalize(text))
    for display, token in sorted(candidates, key=lambda c: -len(c[0])):
        if token.startswith("<c"):
            t = re.sub(rf"\b(?:(?:the|a|an)\s+)?{re.escape(display)}\b", token, t)
    display_of = dict((tok, disp) for disp, tok in candidates)

    def show(token: str) -> str:
        default = f"Region [{token[2:-1]}]" if token.startswith("<r") else token
        return display_of.get(token, default)

    def other(token: str) -> str | None:
        cand_tokens = [tok for _, tok in candidates] or _ordered_tokens(t)
        rest = [tok for tok in cand_tokens if tok != token]
        return rest[0] if len(cand_tokens) == 2 and len(rest) == 1 else None

    mentioned = _ordered_tokens(t)
    if not mentioned:
        if stated_only:
            return None
        if candidates and re.search(r"\b(?:first|former)\b", t):
            return candidates[0][0]
        if len(candidates) > 1 and re.search(r"\b(?:second|latter)\b", t):
            return candidates[1][0]
        return None
    hit = _relation_in_text(t, relation) if relation else None
    if hit is not None and hit.direction == 0:
        return None
    if hit is not None and hit.direction in (1, -1):
        if hit.subject is not None:
            chosen = hit.subject if hit.direction == 1 else other(hit.subject)
        elif hit.obj is not None:
            chosen = other(hit.obj) if hit.direction == 1 else hit.obj
        else:
            chosen = mentioned[0] if len(mentioned) == 1 else None
            if chosen is not None and hit.direction == -1:
                chosen = other(chosen)
        return None if chosen is None else show(chosen)
    if stated_only:
        return None
    if re.search(r"\b(?:both|neither|same|equal)\b", t):
        return None
    if relation and _states_another_relation(t, relation):
        return None                    # "which is wider?" - "Region [1] is shorter.": off topic
    return show(mentioned[0])


def _states_another_relation(text: str, relation: str) -> bool:
    """Whether the text words a qualitative relation other than `relation` and its opposite."""
    asked = {relation, OPPOSITE[relation]}
    return any(re.search(p, text) for r in QUALITATIVE_RELATIONS if r not in asked
               for p in _REL_PHRASES[r])
