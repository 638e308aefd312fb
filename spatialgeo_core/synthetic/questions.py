"""Questions and reference answers for every SpatialRGPT-Bench category, from exact geometry.

Ground-truth conventions (world frame of camera.py: z up, +y straight ahead of the camera, +x to
its right; an object's centre and size are those of its world axis-aligned bounding box, as in
scene.py):

- distance_data: distance between the two centres. (SpatialRGPT's data pipeline averages the
  nearest-point distances between the two visible point clouds; centres are exact and do not
  depend on what is visible.)
- horizontal_distance_data: distance between the centres projected on the ground plane.
  (SpatialRGPT uses the left-right offset of the centres only; we follow the plain meaning.)
- vertical_distance_data: difference of the centres' heights.
- width_data / height_data: extent of the bounding box along x / along z.
- direction: clock position of B for an observer at A facing the camera's heading: 12 o'clock is
  straight ahead (away from the camera, +y), 3 o'clock to the right (+x), 6 o'clock towards the
  camera, 9 o'clock to the left, measured on the ground plane and rounded to the nearest hour
  (SpatialRGPT truncates; the exact hours are kept in QA.value).
- left / right: x of the centres (camera-frame x, which equals world x); asked only when the
  image columns of the projected centres agree.
- above / below: height of the centres. behind / in front: forward distance (y) of the centres;
  asked only when the nearest faces (SpatialRGPT's convention) agree.
- big / small: volume of the solid; asked only when the bounding-box volumes agree.
- tall / short: height; wide / thin: width.

A qualitative question is asked only when its answer is clear by a margin (the *_MARGIN
constants), so that no reference answer hinges on a few millimetres or on a convention.

Regions are named "Region [i]" as in SpatialRGPT-Bench. Every reference answer parses back, with
spatialgeo_core.answer_parsing, to the value it states (QA.stated): a yes/no, the chosen
"Region [i]", metres, or clock hours; test/synthetic checks it for every template.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spatialgeo_core.answer_parsing import (
    CHOICE_CATEGORIES,
    DIRECTION_CATEGORY,
    OPPOSITE,
    PREDICATE_CATEGORIES,
    QUALITATIVE_RELATIONS,
    QUANTITATIVE_CATEGORIES,
    category_kind,
    category_relation,
)
from spatialgeo_core.synthetic.facts import comparison_answer, fact_sentence
from spatialgeo_core.synthetic.render import ObjectInfo

ALL_CATEGORIES: tuple[str, ...] = (
    PREDICATE_CATEGORIES + CHOICE_CATEGORIES + QUANTITATIVE_CATEGORIES + (DIRECTION_CATEGORY,))
SINGLE_OBJECT_CATEGORIES = ("width_data", "height_data")

# margins below which a qualitative question is not asked
LEFT_MARGIN_M = 0.2            # |dx| of the centres
LEFT_MARGIN_PX = 2.0           # and of their image columns
ABOVE_MARGIN_M = 0.15          # |dz| of the centres
BEHIND_MARGIN_M = 0.3          # |dy| of the centres
SIZE_MARGIN_M = 0.1            # tall/short, wide/thin: difference ...
SIZE_MARGIN_RATIO = 1.15       # ... and ratio
VOLUME_MARGIN_RATIO = 1.5      # big/small: ratio of solid volumes (bounding boxes must agree)
MIN_VERTICAL_DISTANCE_M = 0.1  # vertical_distance_data is not asked below this


@dataclass(frozen=True)
class QA:
    """One question about a rendered scene with its reference answer and ground truth."""

    category: str                      # a SpatialRGPT-Bench category
    question: str                      # with "Region [i]" names
    answer: str                        # the reference answer, with "Region [i]" names
    regions: tuple[int, ...]           # object indices: "Region [k]" is object regions[k]
    subjects: tuple[int, ...]          # the objects asked about, A first (object indices)
    value: bool | int | float          # exact truth: yes/no, the chosen object index, metres
    #                                    or clock hours in (0, 12]
    stated: bool | str | float         # what the answer says: yes/no, "Region [i]", metres as
    #                                    rounded in the text, or whole clock hours

    @property
    def qa_type(self) -> str:
        kind = category_kind(self.category)
        return "qualitative" if kind in ("predicate", "choice") else "quantitative"

    def region_name(self, obj: int) -> str:
        return f"Region [{self.regions.index(obj)}]"

    def to_dict(self) -> dict:
        return {"category": self.category, "type": self.qa_type, "question": self.question,
                "answer": self.answer, "regions": list(self.regions),
                "subjects": list(self.subjects), "value": self.value, "stated": self.stated}


# ------------------------------------------------------------------------------------------
# Exact geometry

def center_distance(a: ObjectInfo, b: ObjectInfo) -> float:
    return float(np.linalg.norm(np.subtract(a.center_world, b.center_world)))


def horizontal_distance(a: ObjectInfo, b: ObjectInfo) -> float:
    return math.hypot(a.center_world[0] - b.center_world[0], a.center_world[1] - b.center_world[1])


def vertical_distance(a: ObjectInfo, b: ObjectInfo) -> float:
    return abs(a.center_world[2] - b.center_world[2])


def clock_hours(a: ObjectInfo, b: ObjectInfo) -> float:
    """Clock position of b seen from a facing +y, in hours in (0, 12] (12 = straight ahead)."""
    angle = math.degrees(math.atan2(b.center_world[0] - a.center_world[0],
                                    b.center_world[1] - a.center_world[1]))   # clockwise from +y
    hours = (angle % 360.0) / 30.0
    return 12.0 if hours == 0.0 else hours


def whole_hour(hours: float) -> int:
    """Nearest whole clock hour, 1..12."""
    h = int(math.floor(hours + 0.5)) % 12
    return 12 if h == 0 else h


def _image_u(info: ObjectInfo, fx: float, cx: float) -> float:
    x, _, z = info.center_camera
    return fx * x / z + cx


def relation_holds(relation: str, a: ObjectInfo, b: ObjectInfo, fx: float = 1.0,
                   cx: float = 0.0) -> bool | None:
    """Is "A is <relation> B" true? None when the answer is not clear by the margins.

    fx, cx: the camera's, to check that left/right agrees with the image columns.
    """
    if relation not in QUALITATIVE_RELATIONS:
        raise ValueError(f"unknown relation {relation!r}")
    if relation in ("right", "below", "small", "short", "thin", "front"):
        result = relation_holds(OPPOSITE[relation], a, b, fx, cx)
        return None if result is None else not result
    ca, cb = a.center_world, b.center_world
    if relation == "left":
        du = _image_u(b, fx, cx) - _image_u(a, fx, cx)
        dx = cb[0] - ca[0]
        if abs(dx) < LEFT_MARGIN_M or abs(du) < LEFT_MARGIN_PX or (dx > 0) != (du > 0):
            return None
        return dx > 0
    if relation == "above":
        dz = ca[2] - cb[2]
        return None if abs(dz) < ABOVE_MARGIN_M else dz > 0
    if relation == "behind":
        dy = ca[1] - cb[1]
        near = a.aabb_min[1] - b.aabb_min[1]
        if abs(dy) < BEHIND_MARGIN_M or near == 0 or (dy > 0) != (near > 0):
            return None
        return dy > 0
    if relation == "big":
        ratio = a.volume / b.volume
        box_ratio = math.prod(a.size) / math.prod(b.size)
        if max(ratio, 1 / ratio) < VOLUME_MARGIN_RATIO or (ratio > 1) != (box_ratio > 1):
            return None
        return ratio > 1
    axis = 1 if relation == "tall" else 0                                   # tall, wide
    sa, sb = a.size[axis], b.size[axis]
    if abs(sa - sb) < SIZE_MARGIN_M or max(sa / sb, sb / sa) < SIZE_MARGIN_RATIO:
        return None
    return sa > sb


# ------------------------------------------------------------------------------------------
# Wording

# "A is <phrase> B"
_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "on the left side of", "further to the left than"),
    "right": ("to the right of", "on the right side of", "further to the right than"),
    "above": ("above", "higher than", "positioned higher than"),
    "below": ("below", "lower than", "positioned lower than"),
    "big": ("bigger than", "larger than", "larger in size than"),
    "small": ("smaller than", "smaller in size than"),
    "tall": ("taller than",),
    "short": ("shorter than",),
    "wide": ("wider than", "broader than"),
    "thin": ("thinner than", "narrower than"),
    "behind": ("behind", "farther from the camera than", "further away than"),
    "front": ("in front of", "closer to the camera than", "nearer to the camera than"),
}
# "Which is <comparative>?"; "X is <comparative> (than Y)."
_COMPARATIVES: dict[str, tuple[str, ...]] = {
    "left": ("more to the left", "further to the left"),
    "right": ("more to the right", "further to the right"),
    "above": ("higher", "positioned higher"),
    "below": ("lower", "positioned lower"),
    "big": ("bigger", "larger"),
    "small": ("smaller",),
    "tall": ("taller",),
    "short": ("shorter",),
    "wide": ("wider", "broader"),
    "thin": ("thinner", "narrower"),
    "behind": ("farther from the camera", "further away"),
    "front": ("closer to the camera", "nearer to the camera"),
}
_PREDICATE_Q = (
    "Is {A} {p} {B}?",
    "Can you confirm if {A} is {p} {B}?",
    "Would you say that {A} is {p} {B}?",
    "Is it true that {A} is {p} {B}?",
)
_PREDICATE_YES = (
    "Yes, {A} is {p} {B}.",
    "Correct, {A} is {p} {B}.",
    "Indeed, {A} is {p} {B}.",
    "{A} is indeed {p} {B}.",
    "{B} is {o} {A}.",
)
_PREDICATE_NO = (
    "No, {A} is not {p} {B}.",
    "No, {A} is {o} {B}.",
    "Incorrect, {A} is {o} {B}.",
    "{A} is not {p} {B}.",
    "In fact, {B} is {p} {A}.",
)
_CHOICE_Q = (
    "Which is {c}, {A} or {B}?",
    "Between {A} and {B}, which one is {c}?",
    "Which of these two is {c}: {A} or {B}?",
)
_CHOICE_A = (
    "{X} is {c}.",
    "{X} is {c} than {Y}.",
    "Of the two, {X} is {c}.",
    "It is {X} that is {c}.",
)
_QUANT_Q: dict[str, tuple[str, ...]] = {
    "distance_data": (
        "How far apart are {A} and {B}?",
        "What is the distance between {A} and {B}?",
        "How far is {A} from {B}?",
        "Measure the distance between {A} and {B}.",
    ),
    "horizontal_distance_data": (
        "What is the horizontal distance between {A} and {B}?",
        "How far apart are {A} and {B} horizontally?",
        "Measure the horizontal distance from {A} to {B}.",
    ),
    "vertical_distance_data": (
        "What is the vertical distance between {A} and {B}?",
        "How far apart are {A} and {B} vertically?",
        "Tell me the vertical distance between {A} and {B}.",
    ),
    "width_data": (
        "How wide is {A}?",
        "What is the width of {A}?",
        "Could you tell me the width of {A}?",
    ),
    "height_data": (
        "How tall is {A}?",
        "What is the height of {A}?",
        "Could you tell me how tall {A} is?",
    ),
    DIRECTION_CATEGORY: (
        "If you are at {A}, where will you find {B}?",
        "Standing at {A} and facing the way the camera looks, in which clock direction is {B}?",
        "From {A}, at what o'clock is {B}?",
    ),
}
_QUANT_A: dict[str, tuple[str, ...]] = {
    "distance_data": (
        "{A} is about {X} from {B}.",
        "The distance between {A} and {B} is {X}.",
        "{A} and {B} are {X} apart.",
        "They are roughly {X} away from each other.",
    ),
    "horizontal_distance_data": (
        "{A} and {B} are {X} apart horizontally.",
        "The horizontal distance between {A} and {B} is {X}.",
        "Horizontally, they are about {X} apart.",
    ),
    "vertical_distance_data": (
        "{A} and {B} are {X} apart vertically.",
        "The vertical distance between {A} and {B} is {X}.",
        "{H} is {X} higher than {L}.",
    ),
    "width_data": (
        "{A} is {X} wide.",
        "The width of {A} is {X}.",
        "It is about {X} wide.",
        "{A} measures {X} across.",
    ),
    "height_data": (
        "{A} is {X} tall.",
        "The height of {A} is {X}.",
        "It stands about {X} tall.",
    ),
    DIRECTION_CATEGORY: (
        "{B} is at {N} o'clock from {A}.",
        "{A} will find {B} around the {N} o'clock direction.",
        "From {A}, {B} is at about {N} o'clock.",
        "You will find {B} at the {N} o'clock position.",
    ),
}

_INCH_M = 0.0254


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _plural(value: float, one: str, many: str) -> str:
    return one if value == 1 else many


UNITS = ("mixed", "metric")
# How answers are worded: "varied" picks one of several phrasings (as the bench's references);
# "plain" always the first, with lengths in metres ("1.3 m", "0.45 m" below 1 m), so that a small
# model trained from scratch spends its loss on the spatial content, not on which paraphrase;
# "facts": as plain, but a comparison first states each region's fact in the relation's quantity
# and then concludes with one canonical sentence (facts.py): "Region [0]: 0.4 m right. Region
# [1]: 1.2 m right. So Region [0] is to the left of Region [1]."; "facts_all": also the distances
# and the direction state both regions' positions before their result ("... So they are 1.8 m
# apart.").
WORDINGS = ("varied", "plain", "facts", "facts_all")
# what a two-region length or direction answer states first under "facts_all"
POSITION_FACTS: dict[str, tuple[str, ...]] = {
    "distance_data": ("ahead", "side", "up"),
    "horizontal_distance_data": ("ahead", "side"),
    "vertical_distance_data": ("up",),
    DIRECTION_CATEGORY: ("ahead", "side"),
}


def plain_length(meters: float) -> tuple[str, float]:
    """A length in metres, 2 decimals below 1 m and 1 above; (text, the metres it says)."""
    if not meters > 0:
        raise ValueError(f"a length to phrase must be > 0, got {meters}")
    text = f"{max(0.01, round(meters, 2 if meters < 1.0 else 1)):g}"
    return f"{text} m", float(text)


def format_length(meters: float, rng: np.random.Generator,
                  units: str = "mixed") -> tuple[str, float]:
    """A natural wording of a length; (text, the metres it says).

    units "mixed": m, cm or feet and inches, as SpatialRGPT-Bench answers are; "metric": m or cm
    only. The stated value is within 5 % (or 5 mm) of `meters`.
    """
    if not meters > 0:
        raise ValueError(f"a length to phrase must be > 0, got {meters}")
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    r = float(rng.uniform())
    if units == "metric":
        if meters < 1.0 and r < 0.5:
            cm = max(1, round(meters * 100))
            return f"{cm} {'centimeters' if r < 0.35 else 'cm'}", cm / 100.0
        value = round(meters, 2 if meters < 1.0 else 1)
        text = f"{value:g}"
        return f"{text} {_plural(value, 'meter', 'meters')}", float(text)
    if meters < 1.0:
        if r < 0.6 or meters < 0.25:
            cm = max(1, round(meters * 100))
            unit = "centimeters" if r < 0.45 else "cm"
            return f"{cm} {unit}", cm / 100.0
        if r < 0.85:
            inches = round(meters / _INCH_M)
            return f"{inches} inches", inches * _INCH_M
        value = round(meters, 2)
        return f"{value:.2f} meters", value
    if r < 0.55 or (r < 0.75 and meters >= 3.0):
        value = round(meters, 1)
        text = f"{value:g}"
        return f"{text} {_plural(value, 'meter', 'meters')}", float(text)
    if r < 0.65:
        value = round(meters, 1)
        return f"{value:g} m", float(f"{value:g}")
    if r < 0.75:
        cm = round(meters * 100)
        return f"{cm} centimeters", cm / 100.0
    feet, inches = divmod(round(meters / _INCH_M), 12)
    ft_word = _plural(feet, "foot", "feet")
    if inches == 0:
        return f"{feet} {ft_word}", feet * 12 * _INCH_M
    joiner = " and " if r < 0.85 else " "
    in_word = _plural(inches, "inch", "inches")
    return f"{feet} {ft_word}{joiner}{inches} {in_word}", (feet * 12 + inches) * _INCH_M


# ------------------------------------------------------------------------------------------
# One question

def make_qa(category: str, a: ObjectInfo, b: ObjectInfo | None, regions: Sequence[int],
            rng: np.random.Generator, fx: float = 1.0, cx: float = 0.0,
            units: str = "mixed", wording: str = "varied") -> QA | None:
    """A question of `category` about A (and B), or None when its answer is not clear.

    regions: object indices named "Region [0]", "Region [1]", ... (must contain A and B).
    fx, cx: the camera's (left/right is checked against the image columns).
    units: how lengths are worded (format_length).
    wording: how answers are worded (WORDINGS); questions are always varied.
    """
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")

    def say(options: Sequence[str]) -> str:                  # the wording of an answer
        return _pick(rng, options) if wording == "varied" else options[0]

    def positions_first(answer: str, *objects: ObjectInfo) -> str:
        """"facts_all": both regions' positions, then "So <the plain answer>"."""
        if wording != "facts_all" or category not in POSITION_FACTS:
            return answer
        ordered = sorted(objects, key=lambda o: name[o.index])
        facts = " ".join(fact_sentence(name[o.index], o, POSITION_FACTS[category])
                         for o in ordered)
        return f"{facts} So {answer}"

    kind = category_kind(category)
    regions = tuple(int(i) for i in regions)
    single = category in SINGLE_OBJECT_CATEGORIES
    if not single and (b is None or b.index == a.index):
        raise ValueError(f"{category} needs two different objects")
    name = {obj: f"Region [{k}]" for k, obj in enumerate(regions)}
    if a.index not in name or (not single and b.index not in name):
        raise ValueError(f"objects {a.index}, {None if b is None else b.index} are not all "
                         f"among the regions {regions}")
    A = name[a.index]
    subjects = (a.index,) if single else (a.index, b.index)

    def qa(question: str, answer: str, value, stated) -> QA:
        return QA(category, question, answer, regions, subjects, value, stated)

    if kind in ("predicate", "choice"):
        B = name[b.index]
        relation = category_relation(category)
        truth = relation_holds(relation, a, b, fx, cx)
        if truth is None:
            return None
        facts = None
        if wording in ("facts", "facts_all"):
            facts = comparison_answer(relation, a, b, name, truth)
            if facts is None:                # the stated facts tie: not asked in this wording
                return None
        if kind == "predicate":
            p = _pick(rng, _PHRASES[relation])
            o = _pick(rng, _PHRASES[OPPOSITE[relation]])
            question = _pick(rng, _PREDICATE_Q).format(A=A, B=B, p=p)
            answer = facts or say(_PREDICATE_YES if truth else _PREDICATE_NO)
            return qa(question, answer.format(A=A, B=B, p=p, o=o), truth, truth)
        c = _pick(rng, _COMPARATIVES[relation])
        question = _pick(rng, _CHOICE_Q).format(A=A, B=B, c=c)
        chosen, other = (a, b) if truth else (b, a)
        c = _pick(rng, _COMPARATIVES[relation]) if wording == "varied" else c
        answer = facts or say(_CHOICE_A).format(X=name[chosen.index], Y=name[other.index], c=c)
        return qa(question, answer, chosen.index, name[chosen.index])

    if category == DIRECTION_CATEGORY:
        B = name[b.index]
        hours = clock_hours(a, b)
        n = whole_hour(hours)
        question = _pick(rng, _QUANT_Q[category]).format(A=A, B=B)
        answer = positions_first(say(_QUANT_A[category]).format(A=A, B=B, N=n), a, b)
        return qa(question, answer, hours, float(n))

    if category == "width_data":
        meters = a.size[0]
    elif category == "height_data":
        meters = a.size[1]
    elif category == "distance_data":
        meters = center_distance(a, b)
    elif category == "horizontal_distance_data":
        meters = horizontal_distance(a, b)
    else:
        meters = vertical_distance(a, b)
        if meters < MIN_VERTICAL_DISTANCE_M:
            return None
    text, stated = (format_length(meters, rng, units) if wording == "varied"
                    else plain_length(meters))
    fields = {"A": A, "X": text}
    if not single:
        fields["B"] = name[b.index]
        hi, lo = (a, b) if a.center_world[2] >= b.center_world[2] else (b, a)
        fields["H"], fields["L"] = name[hi.index], name[lo.index]
    question = _pick(rng, _QUANT_Q[category]).format(**fields)
    answer = say(_QUANT_A[category]).format(**fields)
    if not single:
        answer = positions_first(answer, a, b)
    return qa(question, answer, float(meters), float(stated))


# ------------------------------------------------------------------------------------------
# Many questions

class CategoryCycle:
    """An endless sequence of categories in shuffled rounds, so that all come up as often.

    Round r is a permutation drawn from np.random.default_rng([*key, r]), so position k of the
    sequence depends only on (key, k): a sample can start reading at its own offset and be
    regenerated alone. weights: how many times a category appears in one round (default: 1 for
    each qualitative category, 4 for each quantitative one, so both types are about as frequent).
    """

    def __init__(self, key: Sequence[int], categories: Sequence[str] = ALL_CATEGORIES,
                 weights: dict[str, int] | None = None, start: int = 0):
        if not categories:
            raise ValueError("categories must not be empty")
        for c in categories:
            category_kind(c)
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.key = tuple(int(k) for k in key)
        self.categories = tuple(categories)
        weights = weights or {
            c: 1 if category_kind(c) in ("predicate", "choice") else 4 for c in categories}
        self._round_items = tuple(c for c in self.categories for _ in range(weights.get(c, 1)))
        if not self._round_items:
            raise ValueError("weights leave no category to hand out")
        self.position = start
        self._cache: tuple[int, list[str]] | None = None

    def _round(self, r: int) -> list[str]:
        if self._cache is None or self._cache[0] != r:
            perm = np.random.default_rng([*self.key, r]).permutation(len(self._round_items))
            self._cache = (r, [self._round_items[int(i)] for i in perm])
        return self._cache[1]

    def next(self) -> str:
        r, k = divmod(self.position, len(self._round_items))
        self.position += 1
        return self._round(r)[k]


def _candidates(category: str, objects: Sequence[ObjectInfo]) -> list[tuple]:
    if category in SINGLE_OBJECT_CATEGORIES:
        return [(o, None) for o in objects]
    return [(a, b) for a in objects for b in objects if a.index != b.index]


def generate_qas(objects: Sequence[ObjectInfo], n: int, rng: np.random.Generator,
                 cycle: CategoryCycle, regions: Sequence[int] | None = None, fx: float = 1.0,
                 cx: float = 0.0, units: str = "mixed", wording: str = "varied") -> list[QA]:
    """Up to n questions about `objects` (already filtered to usable regions).

    regions: the naming shared by all questions (object indices, "Region [k]" = regions[k]);
    None gives each question its own naming, A = "Region [0]" and B = "Region [1]", as the
    bench items. Categories come from `cycle` (one that the scene cannot answer is skipped); no
    (category, objects) repeats.
    """
    out: list[QA] = []
    used: set[tuple] = set()
    tries = 0
    while len(out) < n and tries < 4 * len(cycle.categories) + n:
        tries += 1
        category = cycle.next()
        pairs = [p for p in _candidates(category, objects)
                 if (category, p[0].index, None if p[1] is None else p[1].index) not in used]
        order = rng.permutation(len(pairs)) if pairs else []
        made = None
        for k in order:
            a, b = pairs[int(k)]
            naming = regions if regions is not None else (
                (a.index,) if b is None else (a.index, b.index))
            made = make_qa(category, a, b, naming, rng, fx, cx, units, wording)
            if made is not None:
                used.add((category, a.index, None if b is None else b.index))
                break
        if made is not None:
            out.append(made)
    return out
