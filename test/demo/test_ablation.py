"""The ablation tables: Wilson intervals, the depth-dependent family, pooling over seeds."""
import json

import pytest

from spatialgeo_core.demo import ablation


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = ablation.wilson(45, 50)                 # 90 %: 78.6 - 95.7 (Wilson, z = 1.96)
    assert (round(lo, 1), round(hi, 1)) == (78.6, 95.7)
    lo, hi = ablation.wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-9) and round(hi, 1) == 27.8


def _metrics(correct_behind, total_behind, distance_ok):
    return {
        "qualitative": {"groups": {"behind/front": {"correct": correct_behind,
                                                    "total": total_behind},
                                   "left/right": {"correct": 8, "total": 10}},
                        "overall": {"correct": correct_behind + 8, "total": total_behind + 10}},
        "quantitative": {"categories": {"distance_data": {"successes": distance_ok, "total": 10},
                                        "width_data": {"successes": 5, "total": 10}},
                         "overall": {"successes": distance_ok + 5, "total": 20}},
        "direction": {"successes": 1, "total": 4}}


def test_tables_pool_seeds_and_count_the_depth_dependent_questions(tmp_path, capsys):
    for run, ok in (("seed0", 9), ("seed1", 7)):
        for variant, behind in (("fused", 9), ("clip_only", 5)):
            d = tmp_path / run / variant / "eval"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps(_metrics(behind, 10, ok)))
    fused = ablation.load(tmp_path / "seed0", "fused")
    assert fused["depth-dependent"] == (9 + 9, 20)           # behind/front + distance_data
    assert ablation.mean_of_groups(fused) == pytest.approx(85.0)
    assert ablation.main([str(tmp_path / "seed0"), str(tmp_path / "seed1")]) == 0
    out = capsys.readouterr().out
    pooled = [ln for ln in out.splitlines() if ln.startswith("| pooled | SpatialGeo")]
    assert len(pooled) == 1 and "| 80.0 (" in pooled[0]      # (9 + 7) / 20 distance_data
    assert ablation.main([str(tmp_path / "missing")]) == 2

    # a run with one variant only is shown but not pooled: the pooled variants share their seeds
    d = tmp_path / "seed2" / "clip_only" / "eval"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(_metrics(0, 10, 0)))
    assert ablation.main([str(tmp_path / s) for s in ("seed0", "seed1", "seed2")]) == 0
    out = capsys.readouterr().out
    head = [c.strip() for c in out.splitlines()[0].split("|")]
    pooled = [ln for ln in out.splitlines() if ln.startswith("| pooled | CLIP-only")]
    depth = pooled[0].split("|")[head.index("depth-dependent")].strip()
    assert len(pooled) == 1 and depth.startswith("65.0 (")   # (5 + 9 + 5 + 7) / 40, no seed2
    assert "| seed2 | CLIP-only" in out and "Not pooled (they lack a variant" in out


def _probe(side_pct, ahead_pct, streams):
    held = {"side_right_pct": side_pct,
            **{k: {"within_25_pct": ahead_pct, "median_prior_within_25_pct": 40.0}
               for k in ("ahead", "wide", "tall")}}
    low = {"side_right_pct": 50.0,
           **{k: {"within_25_pct": 10.0, "median_prior_within_25_pct": 40.0}
              for k in ("ahead", "wide", "tall")}}
    return {"train_regions": 300, "test_regions": 200,
            "streams": {s: (held if s == streams[-1] else low) for s in streams}}


def test_what_the_tokens_hold_is_read_of_both_streams_together(tmp_path, capsys):
    """probe.json: the fused model's row shows its two streams together ("both"), the CLIP-only
    model's its one stream; counts out of the probe's held-out regions."""
    for variant, streams, side in (("fused", ("clip", "geometry", "both"), 90.0),
                                   ("clip_only", ("clip",), 55.0)):
        d = tmp_path / "seed0" / variant / "eval"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(5, 10, 5)))
        (d / "probe.json").write_text(json.dumps(_probe(side, 80.0, streams)))
    fused, clip = (ablation.load(tmp_path / "seed0", v) for v in ("fused", "clip_only"))
    assert fused["tokens side"] == (180, 200) and fused["tokens ahead"] == (160, 200)
    assert clip["tokens side"] == (110, 200)
    assert ablation.main([str(tmp_path / "seed0")]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.endswith("| tokens side | tokens ahead | tokens wide | tokens tall |")


def _counts(depth, quant, groups):
    c = {g: (groups, 100) for g in ablation.GROUPS}
    c.update({"quantitative": (quant, 100), "depth-dependent": (depth, 200)})
    return c


def test_targets_are_marked_met_only_when_reached_with_the_intervals_apart():
    met = ablation.verdicts({"seed0": {"fused": _counts(170, 60, 90),
                                       "clip_only": _counts(120, 40, 70)}})
    assert met.count(": met") == 4 and "not met" not in met
    # +9 points, but 200 questions each leave the two intervals overlapping
    close = ablation.verdicts({"seed0": {"fused": _counts(138, 60, 90),
                                         "clip_only": _counts(120, 40, 70)}})
    assert "+9.0 points" in close and "not met (the intervals overlap)" in close
    # one group under 75 fails "every group" though the mean of groups passes
    low = _counts(170, 54, 90)
    low["big/small"] = (70, 100)
    lines = ablation.verdicts({"a": {"fused": low}, "b": {"fused": _counts(170, 60, 90)}})
    first = next(ln for ln in lines.splitlines() if ln.startswith("- a,"))
    assert "lowest group big/small 70.0 (target 75 each): not met" in first
    assert "quantitative 54.0" in first and first.endswith("not met")
    pooled = next(ln for ln in lines.splitlines() if ln.startswith("- pooled,"))
    assert "lowest group big/small 80.0" in pooled and pooled.endswith(": met")
