"""`spatialgeo eval-bench`: a benchmark file in the official format (compressed and list RLE
masks with boxes, a broken RLE, a malformed item, a missing image) parsed and rendered as
set-of-marks, answered by the tiny model in one process and sharded over two (torchrun with gloo,
and the file-based wait without a process group), merged, scored and reported."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="pycocotools is in the [eval] extra")

from PIL import Image  # noqa: E402

from spatialgeo_core.cli import main  # noqa: E402
from spatialgeo_core.eval.spatialrgpt.format import encode_rle  # noqa: E402
from spatialgeo_core.eval.spatialrgpt.runner import load_bench  # noqa: E402
from spatialgeo_core.regions import MASK_ALPHA, PALETTE, draw_regions  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"a.png": (96, 72), "b.png": (80, 60)}           # (W, H)


def _mask(name: str, rows: slice, cols: slice) -> np.ndarray:
    w, h = SIZES[name]
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


MASK_A0 = _mask("a.png", slice(20, 50), slice(10, 40))
MASK_A1 = _mask("a.png", slice(5, 30), slice(55, 90))


def _item(qid, image, text_q, answer, category, qa_type, rles, boxes, n_masks=2):
    w, h = SIZES.get(image, (32, 24))
    masks = " and ".join(["<mask>"] * n_masks)
    return {"id": qid, "image_info": {"file_path": f"scenes/{image}", "height": h, "width": w},
            "text_q": text_q,
            "conversations": [{"from": "human", "value": f"<image>\nAbout {masks}?"},
                              {"from": "gpt", "value": answer}],
            "rle": rles, "bbox": boxes, "qa_info": {"type": qa_type, "category": category}}


def bench_items() -> list[dict]:
    box_a0, box_a1 = [10, 20, 40, 50], [55, 5, 90, 30]
    return [
        _item(0, "a.png", "Is Region [0] to the left of Region [1]?",
              "Yes, Region [0] is to the left of Region [1].", "left_predicate", "qualitative",
              [encode_rle(MASK_A0), encode_rle(MASK_A1)], [box_a0, box_a1]),
        _item(1, "a.png", "How far is Region [0] from Region [1]?",
              "Region [0] is 2.5 meters from Region [1].", "distance_data", "quantitative",
              [encode_rle(MASK_A0, compressed=False), encode_rle(MASK_A1, compressed=False)],
              [box_a0, box_a1]),
        # RLE of the wrong size: both regions fall back to their boxes
        _item(2, "b.png", "If you are at Region [0], where will you find Region [1]?",
              "Region [1] is at 3 o'clock from Region [0].", "direction", "quantitative",
              [encode_rle(MASK_A0), encode_rle(MASK_A1)], [[4, 4, 30, 40], [40, 10, 76, 50]]),
        _item(3, "b.png", "Which is taller, Region [0] or Region [1]?",
              "Region [1] is taller.", "tall_choice", "qualitative",
              None, [[4, 4, 30, 40], [40, 10, 76, 50]]),
        {"id": 4, "image_info": {"file_path": "scenes/a.png", "height": 72, "width": 96},
         "conversations": [], "qa_info": {"type": "qualitative", "category": "big_predicate"}},
        _item(5, "missing.png", "Is Region [0] bigger than Region [1]?", "Yes.",
              "big_predicate", "qualitative", None, [[1, 1, 5, 5], [6, 6, 9, 9]]),
        _item(6, "a.png", "Is Region [0] bigger than Region [1]?", "No, it is smaller.",
              "big_predicate", "qualitative", [encode_rle(MASK_A1), encode_rle(MASK_A0)],
              [box_a1, box_a0]),
    ]


@pytest.fixture
def bench(tmp_path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    (images / "scenes").mkdir(parents=True)
    for name, (w, h) in SIZES.items():
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([x * 2, y * 3, np.full_like(x, 90)], -1).astype(np.uint8)
        Image.fromarray(rgb).save(images / "scenes" / name)
    path = tmp_path / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps(bench_items()))
    return path, images


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").open()]


def test_official_format_is_parsed_and_rendered_as_set_of_marks(bench):
    path, images = bench
    entries = load_bench(path)
    assert [e.id for e in entries] == [str(i) for i in range(7)]
    assert entries[4].item is None and "text_q" in str(entries[4].error)
    a0, a1 = entries[0].item, entries[1].item
    for item in (a0, a1):                       # compressed str and list counts decode alike
        assert item.region_sources == ["rle", "rle"]
        np.testing.assert_array_equal(item.regions[0].mask, MASK_A0)
        np.testing.assert_array_equal(item.regions[1].mask, MASK_A1)
        assert item.regions[0].box == (10.0, 20.0, 40.0, 50.0)
    assert entries[2].item.region_sources == ["bbox", "bbox"]
    assert entries[2].item.regions[0].mask is None
    assert entries[3].item.regions[1].box == (40.0, 10.0, 76.0, 50.0)

    image = np.asarray(Image.open(images / a0.file_path).convert("RGB"))
    shown = np.asarray(draw_regions(image, a0.regions)).astype(int)
    # region 0: its mask's boundary in PALETTE[0], its inside blended with it
    assert tuple(shown[49, 39]) == PALETTE[0]
    blend = np.rint((1 - MASK_ALPHA) * image[40, 30] + MASK_ALPHA * np.array(PALETTE[0]))
    np.testing.assert_allclose(shown[40, 30], blend, atol=1)
    assert tuple(shown[29, 89]) == PALETTE[1]
    np.testing.assert_array_equal(shown[65, 5], image[65, 5])            # outside: untouched
    boxed = np.asarray(draw_regions(image, entries[2].item.regions[:1])).astype(int)
    assert tuple(boxed[39, 20]) == PALETTE[0]                           # the box's outline


def test_eval_bench_single_process(bench, tmp_path, capsys, tiny_dir):
    path, images = bench
    out = tmp_path / "out"
    rc = main(["eval-bench", "--annotations", str(path), "--images", str(images),
               "--model-path", str(tiny_dir), "--out", str(out), "--max-new-tokens", "4"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "5 of 7 questions answered, 2 errors" in captured.out
    res = results(out)
    assert [r["question_id"] for r in res] == [0, 1, 2, 3, "4", 5, 6]   # the file's order
    ok = [r for r in res if r["status"] == "ok"]
    assert len(ok) == 5 and all(r["num_tokens"] <= 4 and r["latency_ms"] > 0 for r in ok)
    assert res[0]["image"] == "scenes/a.png" and res[0]["gt"].startswith("Yes, Region [0]")
    assert res[2]["region_sources"] == ["bbox", "bbox"]
    assert res[4]["error_kind"] == "BenchFormatError"
    assert res[5]["error_kind"] == "InvalidImageError" and "does not exist" in res[5]["error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_items"] == 5 and metrics["direction"]["total"] == 1
    assert metrics["errors"]["by_kind"] == {"BenchFormatError": 1, "InvalidImageError": 1}
    assert metrics["run"]["processes"] == 1
    report = (out / "report.md").read_text()
    assert report.startswith("# SpatialGeo on SpatialRGPT-Bench") and "## Errors" in report
    assert not list(out.glob("results.rank*"))


def test_eval_bench_errors(bench, tmp_path, capsys, tiny_dir):
    path, images = bench
    bad = tmp_path / "bad.json"
    bad.write_text("{\"not\": \"a list\"}")
    for args, text in (
            (["--annotations", str(bad), "--images", str(images)], "JSON list of items"),
            (["--annotations", str(tmp_path / "nope.json"), "--images", str(images)],
             "does not exist"),
            (["--annotations", str(path), "--images", str(tmp_path / "no_dir")],
             "is not a directory")):
        rc = main(["eval-bench", *args, "--model-path", str(tiny_dir), "--out",
                   str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and text in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _bench_args(path, images, tiny_dir, out) -> list[str]:
    return ["eval-bench", "--annotations", str(path), "--images", str(images),
            "--model-path", str(tiny_dir), "--out", str(out), "--max-new-tokens", "3",
            "--no-progress", "--barrier-timeout-s", "120"]


def _check_merged(out: Path) -> list[dict]:
    res = results(out)
    assert [r["question_id"] for r in res] == [0, 1, 2, 3, "4", 5, 6]
    assert not list(out.glob("results.rank*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_questions"] == 7 and metrics["num_answered"] == 5
    assert metrics["run"]["processes"] == 2
    return res


@pytest.mark.slow
def test_torchrun_shards_resumes_and_merges(bench, tmp_path, capsys, tiny_dir):
    path, images = bench
    out = tmp_path / "out"
    # a first, single-process run answers the first two items
    assert main([*_bench_args(path, images, tiny_dir, out), "--limit", "2"]) == 0
    capsys.readouterr()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "spatialgeo_core.cli",
           *_bench_args(path, images, tiny_dir, out), "--resume"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 of 7 questions answered" in proc.stdout
    res = _check_merged(out)
    assert "rank" not in res[0] and "rank" not in res[1]                  # kept from run 1
    assert {r["rank"] for r in res[2:]} == {0, 1}
    assert all(r["rank"] == i % 2 for i, r in enumerate(res) if i >= 2)


def test_ranks_without_a_process_group_wait_on_files(bench, tmp_path, monkeypatch,
                                                      tiny_pipeline):
    """RANK / WORLD_SIZE without MASTER_ADDR: rank 1 writes its file and returns; rank 0 waits
    until every item has a record, then merges (run one after the other, in this process)."""
    from spatialgeo_core.eval.runner import EvalRunError
    from spatialgeo_core.eval.spatialrgpt.runner import evaluate_bench
    from spatialgeo_core.types import GenerationOptions

    path, images = bench
    out = tmp_path / "out"
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    kwargs = dict(options=GenerationOptions(max_new_tokens=2), progress=False,
                  barrier_timeout_s=0.5)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(EvalRunError, match="3 items have no result"):
        evaluate_bench(path, images, out, lambda: tiny_pipeline, **kwargs)
    assert (out / "results.rank0.jsonl").exists()          # kept, for --resume
    monkeypatch.setenv("RANK", "1")
    assert evaluate_bench(path, images, out, lambda: tiny_pipeline, **kwargs) is None
    monkeypatch.setenv("RANK", "0")
    metrics = evaluate_bench(path, images, out, lambda: tiny_pipeline, resume=True, **kwargs)
    assert metrics["num_questions"] == 7
    res = _check_merged(out)
    assert [r["rank"] for r in res] == [i % 2 for i in range(7)]
