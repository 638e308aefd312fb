"""The single-region reading evaluation: descriptions parsed back, scored against the truth and
set beside the training median's score."""
import pytest

from spatialgeo_core.demo.reading import read_description, score_reading

TRUTH = {"colour": "red", "shape": "box", "ahead": 4.0, "side": -0.5, "up": 0.6, "wide": 0.8,
         "tall": 1.0, "volume": 0.5}


def test_a_description_reads_back_per_region():
    text = ("Region [0]: red box, 4.2 m ahead, 0.4 m left, 0.6 m up, 0.8 m wide, 1.3 m tall, "
            "0.52 cubic metres. Region [1]: blue sphere, 2.0 m ahead, 1.1 m right, 0.3 m up, "
            "0.6 m wide, 0.6 m tall, 0.11 cubic metres. Region [2]: garbled")
    got = read_description(text)
    assert set(got) == {0, 1}
    assert got[0] == {"colour": "red", "shape": "box", "ahead": 4.2, "side": -0.4, "up": 0.6,
                      "wide": 0.8, "tall": 1.3, "volume": 0.52}
    assert got[1]["side"] == 1.1
    assert read_description("nothing here") == {}


def test_reading_scores_count_missing_descriptions_as_failures():
    medians = {"ahead": 4.9, "side": 0.0, "up": 0.5, "wide": 0.8, "tall": 0.7, "volume": 0.4}
    good = {**TRUTH, "ahead": 4.9, "tall": 1.3, "side": 0.2}         # 22 % / 30 % off, wrong side
    scores = score_reading([TRUTH, TRUTH], [good, None], medians)
    assert scores["regions"] == 2 and scores["described_pct"] == 50.0
    assert scores["colour_pct"] == 50.0
    assert scores["ahead"]["within_25_pct"] == 50.0
    assert scores["tall"]["within_25_pct"] == 0.0
    assert scores["ahead"]["median_prior_within_25_pct"] == 100.0    # 4.9 is within 25 % of 4
    assert scores["tall"]["median_prior_within_25_pct"] == 0.0
    assert scores["side"]["side_right_pct"] == 0.0
    assert scores["side"]["median_abs_error_m"] == pytest.approx(0.7)
    assert scores["up"]["median_prior_abs_error_m"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no region"):
        score_reading([], [], medians)
