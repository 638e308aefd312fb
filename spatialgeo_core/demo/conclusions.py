"""Where a facts answer goes wrong: reading the regions, choosing the quantity, or concluding.

A two-region answer of the demo states each region's fact, then concludes (synthetic/facts.py):
"Region [0]: 3.0 m ahead. Region [1]: 6.4 m ahead. So Region [0] is in front of Region [1]."
Scored against the truth, such an answer is wrong for one of three reasons, which this audit
separates on an evaluation's results.jsonl (qualitative items):

- facts form: the answer has two facts and a conclusion in the trained form;
- on topic: the facts are in the quantity the question compares (ahead for behind/front, ...);
- consistent: the conclusion is the relation the stated numbers show (ties left out);
- right when consistent and on topic: then a wrong answer can only come from misread facts.

A two-region length or direction answer in the "facts_all" wording states both regions'
positions, then its result: "Region [0]: 3.2 m ahead, 0.4 m left, 0.6 m up. Region [1]: ...
So Region [0] and Region [1] are 1.8 m apart." audit_positions separates, per category, answers
whose result follows from their own stated positions (by the truth's definition, questions.py,
and the scorer's tolerance: within 25 %, or one clock hour) from those whose arithmetic is off;
right when consistent again isolates misread positions.

`python -m spatialgeo_core.demo.conclusions RESULTS.jsonl` prints the counts as JSON.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

from spatialgeo_core.answer_parsing import category_relation
from spatialgeo_core.eval.metrics import score_values
from spatialgeo_core.synthetic.facts import (
    CONCLUSION_PHRASE,
    FACT_PHRASE_PATTERN,
    RELATION_QUANTITY,
    read_fact,
    relation_of,
)
from spatialgeo_core.synthetic.questions import (
    DIRECTION_CATEGORY,
    POSITION_FACTS,
    center_distance,
    clock_hours,
    horizontal_distance,
    vertical_distance,
)

_FACT = rf"Region \[(\d)\]: {FACT_PHRASE_PATTERN}\."
_PHRASE = {v: k for k, v in CONCLUSION_PHRASE.items()}
_ANSWER = re.compile(
    rf"{_FACT}\s+{_FACT}\s+So Region \[(\d)\] is "
    rf"({'|'.join(sorted(map(re.escape, _PHRASE), key=len, reverse=True))}) Region \[(\d)\]\.")


def read_facts_answer(text: str) -> dict | None:
    """{quantity, values: {region: value}, relation, first, second} of a facts answer, or None
    when the text is not one (two facts in one quantity, then "So Region [i] is ... Region [j].").
    """
    m = _ANSWER.search(text)
    if m is None:
        return None
    k1, v1, u1, k2, v2, u2, first, phrase, second = m.groups()
    (q1, a), (q2, b) = read_fact(v1, u1), read_fact(v2, u2)
    if q1 != q2 or k1 == k2:
        return None
    return {"quantity": q1, "values": {int(k1): a, int(k2): b}, "relation": _PHRASE[phrase],
            "first": int(first), "second": int(second)}


def shown_relation(facts: dict) -> str | None:
    """The relation of `first` to `second` that the stated values show; None on a tie or when a
    region of the conclusion has no stated fact."""
    values, q = facts["values"], facts["quantity"]
    if facts["first"] not in values or facts["second"] not in values:
        return None
    return relation_of(q, values[facts["first"]], values[facts["second"]])


def _pct(a: int, b: int) -> float | None:
    return round(100.0 * a / b, 1) if b else None


def stated_positions(text: str) -> dict[int, dict[str, float]]:
    """{region: {quantity: value}} of the facts an answer states before " So " (side signed):
    "Region [0]: 3.2 m ahead, 0.4 m left." -> {0: {"ahead": 3.2, "side": -0.4}}."""
    head = text.split(" So ", 1)[0]
    parts = re.split(r"Region \[(\d)\]: ", head)
    return {int(k): dict(read_fact(v, u) for v, u in re.findall(FACT_PHRASE_PATTERN, seg))
            for k, seg in zip(parts[1::2], parts[2::2], strict=True)}


# the truth of each two-region category, on objects whose centre is (x right, y ahead, z up)
_TRUTH = {"distance_data": center_distance, "horizontal_distance_data": horizontal_distance,
          "vertical_distance_data": vertical_distance, DIRECTION_CATEGORY: clock_hours}


def implied_value(category: str, positions: dict[int, dict[str, float]]) -> float | None:
    """What the stated positions of Region [0] (A, as the held-out items name the asked regions)
    and Region [1] (B) give for `category`, by the truth's own definition; None when a position
    the category needs (POSITION_FACTS) is not stated."""
    need = POSITION_FACTS[category]
    if any(q not in positions.get(k, {}) for k in (0, 1) for q in need):
        return None
    a, b = (SimpleNamespace(center_world=tuple(positions[k].get(q, 0.0)
                                               for q in ("side", "ahead", "up"))) for k in (0, 1))
    return _TRUTH[category](a, b)


def audit_positions(results: Iterable[dict]) -> dict:
    """Per two-region length or direction category of an eval-bench results.jsonl: answers, right,
    in the positions form (both regions' needed positions stated), tied (a length whose stated
    positions coincide: 0 m, which no stated length matches; left out of the consistency),
    consistent (the stated result scored against what the stated positions give succeeds) and
    right when consistent."""
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        info, score = r.get("qa_info") or {}, r.get("score") or {}
        category = info.get("category")
        if category not in POSITION_FACTS or r.get("status", "ok") != "ok":
            continue
        c = counts.setdefault(category, dict.fromkeys(
            ("answers", "right", "positions_form", "tied", "consistent", "right_consistent"), 0))
        c["answers"] += 1
        c["right"] += bool(score.get("success"))
        implied = implied_value(category, stated_positions(r.get("pred") or ""))
        if implied is None:
            continue
        c["positions_form"] += 1
        if implied == 0 and category != DIRECTION_CATEGORY:
            c["tied"] += 1
            continue
        stated = score.get("prediction_value")
        if stated is not None and score_values(category, score.get("kind", "distance"),
                                               implied, stated).success:
            c["consistent"] += 1
            c["right_consistent"] += bool(score.get("success"))
    return {cat: {**c, "right_pct": _pct(c["right"], c["answers"]),
                  "positions_form_pct": _pct(c["positions_form"], c["answers"]),
                  "consistent_pct": _pct(c["consistent"], c["positions_form"] - c["tied"]),
                  "right_when_consistent_pct": _pct(c["right_consistent"], c["consistent"])}
            for cat, c in sorted(counts.items())}


def audit(results: Iterable[dict]) -> dict:
    """Counts over the qualitative records of an eval-bench results.jsonl (see module doc), and
    under "positions" audit_positions of its two-region length and direction records."""
    results = list(results)
    n = form = on_topic = decided = consistent = right = right_consistent = 0
    for r in results:
        info = r.get("qa_info") or {}
        if info.get("type") != "qualitative" or r.get("status", "ok") != "ok":
            continue
        n += 1
        correct = bool((r.get("score") or {}).get("success"))
        right += correct
        facts = read_facts_answer(r.get("pred") or "")
        if facts is None:
            continue
        form += 1
        if facts["quantity"] != RELATION_QUANTITY[category_relation(info["category"])]:
            continue
        on_topic += 1
        shown = shown_relation(facts)
        if shown is None:
            continue
        decided += 1
        if shown == facts["relation"]:
            consistent += 1
            right_consistent += correct
    return {"qualitative": n, "right_pct": _pct(right, n),
            "facts_form": form, "facts_form_pct": _pct(form, n),
            "on_topic": on_topic, "on_topic_pct": _pct(on_topic, form),
            "decided": decided, "consistent": consistent,
            "consistent_pct": _pct(consistent, decided),
            "right_when_consistent_pct": _pct(right_consistent, consistent),
            "positions": audit_positions(results)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m spatialgeo_core.demo.conclusions RESULTS.jsonl", file=sys.stderr)
        return 2
    try:
        lines = Path(argv[0]).read_text(encoding="utf-8").splitlines()
        results = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as e:
        print(f"conclusions: cannot read {argv[0]}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(audit(results), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
