"""The audit of facts answers (spatialgeo_core.demo.conclusions) separates misread facts, facts
in the wrong quantity and conclusions that contradict their own facts."""
import json

from spatialgeo_core.demo.conclusions import audit, main, read_facts_answer, shown_relation


def _record(category: str, pred: str, success: bool) -> dict:
    return {"qa_info": {"type": "qualitative", "category": category}, "status": "ok",
            "pred": pred, "score": {"success": success}}


def test_a_facts_answer_is_read_with_its_signs_and_conclusion():
    facts = read_facts_answer("Region [0]: 1.2 m left. Region [1]: 0.4 m right. "
                              "So Region [0] is to the left of Region [1].")
    assert facts == {"quantity": "side", "values": {0: -1.2, 1: 0.4}, "relation": "left",
                     "first": 0, "second": 1}
    assert shown_relation(facts) == "left"
    vol = read_facts_answer("Region [1]: 0.35 cubic metres. Region [0]: 0.12 cubic metres. "
                            "So Region [0] is smaller than Region [1].")
    assert vol["quantity"] == "volume" and shown_relation(vol) == "small"
    assert read_facts_answer("Region [0] is to the left of Region [1].") is None
    assert read_facts_answer("Region [0]: 1.0 m up. Region [1]: 2.0 m wide. "
                             "So Region [0] is below Region [1].") is None   # two quantities


def test_the_audit_counts_each_way_to_be_wrong():
    results = [
        # consistent and right
        _record("behind_predicate", "Region [0]: 6.0 m ahead. Region [1]: 4.4 m ahead. "
                "So Region [0] is behind Region [1].", True),
        # consistent but wrong: the facts were misread
        _record("front_choice", "Region [0]: 3.0 m ahead. Region [1]: 6.4 m ahead. "
                "So Region [0] is in front of Region [1].", False),
        # contradicts its own facts
        _record("tall_choice", "Region [0]: 0.5 m tall. Region [1]: 0.9 m tall. "
                "So Region [0] is taller than Region [1].", False),
        # a tie: undecided
        _record("wide_predicate", "Region [0]: 0.5 m wide. Region [1]: 0.5 m wide. "
                "So Region [0] is thinner than Region [1].", False),
        # off topic: widths for an above question
        _record("above_predicate", "Region [0]: 0.7 m wide. Region [1]: 0.5 m wide. "
                "So Region [0] is wider than Region [1].", False),
        # not in the facts form
        _record("left_choice", "Region [0].", False),
        # not qualitative, or failed: not counted
        {"qa_info": {"type": "quantitative", "category": "width_data"}, "pred": "1 m"},
        {"qa_info": {"type": "qualitative", "category": "left_choice"}, "status": "error"},
    ]
    a = audit(results)
    assert a["qualitative"] == 6 and a["facts_form"] == 5 and a["on_topic"] == 4
    assert a["decided"] == 3 and a["consistent"] == 2
    assert a["consistent_pct"] == 66.7 and a["right_when_consistent_pct"] == 50.0
    assert a["right_pct"] == 16.7


def test_the_command_reads_a_results_file_and_refuses_a_bad_one(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_record("behind_predicate", "Region [0]: 6.0 m ahead. Region "
                                       "[1]: 4.4 m ahead. So Region [0] is behind Region [1].",
                                       True)) + "\n")
    assert main([str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["consistent"] == 1
    path.write_text("{not json\n")
    assert main([str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_every_fact_phrase_reads_back_as_its_quantity_and_stated_value():
    import re

    from spatialgeo_core.synthetic import SceneConfig, WorldConfig, iter_samples
    from spatialgeo_core.synthetic.facts import (
        FACT_PHRASE_PATTERN,
        QUANTITIES,
        fact_phrase,
        read_fact,
        stated,
    )
    world = WorldConfig(scene=SceneConfig(width=64, height=64), qa_per_image=1)
    for s in iter_samples(4, 3, "train", world):
        for info in s.rendering.objects:
            for q in QUANTITIES:
                m = re.fullmatch(FACT_PHRASE_PATTERN, fact_phrase(info, q))
                assert m is not None and read_fact(*m.groups()) == (q, stated(info, q))


def _length(category: str, pred: str, value, success: bool, kind: str = "distance") -> dict:
    return {"qa_info": {"type": "quantitative", "category": category}, "status": "ok",
            "pred": pred, "score": {"success": success, "kind": kind, "prediction_value": value}}


def test_positions_are_read_with_their_signs():
    from spatialgeo_core.demo.conclusions import implied_value, stated_positions
    pos = stated_positions("Region [0]: 3.0 m ahead, 0.4 m left, 0.6 m up. Region [1]: 7.0 m "
                           "ahead, 2.6 m right, 0.6 m up. So Region [0] and Region [1] are 5 m "
                           "apart.")
    assert pos == {0: {"ahead": 3.0, "side": -0.4, "up": 0.6},
                   1: {"ahead": 7.0, "side": 2.6, "up": 0.6}}
    assert implied_value("distance_data", pos) == 5.0                # a 3-4-5 triangle
    assert implied_value("horizontal_distance_data", pos) == 5.0
    assert implied_value("vertical_distance_data", pos) == 0.0       # no height difference
    assert round(implied_value("direction", pos), 2) == 1.23         # ahead, to the right
    assert implied_value("distance_data", {0: {"ahead": 1.0}, 1: {"ahead": 2.0}}) is None


def test_the_positions_audit_separates_arithmetic_from_reading():
    results = [
        # consistent and right
        _length("distance_data", "Region [0]: 3.0 m ahead, 0.4 m left, 0.6 m up. Region [1]: "
                "7.0 m ahead, 2.6 m right, 0.6 m up. So Region [0] and Region [1] are 5.2 m "
                "apart.", 5.2, True),
        # consistent but wrong: the positions were misread
        _length("distance_data", "Region [0]: 3.0 m ahead, 0.4 m left, 0.6 m up. Region [1]: "
                "7.0 m ahead, 2.6 m right, 0.6 m up. So Region [0] and Region [1] are 4.5 m "
                "apart.", 4.5, False),
        # arithmetic off: 2 m from positions 5 m apart
        _length("distance_data", "Region [0]: 3.0 m ahead, 0.4 m left, 0.6 m up. Region [1]: "
                "7.0 m ahead, 2.6 m right, 0.6 m up. So Region [0] and Region [1] are 2 m "
                "apart.", 2.0, True),
        # no positions stated
        _length("distance_data", "Region [0] and Region [1] are 2 m apart.", 2.0, False),
        # a direction from A = Region [0] to B = Region [1], consistent
        _length("direction", "Region [0]: 3.0 m ahead, 0.4 m left. Region [1]: 7.0 m ahead, "
                "2.6 m right. So Region [1] is at 1 o'clock from Region [0].", 1.0, True,
                "direction"),
        # equal stated heights: tied, left out of the consistency
        _length("vertical_distance_data", "Region [0]: 0.5 m up. Region [1]: 0.5 m up. So "
                "Region [0] and Region [1] are 0.2 m apart vertically.", 0.2, True),
        # single-region lengths are not audited here
        _length("width_data", "Region [0] is 0.5 m wide.", 0.5, True),
    ]
    from spatialgeo_core.demo.conclusions import audit_positions
    a = audit_positions(results)
    assert set(a) == {"distance_data", "direction", "vertical_distance_data"}
    v = a["vertical_distance_data"]
    assert (v["positions_form"], v["tied"], v["consistent"]) == (1, 1, 0)
    assert v["consistent_pct"] is None
    d = a["distance_data"]
    assert (d["answers"], d["right"], d["positions_form"], d["consistent"]) == (4, 2, 3, 2)
    assert d["consistent_pct"] == 66.7 and d["right_when_consistent_pct"] == 50.0
    assert a["direction"]["consistent"] == 1
    assert audit(results)["positions"] == a
