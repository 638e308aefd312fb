"""The length arithmetic check (demo/arithmetic.py): held-out drills, scoring, greedy stop."""
from types import SimpleNamespace

import pytest
import torch

from spatialgeo_core.demo.arithmetic import (
    HELD_OUT_FROM,
    category_of,
    complete,
    held_out_drills,
    score_completions,
    split_answer,
)
from spatialgeo_core.kv_cache import CACHE_ARG


def test_held_out_drills_come_from_scenes_no_recipe_reaches():
    drills = held_out_drills(3)
    scenes = {int(d["id"].split("-")[3]) for d in drills}
    assert scenes == {HELD_OUT_FROM, HELD_OUT_FROM + 1, HELD_OUT_FROM + 2}
    assert {category_of(d) for d in drills} <= {
        "distance_data", "horizontal_distance_data", "vertical_distance_data", "direction"}
    for d in drills:
        facts, result = split_answer(d["conversations"][1]["value"])
        assert d["conversations"][0]["value"].startswith(facts) and result.startswith("So ")


def test_completions_are_scored_as_the_bench_scores_them():
    """The drill's own result scores right; 30 % off, another clock hour two away, or no "So"
    sentence scores wrong."""
    drills = held_out_drills(4)
    right = [split_answer(d["conversations"][1]["value"])[1] for d in drills]
    assert all(c["right"] == c["answers"] > 0 for c in score_completions(drills, right).values())

    def off(text: str, category: str) -> str:
        if category == "direction":
            hour = int(text.split(" at ")[1].split(" ")[0])
            return text.replace(f" at {hour} ", f" at {(hour + 1) % 12 + 2} ")
        value = text.split(" m ")[0].split(" ")[-1]
        return text.replace(f" {value} m ", f" {float(value) * 1.3:.2f} m ")

    wrong = [off(t, category_of(d)) for t, d in zip(right, drills, strict=True)]
    scores = score_completions(drills, wrong)
    assert all(c["right"] == 0 for c in scores.values()), scores
    assert all(c["right"] == 0 for c in score_completions(
        drills, [t.replace("So ", "") for t in right]).values())
    with pytest.raises(ValueError):
        score_completions(drills, right[:-1])


class _Chars:
    """A tokenizer whose ids are characters (eos 0) and a LLaMA (`.llm`) that spells `script`:
    its n-th forward (the prompt's, then one a new token) predicts script[n]."""

    eos_id = 0

    def __init__(self, script: str):
        self.script, self.calls = script, 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def llm(self, input_ids: torch.Tensor, use_cache: bool = True, **cache) -> SimpleNamespace:
        n, self.calls = self.calls, self.calls + 1
        logits = torch.zeros(1, input_ids.shape[1], 256)
        logits[0, -1, ord(self.script[n]) if n < len(self.script) else 0] = 1.0
        return SimpleNamespace(logits=logits, **{CACHE_ARG: None})


def test_greedy_completion_stops_at_the_full_stop_not_the_decimal_point():
    fake = _Chars(" So Region [0] is about 4.8 m from Region [1]. Region [2]: more")
    assert complete(fake, fake, "Q") == " So Region [0] is about 4.8 m from Region [1]."
    fake = _Chars(" So they are 12.5")                       # eos ends it too
    assert complete(fake, fake, "Q") == " So they are 12.5"
