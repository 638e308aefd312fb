"""The GPU check (bench/gpu_check.py): the --tiny run of every part on the CPU, what counts as a
complete report, a failing or over-budget part, and the wheel slimming that carries packages."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench import gpu_check
from bench.slim_wheel import slim

ROOT = Path(__file__).resolve().parents[2]

# numbers every part that ran must report (CPU names: memory is peak RSS without CUDA)
KEY_NUMBERS = {
    "environment": {"cpu_cores_visible"},
    "latency": {"ours_first_ms_p50", "llava_first_ms_p95", "ours_followup_ms_p50",
                "ours_first_ttft_ms_p50", "llava_followup_ttft_ms_p50",
                "ours_first_decode_tok_s_p50", "llava_batch_ms_p50"},
    "memory": {"ours_one_camera_peak_rss_mb", "ours_four_cameras_peak_rss_mb",
               "llava_one_camera_peak_rss_mb", "ours_frame_cache_mb_per_camera"},
    "train_stage2": {"first_step_s", "later_steps_s_p50", "peak_rss_mb"},
    "compiled_decode": {"ours_first_ms_p50", "llava_first_ms_p50",
                        "ours_first_decode_tok_s_p50"},
}
KEY_NUMBERS["latency_4bit"] = KEY_NUMBERS["latency"]
KEY_NUMBERS["memory_4bit"] = KEY_NUMBERS["memory"]


@pytest.mark.slow
def test_tiny_check_runs_every_part_and_reports_numbers_or_reasons(tmp_path):
    out = tmp_path / "check"
    rc = gpu_check.main(["--tiny", "--out", str(out)])
    report = json.loads((out / gpu_check.JSON_NAME).read_text())
    assert report["problems"] == [], report["problems"]
    assert rc == 0
    parts = report["parts"]
    assert list(parts) == list(gpu_check.PART_NAMES)
    for name, entry in parts.items():
        if entry["status"] == "skipped":          # flash_attn on a CPU; 4-bit without bnb
            assert name in {"flash_attn", "latency_4bit", "memory_4bit"}, entry
            continue
        assert entry["status"] == "ok", entry
        assert KEY_NUMBERS[name] <= set(entry["numbers"]), (name, sorted(entry["numbers"]))
        assert all(v > 0 for k, v in entry["numbers"].items()), (name, entry["numbers"])
    assert parts["flash_attn"]["status"] == "skipped"
    assert "CUDA" in parts["flash_attn"]["reason"]
    lat = parts["latency"]["result"]["setup"]
    assert lat["answer_lengths_seen"] == {"ours": [5], "llava": [5]}
    assert lat["batch"] == 4
    compiled = parts["compiled_decode"]["result"]["setup"]
    assert compiled["ours_compile_decode"] and compiled["llava_cache"] == "static"
    train = parts["train_stage2"]["result"]
    assert train["setup"]["lora_r"] == 128 and train["setup"]["gradient_checkpointing"]
    assert len(train["steps"]) == 5 and train["status"] == "finished"

    md = (out / gpu_check.MD_NAME).read_text()
    for name, entry in parts.items():
        assert f"| {name} | {entry['status']} |" in md
        if entry["status"] == "ok" and name != "environment":
            assert f"\n## {name}\n" in md
    log = (out / gpu_check.LOG_NAME).read_text()
    assert all(f"===== {name} (" in log for name, e in parts.items() if "wall_s" in e)


def _complete_report() -> dict:
    return {"parts": {"latency": {"status": "ok", "numbers": {"ours_first_ms_p50": 12.5}},
                      "flash_attn": {"status": "skipped", "reason": "no CUDA device"}}}


@pytest.mark.parametrize("breaks, expected", [
    (lambda r: r["parts"].pop("latency"), "latency: missing"),
    (lambda r: r["parts"]["latency"].update(status="pending"), "latency: pending"),
    (lambda r: r["parts"]["latency"].update(status="error", error="CUDA out of memory"),
     "latency: error: CUDA out of memory"),
    (lambda r: r["parts"]["latency"].update(numbers={}), "latency: no numbers"),
    (lambda r: r["parts"]["latency"]["numbers"].update(x=float("nan")),
     "latency: not a finite number: ['x']"),
    (lambda r: r["parts"]["latency"]["numbers"].update(x="12"),
     "latency: not a finite number: ['x']"),
    (lambda r: r["parts"]["flash_attn"].update(reason=" "),
     "flash_attn: skipped without a reason"),
])
def test_problems_name_what_makes_a_report_incomplete(breaks, expected):
    expected_parts = ["latency", "flash_attn"]
    assert gpu_check.problems(_complete_report(), expected_parts) == []
    report = _complete_report()
    breaks(report)
    assert gpu_check.problems(report, expected_parts) == [expected]


def test_a_failing_part_is_recorded_and_the_rest_run_each_written_when_done(tmp_path):
    args = gpu_check.parse_args(["--tiny", "--out", str(tmp_path)])
    seen_on_disk = {}

    def runner(part, args, timeout_s):
        on_disk = json.loads((tmp_path / gpu_check.JSON_NAME).read_text())["parts"]
        seen_on_disk[part.name] = sorted(n for n, e in on_disk.items()
                                         if e["status"] != "pending")
        if part.name == "environment":
            return {"status": "ok", "numbers": {"cpu_cores_visible": 2.0}, "summary": "",
                    "result": {"usable": {"cuda": {"ok": False, "error": "no"},
                                          "bitsandbytes": {"ok": False, "error": "ImportError: x"},
                                          "flash_attn": {"ok": False, "error": "ImportError: y"},
                                          "peft": {"ok": True}}}}
        if part.name == "latency":
            return {"status": "error", "error": "RuntimeError: CUDA error: an illegal access"}
        if part.name == "memory":
            raise OSError("could not start the part's process")
        return {"status": "ok", "numbers": {"x": 1.0}, "summary": f"{part.name} done"}

    report = gpu_check.run_check(args, runner)
    parts = report["parts"]
    assert parts["latency"]["status"] == "error" and parts["memory"]["status"] == "error"
    assert "could not start" in parts["memory"]["error"]
    assert parts["train_stage2"]["status"] == parts["compiled_decode"]["status"] == "ok"
    for name in ("latency_4bit", "memory_4bit"):
        assert parts[name]["status"] == "skipped"
        assert "bitsandbytes does not import (ImportError: x)" in parts[name]["reason"]
        assert "bench/README.md" in parts[name]["reason"]
    assert "no CUDA device" in parts["flash_attn"]["reason"]
    assert [p.split(":")[0] for p in report["problems"]] == ["latency", "memory"]
    # every part found the ones before it on disk
    assert seen_on_disk["train_stage2"] == ["environment", "latency", "latency_4bit",
                                            "memory", "memory_4bit"]
    md = (tmp_path / gpu_check.MD_NAME).read_text()
    assert "| latency | error |" in md and "CUDA error: an illegal access" in md
    assert "## Not complete" in md


def test_real_size_parts_are_skipped_without_cuda(tmp_path):
    args = gpu_check.parse_args(["--out", str(tmp_path), "--parts", "environment,latency"])
    usable = {"cuda": {"ok": False, "error": "no"}, "peft": {"ok": True}}
    reason = gpu_check.skip_reason(gpu_check.PARTS[1], args, usable)
    assert reason is not None and "real size needs a GPU" in reason
    assert gpu_check.skip_reason(gpu_check.PARTS[0], args, usable) is None


def test_no_part_starts_once_the_budget_is_spent(tmp_path):
    args = gpu_check.parse_args(["--tiny", "--out", str(tmp_path), "--budget-s", "0"])

    def runner(part, args, timeout_s):
        raise AssertionError("no part may start")

    report = gpu_check.run_check(args, runner)
    assert {e["status"] for e in report["parts"].values()} == {"skipped"}
    assert all("--budget-s" in e["reason"] for e in report["parts"].values())


def test_a_part_running_past_its_time_is_stopped_and_recorded(tmp_path):
    args = gpu_check.parse_args(["--tiny", "--out", str(tmp_path)])
    (tmp_path / gpu_check.LOG_NAME).write_text("")
    entry = gpu_check.run_in_process(gpu_check.PARTS[0], args, timeout_s=0.2)
    assert entry["status"] == "error" and "stopped after" in entry["error"]
    assert "===== environment" in (tmp_path / gpu_check.LOG_NAME).read_text()


def test_the_check_imports_no_torch_before_a_part_runs():
    code = "import sys, bench.gpu_check; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_slim_wheel_keeps_one_accelerator_library_and_a_consistent_record(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    names = ["pkg/__init__.py", "pkg/libpkg_cpu.so", "pkg/libpkg_cuda118.so",
             "pkg/libpkg_cuda130.so", "pkg/libpkg_rocm64.so", "pkg/libpkg_xpu2025.so",
             "pkg/nested/libother.so"]
    with zipfile.ZipFile(wheel, "w") as z:
        for n in names:
            z.writestr(n, b"x" * 10)
        z.writestr("pkg-1.0.dist-info/RECORD",
                   "".join(f"{n},sha256=abc,10\n" for n in names)
                   + "pkg-1.0.dist-info/RECORD,,\n")
    dropped = slim(wheel, {"cuda130"})
    assert sorted(dropped) == ["pkg/libpkg_cuda118.so", "pkg/libpkg_rocm64.so",
                               "pkg/libpkg_xpu2025.so"]
    with zipfile.ZipFile(wheel) as z:
        kept = sorted(z.namelist())
        record = z.read("pkg-1.0.dist-info/RECORD").decode()
    assert kept == sorted({*names, "pkg-1.0.dist-info/RECORD"} - set(dropped))
    assert [ln.split(",")[0] for ln in record.splitlines()] == [
        n for n in names if n not in dropped] + ["pkg-1.0.dist-info/RECORD"]
