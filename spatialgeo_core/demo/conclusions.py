"""Where a facts answer goes wrong: reading the regions, choosing the quantity, or concluding.

A two-region answer of the demo states each region's fact, then concludes (synthetic/facts.py):
"Region [0]: 3.0 m ahead. Region [1]: 6.4 m ahead. So Region [0] is in front of Region [1]."
Scored against the truth, such an answer is wrong for one of three reasons, which this audit
separates on an evaluation's results.jsonl (qualitative items):

- facts form: the answer has two facts and a conclusion in the trained form;
- on topic: the facts are in the quantity the question compares (ahead for behind/front, ...);
- consistent: the conclusion is the relation the stated numbers show (ties left out);
- right when consistent and on topic: then a wrong answer can only come from misread facts.

`python -m spatialgeo_core.demo.conclusions RESULTS.jsonl` prints the counts as JSON.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from spatialgeo_core.answer_parsing import category_relation
from spatialgeo_core.synthetic.facts import (
    CONCLUSION_PHRASE,
    FACT_PHRASE_PATTERN,
    RELATION_QUANTITY,
    read_fact,
    relation_of,
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


def audit(results: Iterable[dict]) -> dict:
    """Counts over the qualitative records of an eval-bench results.jsonl (see module doc)."""
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
            "right_when_consistent_pct": _pct(right_consistent, consistent)}


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
