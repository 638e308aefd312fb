"""SpatialScore v0 scoring: every upstream rule and quirk, in both modes.

Each case is (question_type, source, answer, reference, upstream score, strict score); the
expected scores are worked out by hand from upstream's rules (version_0/utils/util.py and the
scoring block of version_0/test_qwen.py), not computed with the code under test."""
from __future__ import annotations

import pytest

from spatialgeo_core.eval.spatialscore.scoring import (
    FIRST_LETTER,
    RIGHT_AS_YES,
    UNKNOWN_UNIT,
    aggregate,
    mean_relative_accuracy,
    read_length,
    read_number,
    read_option,
    read_yes_no,
    reference_is_length,
    score_answer,
)

MC, YN, OPEN = "multi-choice", "judgment", "open-ended"

CASES = [
    # --- multiple choice --------------------------------------------------------------------
    (MC, "cvbench", "B", "B", 1, 1),                            # the whole answer is a letter
    (MC, "cvbench", "b.", "(B)", 1, 1),                         # ... with a period; "(B)" ref
    (MC, "cvbench", "D", "B", 0, 0),
    (MC, "BLINK", "ASSISTANT: (c) the cup", "C", 1, 1),         # "ASSISTANT:" then a letter
    (MC, "BLINK", "<conclusion>(D) Yes.</conclusion>", "D", 1, 1),
    (MC, "BLINK", "<CONCLUSION>e</CONCLUSION>", "(E)", 1, 1),
    (MC, "MMVP", "The answer: (A)", "A", 1, 1),                 # "answer" then a letter
    (MC, "MMVP", "I cannot answer accurately", "A", 1, 1),      # ... "answer a(ccurately)"
    (MC, "MMVP", "Option c, the red one", "C", 1, 1),
    (MC, "MMVP", "I pick (b) here", "B", 1, 1),                 # a letter in parentheses
    (MC, "MMVP", "It is a cube", "A", 1, 1),                    # the article "a" is option A
    (MC, "MMVP", "Surely D.", "D", 1, 1),                       # a lone letter
    (MC, "MMVP", "(a) Left", "(a)", 1, 1),
    # the first-letter fallback: "The chair" is E upstream, unreadable strictly
    (MC, "3DSRBench", "The chair", "(E)", 1, 0),
    (MC, "3DSRBench", "Region [1] is 3.1 m away.", "B", 0, 0),  # "Region" -> E upstream
    # upstream's fallback finds the "a" of "<answer>"; strict reads the tag-free "b"
    (MC, "3DSRBench", "<answer>b</answer>", "B", 0, 1),
    (MC, "3DSRBench", "", "B", 0, 0),
    # --- judgment ---------------------------------------------------------------------------
    (YN, "SpatialSense", "yes", "Yes", 1, 1),
    (YN, "SpatialSense", " NO ", "No", 1, 1),
    (YN, "SpatialSense", "Yes, it is.", "Yes", 1, 1),
    (YN, "SpatialSense", "<conclusion>no</conclusion>", "No", 1, 1),
    (YN, "SpatialSense", "I agree with that", "Yes", 1, 1),
    (YN, "SpatialSense", "Nope, that is false", "No", 1, 1),
    (YN, "SpatialSense", "That is incorrect", "No", 1, 1),       # "incorrect" is not "correct"
    (YN, "SpatialSense", "That is not correct.", "No", 0, 0),   # yes words first: "correct"
    (YN, "SpatialSense", "No, it is on the right.", "No", 0, 1),  # "right" is yes upstream
    (YN, "VSR-ZeroShot", "The cup is to the right.", "Yes", 1, 0),
    (YN, "VSR-ZeroShot", "ASSISTANT: B", "Yes", 0, 0),          # a letter, never yes/no
    (YN, "VSR-ZeroShot", "Maybe.", "No", 0, 0),
    (YN, "VGBench", "Region [1] is further away.6 m from Region [1] is not smaller.", "No", 1, 1),
    # --- open-ended lengths -----------------------------------------------------------------
    (OPEN, "VGBench", r"\scalar{1.7} \distance_unit{meters}", "1.72 meters", 1, 1),
    (OPEN, "VGBench", "It is about 170 cm.", "1.72 meters", 1, 1),
    (OPEN, "VGBench", "so the distance is **2.8 meters**", "1.72 meters", 1, 1),
    (OPEN, "VGBench", "roughly 5 ft", "1.72 meters", 1, 1),      # 152.4 cm vs 172 cm
    (OPEN, "QSpatialBench-Plus", "68 inches", "1.72 meters", 1, 1),
    (OPEN, "VGBench", "0.9 meters", "1.72 meters", 1, 1),        # ratio 1.91 < 2
    (OPEN, "VGBench", "0.86 meters", "1.72 meters", 0, 0),       # ratio exactly 2: wrong
    (OPEN, "VGBench", "3.5 m", "1.72 meters", 0, 0),             # ratio 2.03
    (OPEN, "VGBench", "1.72", "1.72 meters", 0, 0),              # no unit: wrong
    (OPEN, "VGBench", "I cannot tell", "1.72 meters", 0, 0),     # no value
    (OPEN, "VGBench", "0 meters", "0.00 meters", 1, 1),          # both zero
    (OPEN, "VGBench", "0 m", "1.72 meters", 0, 0),
    # an unknown unit is cm upstream, a failure strictly
    (OPEN, "VGBench", "170 centimetres", "1.72 meters", 1, 0),
    (OPEN, "QSpatialBench-ScanNet", "17 decimeters", "20 cm", 1, 0),
    (OPEN, "VGBench", "1 km", "1.72 meters", 0, 0),              # 1 "cm" upstream
    (OPEN, "VGBench", "Region [1] is at 1 o'clock", "7.69 meters", 0, 0),  # 1 "o"
    # value and unit are found apart: 1.8 from \scalar, "cm" from "180 cm"
    (OPEN, "VGBench", r"\scalar{1.8} (that is 180 cm)", "1.72 meters", 0, 0),
    (OPEN, "VGBench", r"\scalar{2} and 150 cm", "2 cm", 1, 1),
    (OPEN, "VGBench", r"\scalar{two} \distance_unit{m} 1.7 m", "1.72 meters", 0, 0),  # final
    # any "m" in the reference makes it a length: a bare number is then wrong
    (OPEN, "spatialbench", "5", "5 mugs", 0, 0),
    # --- other numbers: exact equality ------------------------------------------------------
    (OPEN, "spatialbench", "5", "5", 1, 1),
    (OPEN, "spatialbench", "There are four chairs.", "4", 1, 1),
    (OPEN, "spatialbench", "4.0", "4", 1, 1),
    (OPEN, "spatialbench", "-3", "3", 1, 1),                     # no sign
    (OPEN, "spatialbench", "seventeen", "17", 0, 0),             # "seven" comes first
    (OPEN, "spatialbench", "it shows twelve", "12", 1, 1),
    (OPEN, "spatialbench", "<conclusion>6</conclusion>", "6", 1, 1),
    (OPEN, "spatialbench", "none", "0", 1, 1),                   # unreadable is 0.0
    (OPEN, "spatialbench", "ASSISTANT: a", "3", 0, 0),
    (OPEN, "spatialbench", "3", "three", 1, 1),                  # the reference is read too
    (OPEN, "spatialbench", "3", "many", 0, 0),                   # upstream stops; here 0
    # --- RealWorldQA: the whole text, case-insensitive --------------------------------------
    (OPEN, "RealWorldQA", "Red", "red", 1, 1),
    (OPEN, "RealWorldQA", "Red.", "red", 0, 0),
]


@pytest.mark.parametrize("qtype, source, pred, ref, upstream, strict", CASES)
def test_rules_and_quirks(qtype, source, pred, ref, upstream, strict):
    assert score_answer(qtype, source, pred, ref, "upstream").score == upstream
    assert score_answer(qtype, source, pred, ref, "strict").score == strict


@pytest.mark.parametrize("pred, ref, want", [
    ("5", "5", 1.0),              # no error: all 10 thresholds
    ("5.2", "5", 1.0),            # 4 % error passes the 0.95 threshold (5 %)
    ("5.3", "5", 0.9),            # 6 %: 9 of upstream's 10 thresholds (9 of 11 would be 0.82)
    ("4.1", "5", 0.7),            # 18 %: thresholds 0.50 .. 0.80
    ("10", "5", 0.0),
    ("0", "5", 0.0),              # a zero answer scores only a zero reference
    ("zero", "0", 1.0),
    ("7", "0", 0.0),              # error against 0 is infinite
])
def test_vsi_bench_mean_relative_accuracy(pred, ref, want):
    for mode in ("upstream", "strict"):
        got = score_answer(OPEN, "VSI-Bench_8", pred, ref, mode)
        assert got.rule == "mra" and got.score == pytest.approx(want)


def test_ten_thresholds_as_upstream_computes_them():
    # an error of exactly 0 passes every threshold, one of 0.49 only t = 0.50: 1/10, not 1/11
    assert mean_relative_accuracy(5.0, 5.0) == 1.0
    assert mean_relative_accuracy(1.49, 1.0) == pytest.approx(0.1)


def test_quirks_are_named_where_they_decide():
    assert score_answer(MC, "cvbench", "The chair", "E").quirks == (FIRST_LETTER,)
    assert score_answer(MC, "cvbench", "B", "B").quirks == ()
    assert score_answer(YN, "VGBench", "on the right", "Yes").quirks == (RIGHT_AS_YES,)
    assert score_answer(YN, "VGBench", "yes, on the right", "Yes").quirks == ()
    assert score_answer(OPEN, "VGBench", "170 centimetres", "1.72 meters").quirks == (
        UNKNOWN_UNIT,)
    strict = score_answer(OPEN, "VGBench", "170 centimetres", "1.72 meters", "strict")
    assert strict.quirks == () and "centimetres" in strict.detail


def test_readers():
    assert read_option("The chair", "upstream") == ("E", (FIRST_LETTER,))
    assert read_option("The chair", "strict") == ("The chair", ())
    assert read_option("<answer>b</answer>", "strict") == ("b", ())
    assert read_yes_no("on the right", "strict") == ("on the right", ())
    assert read_number("There is one cup") == "1"
    assert read_number("tenth") == "10"                           # via "ten"
    assert read_number("no idea") == "no idea"
    assert read_length(r"**2.5 m** or \distance_unit{feet}") == (2.5, "feet")
    assert read_length("1.72") == (None, None)                   # a bare number: no unit
    assert read_length("just 3") == (None, None)
    assert reference_is_length("12 items") and not reference_is_length("12")


def test_question_type_and_mode_are_checked():
    assert score_answer("Multi-Choice", "cvbench", "B", "B").score == 1.0     # lower-cased
    with pytest.raises(ValueError, match="unknown question_type"):
        score_answer("counting", "cvbench", "3", "3")
    with pytest.raises(ValueError, match="mode"):
        score_answer(MC, "cvbench", "B", "B", "lenient")


def test_aggregate_blocks():
    items = [({"source": "VGBench", "category": "Depth", "question_type": OPEN}, 1.0),
             ({"source": "VGBench", "category": "Depth", "question_type": MC}, 0.0),
             ({"source": "VSI-Bench_8", "category": "Counting", "question_type": OPEN}, 0.7),
             ({"category": "Counting", "question_type": OPEN}, 0.0)]
    got = aggregate(items)
    assert got["overall"] == {"accuracy": pytest.approx(42.5), "score_sum": pytest.approx(1.7),
                              "total": 4}
    assert got["by_source"]["VGBench"] == {"accuracy": 50.0, "score_sum": 1.0, "total": 2}
    assert got["by_source"]["unknown"]["total"] == 1
    assert got["by_category"]["Counting"]["accuracy"] == pytest.approx(35.0)
    assert got["by_question_type"][MC] == {"accuracy": 0.0, "score_sum": 0.0, "total": 1}
    assert aggregate([])["overall"] == {"accuracy": 0.0, "score_sum": 0.0, "total": 0}
