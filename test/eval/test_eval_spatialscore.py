"""`spatialgeo eval-spatialscore` on a SpatialScore v0 file generated from the synthetic world
(metric depth, object distance as open-ended, multiple-choice and yes/no items, relative depth,
a SpatialSense yes/no item per scene, a multi-image and a video item) plus malformed items:
answered end to end through the CLI by the tiny random model, resumed, sharded, subset, scored
from saved predictions, and refused where the input is bad."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the [eval] extra")

from spatialgeo_core.cli import main  # noqa: E402
from spatialgeo_core.eval.spatialscore.data import (  # noqa: E402
    CHOICE_INSTRUCTION,
    CONCISE_INSTRUCTION,
    LENGTH_INSTRUCTION,
    SpatialScoreFormatError,
    boxes_as_regions,
    image_path,
    instruction,
)
from spatialgeo_core.synthetic import (  # noqa: E402
    SceneConfig,
    WorldConfig,
    center_distance,
    iter_samples,
    make_sample,
)
from spatialgeo_core.synthetic.spatialscore import (  # noqa: E402
    FIRST_INDEX,
    write_spatialscore_json,
)

SEED, SCENES = 3, 2
CONFIG = WorldConfig(scene=SceneConfig(width=96, height=96))
BAD = [
    {"index": 1, "question_type": "open-ended", "input_modality": "single-image",
     "answer": "2 meters", "img_paths": ["./dataset/x.png"], "source": "VGBench"},  # no question
    {"index": 2, "question_type": "counting", "input_modality": "single-image",
     "question": "How many?", "answer": "3", "img_paths": ["./dataset/x.png"],
     "source": "VGBench", "category": "Counting"},                       # unknown question_type
    {"index": 3, "question_type": "judgment", "input_modality": "single-image",
     "question": "Is it there?", "answer": "Yes", "img_paths": ["./dataset/VGBench/gone.png"],
     "source": "VGBench", "category": "Others"},                          # missing image
    "not an item",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(data file, root, its items): the generated items, then the bad ones."""
    root = tmp_path_factory.mktemp("spatialscore")
    path = write_spatialscore_json(iter_samples(SCENES, SEED, "test", CONFIG),
                                   root / "SpatialScore.json", root, others=True)
    items = json.loads(path.read_text()) + BAD
    path.write_text(json.dumps(items))
    return path, root, items


def _generated(items: list[dict]) -> list[dict]:
    return [i for i in items if isinstance(i, dict) and i.get("index", 0) >= FIRST_INDEX]


def _single(items: list[dict]) -> list[dict]:
    return [i for i in _generated(items) if i["input_modality"] == "single-image"]


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").open()]


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["eval-spatialscore", *[str(a) for a in args], "--no-progress"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_generated_file_holds_exact_answers(world):
    _, root, items = world
    gen = _generated(items)
    origins = [i["category_origin"] for i in gen]
    for origin in ("metric_depth_vqa", "object_distance_open_ended_vqa", "relative_depth_vqa",
                   "object_distance_multiple_choice_vqa", "object_distance_yes_no_vqa"):
        assert origin in origins
    forms = {i["question_type"] for i in gen if "object_distance" in i["category_origin"]}
    assert forms == {"open-ended", "multi-choice", "judgment"}
    assert [i["input_modality"] for i in gen[-2:]] == ["multi-images", "video"]
    for key in ("index", "category", "subcategory", "question_type", "input_modality",
                "question", "answer", "img_paths", "source", "index_origin", "category_origin"):
        assert all(key in i for i in gen)
    assert len({i["index"] for i in gen}) == len(gen)

    sample = make_sample(SEED, "test", 0, CONFIG)
    a, b = (sample.rendering.objects[k] for k in sample.regions[:2])
    first = [i for i in gen if sample.id in i["img_paths"][0]]
    assert (root / first[0]["img_paths"][0]).is_file()
    x1, y1, x2, y2 = a.box2d
    assert f"({x1}, {y1}, {x2}, {y2})" in first[0]["question"]
    depth = sample.rendering.depth[y1:y2, x1:x2]
    assert first[0]["answer"] == f"{depth[np.isfinite(depth)].mean():.2f} meters"
    dist = center_distance(a, b)
    assert first[2]["answer"] == f"{dist:.2f} meters"
    choice = first[3]
    assert f"{choice['answer']}: {dist:.2f} meters" in choice["question"]
    assert first[1]["answer"] == first[4]["answer"] == "Yes"          # sample 0: yes
    deeper = "A" if a.center_camera[2] > b.center_camera[2] else "B"
    assert first[5]["answer"] == deeper


def test_end_to_end_through_the_cli(world, tmp_path, capsys, tiny_dir):
    path, root, items = world
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "--data", path, "--root", root, "--out", out,
                          "--model-path", tiny_dir, "--max-new-tokens", "4")
    assert rc == 0, err
    single = _single(items)
    n_items = len(_generated(items)) + len(BAD)
    assert (f"{len(single)} of {n_items} items scored (2 skipped, {len(BAD)} errors)"
            in stdout)
    res = results(out)
    assert len(res) == len(single) + len(BAD)                 # skipped items have no record
    ok = [r for r in res if r["status"] == "ok"]
    assert [r["index"] for r in ok] == [i["index"] for i in single]         # the file's order
    for r, item in zip(ok, single, strict=True):
        assert {k: r[k] for k in item} == item                # the item as published
        assert isinstance(r["pred_answer"], str) and r["num_tokens"] <= 4
        want = (LENGTH_INSTRUCTION if item["source"] == "VGBench"
                and item["question_type"] == "open-ended" else CONCISE_INSTRUCTION)
        assert r["asked"] == want + item["question"] and r["regions"] == []
        assert set(r["score"]) == {"upstream", "strict"}
    errors = {r["question_id"]: r for r in res if r["status"] == "error"}
    assert errors["2"]["error_kind"] == "SpatialScoreFormatError"
    assert "unknown question_type 'counting'" in errors["2"]["error"]
    assert "'question'" in errors["1"]["error"]
    assert errors["3"]["error_kind"] == "InvalidImageError"
    assert "does not exist" in errors["3"]["error"]
    assert any(qid.startswith("#") for qid in errors)        # the non-object item

    metrics = json.loads((out / "metrics.json").read_text())
    for mode in ("upstream", "strict"):
        block = metrics[mode]
        assert set(block) >= {"overall", "by_source", "by_category"}
        assert block["overall"]["total"] == len(single)
        total_sum = sum(r["score"][mode]["score"] for r in ok)
        assert block["overall"]["score_sum"] == pytest.approx(total_sum)
        assert block["overall"]["accuracy"] == pytest.approx(100 * total_sum / len(single))
        vg = [i for i in single if i["source"] == "VGBench"]
        assert block["by_source"]["VGBench"]["total"] == len(vg)
        assert block["by_source"]["SpatialSense"]["total"] == len(single) - len(vg)
        assert block["by_category"]["Depth and Distance"]["total"] == len(vg)
    assert metrics["skipped"] == {"total": 2, "by_modality": {"multi-images": 1, "video": 1},
                                  "by_source": {"VGBench": 1, "VSI-Bench_8": 1}}
    assert metrics["errors"]["by_kind"] == {"InvalidImageError": 1,
                                            "SpatialScoreFormatError": 3}
    report = (out / "report.md").read_text()
    assert report.startswith("# SpatialGeo on SpatialScore (v0)")
    assert "| | upstream | strict |" in report and "## By source" in report
    assert "skipped: 2 (multi-images 1, video 1)" in report and "## Errors" in report
    for png in ("spatialscore_by_source.png", "spatialscore_by_category.png",
                "latency_hist.png"):
        assert (out / png).stat().st_size > 0

    # resumed: the answered items are kept, the errors tried again
    before = {r["question_id"]: r["latency_ms"] for r in ok}
    rc, stdout, err = run(capsys, "--data", path, "--root", root, "--out", out,
                          "--model-path", tiny_dir, "--max-new-tokens", "4", "--resume")
    assert rc == 0, err
    again = results(out)
    assert len(again) == len(res)
    assert {r["question_id"]: r["latency_ms"] for r in again if r["status"] == "ok"} == before
    # without --resume an output directory with results is refused
    rc, _, err = run(capsys, "--data", path, "--root", root, "--out", out,
                     "--model-path", tiny_dir)
    assert rc == 2 and "--resume" in err and "Traceback" not in err

    # results.jsonl is itself a predictions file: --score-only gives the same metrics
    rescored = tmp_path / "rescored"
    rc, _, err = run(capsys, "--score-only", out / "results.jsonl", "--out", rescored)
    assert rc == 0, err
    again = json.loads((rescored / "metrics.json").read_text())
    for mode in ("upstream", "strict"):
        assert again[mode]["overall"] == metrics[mode]["overall"]


def test_subsets_and_limit(world, tmp_path, capsys, tiny_dir):
    path, root, items = world
    common = ["--root", root, "--model-path", tiny_dir, "--max-new-tokens", "2"]
    rc, _, err = run(capsys, "--data", path, "--subset", "vgbench", "--out", tmp_path / "vg",
                     *common)
    assert rc == 0, err
    res = results(tmp_path / "vg")
    vg = [i for i in _single(items) if i["source"] == "VGBench"]
    assert [r["index"] for r in res if r["status"] == "ok"] == [i["index"] for i in vg]
    assert len(res) == len(vg) + 3                     # the bad VGBench items are errors
    metrics = json.loads((tmp_path / "vg" / "metrics.json").read_text())
    assert list(metrics["upstream"]["by_source"]) == ["VGBench"]
    assert metrics["skipped"]["by_source"] == {"VGBench": 1}

    # --subset hard: the indices of SpatialScore-Hard.json beside the data file, or --hard
    hard = [i for i in _single(items)][1:4]
    (root / "SpatialScore-Hard.json").write_text(json.dumps(hard))
    try:
        rc, _, err = run(capsys, "--data", path, "--subset", "hard", "--out",
                         tmp_path / "hard", *common)
        assert rc == 0, err
        assert [r["index"] for r in results(tmp_path / "hard")] == [i["index"] for i in hard]
        # the Hard file given as --data is its own subset
        rc, _, err = run(capsys, "--data", root / "SpatialScore-Hard.json", "--subset", "hard",
                         "--out", tmp_path / "hard2", "--limit", "2", *common)
        assert rc == 0, err
        assert [r["index"] for r in results(tmp_path / "hard2")] == [i["index"]
                                                                     for i in hard[:2]]
    finally:
        (root / "SpatialScore-Hard.json").unlink()
    rc, _, err = run(capsys, "--data", path, "--subset", "hard", "--out", tmp_path / "h3",
                     *common)
    assert rc == 2 and "SpatialScore-Hard.json" in err and "--hard" in err

    rc, _, err = run(capsys, "--data", path, "--limit", "3", "--out", tmp_path / "lim",
                     *common)
    assert rc == 0, err
    assert [r["index"] for r in results(tmp_path / "lim")] == [
        i["index"] for i in _generated(items)[:3]]


def test_draw_boxes_names_and_draws_the_boxes(world, tmp_path, tiny_pipeline):
    from spatialgeo_core.eval.spatialscore.runner import evaluate_spatialscore
    from spatialgeo_core.types import GenerationOptions

    class Spy:
        """The tiny pipeline, noting the regions each question's image is drawn with."""

        def __init__(self, pipeline):
            self.pipeline, self.encoded = pipeline, []

        def answer(self, frame, question, regions=None, *args, **kwargs):
            self.encoded.append([r.box for r in regions or []])
            return self.pipeline.answer(frame, question, regions, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.pipeline, name)

    path, root, items = world
    spy = Spy(tiny_pipeline)
    metrics = evaluate_spatialscore(path, root, tmp_path / "boxes", lambda: spy,
                                    options=GenerationOptions(max_new_tokens=2),
                                    draw_boxes=True, progress=False, limit=6)
    assert metrics["num_answered"] == 6
    res = results(tmp_path / "boxes")
    sample = make_sample(SEED, "test", 0, CONFIG)
    a, b = (sample.rendering.objects[k] for k in sample.regions[:2])
    box_a = [float(v) for v in a.box2d]
    assert res[0]["regions"] == [box_a]
    assert "Region [0]" in res[0]["asked"] and str(tuple(a.box2d)) not in res[0]["asked"]
    assert res[0]["asked"].count("Region [0]") == 2                 # the box is written twice
    assert res[2]["regions"] == [box_a, [float(v) for v in b.box2d]]
    assert "red bounding box Region [0] and with blue bounding box Region [1]" in res[2]["asked"]
    assert res[5]["asked"].endswith("A: Region [0]\nB: Region [1]")
    assert spy.encoded[0] == [tuple(box_a)]                         # the image is drawn on


def test_boxes_as_regions():
    q = ("Compare (10, 20, 30, 40) with (0.50, 2.5, 12.0, 9.75) and (10, 20, 30, 40), not "
         "(1.0, 2.0, 3.0) nor (50, 5, 40, 9) nor (200, 200, 300, 300), cut (90, 90, 120, 130).")
    text, regions = boxes_as_regions(q, 100, 100)
    assert text == ("Compare Region [0] with Region [1] and Region [0], not (1.0, 2.0, 3.0) nor "
                    "(50, 5, 40, 9) nor (200, 200, 300, 300), cut Region [2].")
    assert [r.box for r in regions] == [(10.0, 20.0, 30.0, 40.0), (0.5, 2.5, 12.0, 9.75),
                                        (90.0, 90.0, 100.0, 100.0)]
    assert boxes_as_regions("How far is it?", 10, 10) == ("How far is it?", [])


def test_instructions_and_image_paths(tmp_path):
    assert instruction("VGBench", "open-ended") == LENGTH_INSTRUCTION
    assert instruction("VGBench", "Open-Ended") == CONCISE_INSTRUCTION   # upstream: exact match
    assert instruction("VGBench", "judgment") == CONCISE_INSTRUCTION
    assert instruction("3DSRBench", "multi-choice") == CHOICE_INSTRUCTION
    assert instruction("QSpatialBench-Plus", "open-ended") == LENGTH_INSTRUCTION
    assert "\\scalar{scalar} \\distance_unit{distance unit}" in LENGTH_INSTRUCTION
    with pytest.raises(SpatialScoreFormatError, match="no instruction"):
        instruction("MyBench", "judgment")
    assert image_path(tmp_path, "./dataset/a/b.png") == tmp_path / "dataset" / "a" / "b.png"
    for bad in ("/etc/passwd", "./dataset/../../x.png"):
        with pytest.raises(SpatialScoreFormatError, match="inside it"):
            image_path(tmp_path, bad)


def test_score_only_saved_predictions(world, tmp_path, capsys):
    path, _, items = world
    gen = _generated(items)
    preds = []
    for item in gen:
        qtype = item["question_type"]
        if qtype == "multi-choice":
            pred = "The chair"                            # E upstream, unreadable strictly
        elif qtype == "judgment":
            pred = "It is on the right."                  # yes upstream, unreadable strictly
        elif item["source"] == "VSI-Bench_8":
            pred = "about 3"
        else:                                             # lengths, in an unknown unit
            pred = f"{float(item['answer'].split()[0]) * 100:.0f} centimetres"
        preds.append({**item, "pred_answer": pred})
    # upstream's all_results.json names: id for index, gt_answer for answer
    first = preds[0]
    preds[0] = {**{k: v for k, v in first.items() if k not in ("index", "answer")},
                "id": first["index"], "gt_answer": first["answer"]}
    preds.append({**gen[0], "index": 5, "pred_answer": None})            # no prediction
    file = tmp_path / "preds.json"
    file.write_text(json.dumps(preds))
    rc, stdout, err = run(capsys, "--score-only", file, "--out", tmp_path / "scored")
    assert rc == 0, err
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    n = len(gen)
    mc = [i for i in gen if i["question_type"] == "multi-choice"]
    yes = [i for i in gen if i["question_type"] == "judgment" and i["answer"] == "Yes"]
    lengths = [i for i in gen if i["question_type"] == "open-ended" and i["source"] == "VGBench"]
    # no generated option is E, so "The chair" is wrong in both modes; + 1: the VSI count
    upstream_sum = len(yes) + len(lengths) + 1
    strict_sum = 1                                                     # the VSI count only
    assert metrics["upstream"]["overall"] == {"accuracy": pytest.approx(100 * upstream_sum / n),
                                              "score_sum": upstream_sum, "total": n}
    assert metrics["strict"]["overall"]["score_sum"] == strict_sum
    assert metrics["quirks"] == {"first_letter_fallback": len(mc), "right_as_yes":
                                 len([i for i in gen if i["question_type"] == "judgment"]),
                                 "unknown_unit_as_cm": len(lengths)}
    assert metrics["modes_differ"] == len(yes) + len(lengths)
    assert metrics["skipped"]["total"] == 0                # saved answers: every modality
    assert metrics["upstream"]["by_source"]["VSI-Bench_8"]["score_sum"] == 1
    assert metrics["errors"]["total"] == 1
    assert "pred_answer" in results(tmp_path / "scored")[-1]["error"]
    assert "Saved predictions on SpatialScore (v0)" in (tmp_path / "scored" /
                                                         "report.md").read_text()


def test_bad_input_is_one_line(world, tmp_path, capsys, tiny_dir):
    path, root, _ = world
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("[{\"index\": 1,")
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"version": 2, "tasks": [{"id": 1, "question": "?"}]}))
    v2_list = tmp_path / "v2_list.json"
    v2_list.write_text(json.dumps([{"id": 1, "task": "depth", "question": "?", "answer": "1"}]))
    cases = [
        (["--data", bad_json, "--root", root], "not valid JSON"),
        (["--data", v2, "--root", root], "CVPR 2026"),
        (["--data", v2_list, "--root", root], "CVPR 2026"),
        (["--data", tmp_path / "nope.json", "--root", root], "does not exist"),
        (["--data", path, "--root", tmp_path / "no_dir"], "is not a directory"),
        (["--root", root], "give --data and --root"),
        (["--score-only", path, "--data", path], "cannot go with it"),
        (["--score-only", v2], "CVPR 2026"),
        (["--data", path, "--root", root, "--max-new-tokens", "100000"], "leaves no room"),
    ]
    for args, text in cases:
        rc, _, err = run(capsys, *args, "--out", tmp_path / "o", "--model-path", tiny_dir)
        assert rc == 2, (args, err)
        assert text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ranks_without_a_process_group_wait_on_files(world, tmp_path, monkeypatch,
                                                      tiny_pipeline):
    """WORLD_SIZE 2 without MASTER_ADDR: rank 1 writes its file, rank 0 merges (one after the
    other, in this process), as eval-bench's sharding."""
    from spatialgeo_core.eval.spatialscore.runner import evaluate_spatialscore
    from spatialgeo_core.types import GenerationOptions

    path, root, items = world
    out = tmp_path / "out"
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    kwargs = dict(options=GenerationOptions(max_new_tokens=2), progress=False, limit=8,
                  barrier_timeout_s=30)
    monkeypatch.setenv("RANK", "1")
    assert evaluate_spatialscore(path, root, out, lambda: tiny_pipeline, **kwargs) is None
    assert (out / "results.rank1.jsonl").exists()
    monkeypatch.setenv("RANK", "0")
    metrics = evaluate_spatialscore(path, root, out, lambda: tiny_pipeline, **kwargs)
    res = results(out)
    assert [r["index"] for r in res] == [i["index"] for i in _generated(items)[:8]]
    assert [r["rank"] for r in res] == [i % 2 for i in range(8)]
    assert not list(out.glob("results.rank*"))
    assert metrics["num_answered"] == 8 and metrics["run"]["processes"] == 2
