"""The markdown report: files exist, numbers are in it, absent sections do not break it."""
from spatialgeo_core.eval.metrics import aggregate, score_item
from spatialgeo_core.eval.report import (
    LATENCY_PLOT,
    QUALITATIVE_PLOT,
    QUANTITATIVE_PLOT,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores():
    q_left = "Is Region [0] to the left of Region [1]?"
    q_dist = "How far is Region [0] from Region [1]?"
    yes_left = "Yes, Region [0] is to the left of Region [1]."
    return [
        score_item("left_predicate", q_left, "Yes.", yes_left),
        score_item("left_predicate", q_left, "No.", yes_left),
        score_item("right_predicate", q_left.replace("left", "right"), "Yes.", "Yes, it is."),
        score_item("distance_data", q_dist, "2.2 m", "2 meters"),
        score_item("distance_data", q_dist, "9 m", "2 meters"),
        score_item("direction", "Where?", "at 2 o'clock", "3 o'clock"),
    ]


def test_report_has_tables_numbers_and_plots(tmp_path):
    scores = _scores()
    metrics = aggregate(scores)
    results = [{**s.to_dict(), "latency_ms": 100.0 * (i + 1)} for i, s in enumerate(scores)]
    path = write_report(results, metrics, tmp_path / "out", "SpatialGeo tiny run")
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    assert text.startswith("# SpatialGeo tiny run")
    assert "| left/right | 66.7 | 2 / 3 | 0 |" in text
    # distance: 2.2 m ok (0.1 rel error), 9 m not (3.5): success 50 %, abs rel 1.800
    assert "| distance_data | 50.0 | 1.800 | 50.0 | 2 / 2 |" in text
    assert "| 100.0 | 1.00 | 30.0 | 1 / 1 |" in text          # direction: 1 h = 30 degrees
    assert "| 6 | 350.0 | 350.0 | 550.0 | 600.0 |" in text    # latency: mean, p50, p90, max
    for name in (QUALITATIVE_PLOT, QUANTITATIVE_PLOT, LATENCY_PLOT):
        assert f"]({name})" in text
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC


def test_report_without_latencies_or_qualitative_items(tmp_path):
    scores = [s for s in _scores() if s.kind == "distance"]
    results = [s.to_dict() for s in scores] + [{"latency_ms": None}, {"latency_ms": "fast"}]
    path = write_report(results, aggregate(scores), tmp_path, "partial")
    text = path.read_text()
    assert "No qualitative items." in text and "No latencies recorded." in text
    assert "### Direction" not in text
    assert not (tmp_path / QUALITATIVE_PLOT).exists()
    assert not (tmp_path / LATENCY_PLOT).exists()
    assert (tmp_path / QUANTITATIVE_PLOT).exists()


def test_report_with_nothing_at_all(tmp_path):
    path = write_report([], {}, tmp_path, "empty")
    text = path.read_text()
    assert "No qualitative items." in text and "No distance or size items." in text
    assert not any(p.suffix == ".png" for p in tmp_path.iterdir())
