"""Each region's facts, worded one way, and the sentence that concludes a comparison from them.

A fact is one quantity of one object, defined exactly as the question truth that uses it
(questions.py; world frame of camera.py: z up, +y ahead, +x right):

    quantity  what                                   wording                used by
    ahead     forward distance of the centre (y)     "3.2 m ahead"          behind / front
    side      sideways offset of the centre (x)      "0.4 m left"           left / right
    up        height of the centre above ground (z)  "0.6 m up"             above / below
    wide      width of the bounding box (x)          "0.5 m wide"           wide / thin
    tall      height of the bounding box (z)         "0.8 m tall"           tall / short
    volume    volume of the solid                    "0.35 cubic metres"    big / small

Lengths are stated with one decimal and volumes with two, always in the same form ("d.d",
"d.dd"), so that comparing two stated values is comparing digits. A comparison's answer states
both regions' facts, then concludes with one sentence whose wording depends only on the stated
facts: "So Region [0] is <relation> Region [1]." for the relation of the group that holds
(left or right, above or below, ...), never on which relation the question named or whether it
asked yes/no or which one. Stage-1 captions state every quantity (demo/data.py), so a fact an
answer states is one the model has learned to read.
"""
from __future__ import annotations

from collections.abc import Sequence

from spatialgeo_core.synthetic.render import ObjectInfo

QUANTITIES: tuple[str, ...] = ("ahead", "side", "up", "wide", "tall", "volume")
# the quantity a relation compares, and the relation that holds when A's quantity is the larger
RELATION_QUANTITY: dict[str, str] = {
    "left": "side", "right": "side", "behind": "ahead", "front": "ahead", "above": "up",
    "below": "up", "tall": "tall", "short": "tall", "wide": "wide", "thin": "wide",
    "big": "volume", "small": "volume",
}
_LARGER: dict[str, str] = {"side": "right", "ahead": "behind", "up": "above", "tall": "tall",
                           "wide": "wide", "volume": "big"}
_SMALLER: dict[str, str] = {"side": "left", "ahead": "front", "up": "below", "tall": "short",
                            "wide": "thin", "volume": "small"}
# the one phrase each relation is concluded with: "So Region [0] is <phrase> Region [1]."
CONCLUSION_PHRASE: dict[str, str] = {
    "left": "to the left of", "right": "to the right of", "above": "above", "below": "below",
    "behind": "behind", "front": "in front of", "tall": "taller than", "short": "shorter than",
    "wide": "wider than", "thin": "thinner than", "big": "bigger than", "small": "smaller than",
}


def quantity(info: ObjectInfo, name: str) -> float:
    """The exact value of a quantity (metres, or m^3 for volume)."""
    if name == "ahead":
        return float(info.center_world[1])
    if name == "side":
        return float(info.center_world[0])
    if name == "up":
        return float(info.center_world[2])
    if name == "wide":
        return float(info.size[0])
    if name == "tall":
        return float(info.size[1])
    if name == "volume":
        return float(info.volume)
    raise ValueError(f"unknown quantity {name!r}; known: {QUANTITIES}")


def stated(info: ObjectInfo, name: str) -> float:
    """The value as the fact states it (rounded as worded; side keeps its sign)."""
    return round(quantity(info, name), 2 if name == "volume" else 1)


def fact_phrase(info: ObjectInfo, name: str) -> str:
    """One quantity of one object as a fact: "3.2 m ahead", "0.4 m left", "0.35 cubic metres"."""
    value = stated(info, name)
    if name == "volume":
        return f"{value:.2f} cubic metres"
    if name == "side":
        return f"{abs(value):.1f} m {'right' if value >= 0 else 'left'}"
    return f"{value:.1f} m {name}"


# a fact_phrase as text: its number and its unit words ("3.2", "m ahead"); read_fact reads them
FACT_PHRASE_PATTERN = r"(-?\d+(?:\.\d+)?) (m ahead|m left|m right|m up|m wide|m tall|cubic metres)"
_UNIT_QUANTITY = {"m ahead": "ahead", "m left": "side", "m right": "side", "m up": "up",
                  "m wide": "wide", "m tall": "tall", "cubic metres": "volume"}


def read_fact(number: str, unit: str) -> tuple[str, float]:
    """The inverse of fact_phrase: (quantity, value), side signed (left is negative)."""
    return _UNIT_QUANTITY[unit], float(number) * (-1.0 if unit == "m left" else 1.0)


def fact_sentence(label: str, info: ObjectInfo, names: Sequence[str]) -> str:
    """"Region [0]: 3.2 m ahead, 0.4 m left." (label, then the quantities in the order given)."""
    return f"{label}: " + ", ".join(fact_phrase(info, n) for n in names) + "."


def stated_relation(group_quantity: str, a: ObjectInfo, b: ObjectInfo) -> str | None:
    """The relation that A's and B's stated facts show ("left" when A's stated sideways offset is
    the smaller); None when the stated values tie."""
    return relation_of(group_quantity, stated(a, group_quantity), stated(b, group_quantity))


def relation_of(group_quantity: str, va: float, vb: float) -> str | None:
    """The relation of A to B when A's value of the quantity is va and B's is vb ("behind" when
    A is further ahead); None on a tie."""
    if va == vb:
        return None
    return _LARGER[group_quantity] if va > vb else _SMALLER[group_quantity]


def conclusion(relation: str, first: str = "Region [0]", second: str = "Region [1]") -> str:
    """The closing sentence: "So Region [0] is to the left of Region [1]."."""
    return f"So {first} is {CONCLUSION_PHRASE[relation]} {second}."


def comparison_answer(relation: str, a: ObjectInfo, b: ObjectInfo, names: dict[int, str],
                      truth: bool) -> str | None:
    """The facts answer to a question about `relation` between A and B (truth: whether "A is
    <relation> B" holds): each region's fact in the relation's quantity, first Region [0]'s, then
    the canonical conclusion about Region [0] and Region [1] (names: object index -> label, A and
    B among them). None when the stated facts tie or disagree with the truth (then the question
    is better not trained on in this wording)."""
    group = RELATION_QUANTITY[relation]
    first, second = sorted((a, b), key=lambda o: names[o.index])
    shown = stated_relation(group, first, second)
    if shown is None:
        return None
    holds_for_a = (shown == relation) == (first.index == a.index)
    if holds_for_a != truth:
        return None
    facts = " ".join(fact_sentence(names[o.index], o, (group,)) for o in (first, second))
    return f"{facts} {conclusion(shown, names[first.index], names[second.index])}"
