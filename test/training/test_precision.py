"""run.precision "auto" follows the hardware: bf16 autocast on CUDA and on CPUs with native bf16,
fp32 on the others (where emulated bf16 is ~8x slower), and the demo stages ask for "auto"."""
import pytest
import torch

from spatialgeo_core.demo.reproduce import CONFIG_DIR as DEMO_CONFIGS
from spatialgeo_core.training import precision
from spatialgeo_core.training.config import load_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.use_bf16("auto", CPU) is native
    assert precision.use_bf16("auto", CUDA) is True
    assert precision.use_bf16("bf16", CPU) is True and precision.use_bf16("fp32", CUDA) is False
    with pytest.raises(ValueError, match="precision"):
        precision.use_bf16("fp16", CPU)


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert precision._cpuinfo_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert precision._cpuinfo_flags(tmp_path / "missing") == set()


def test_timings_name_the_cpu_they_were_measured_on(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    line = precision.describe_cpu(info)
    assert line.startswith("AMD EPYC 7B13, ") and "no native bf16" in line and "threads" in line
    assert precision.describe_cpu(tmp_path / "missing")         # still one line


@pytest.mark.parametrize("name", ["demo_stage1.yaml", "demo_stage2.yaml"])
def test_demo_stages_follow_the_machine(monkeypatch, name):
    env = {"SPATIALGEO_INIT": "/i", "SPATIALGEO_DATA": "/d", "SPATIALGEO_OUTPUT": "/o"}
    cfg = load_config(DEMO_CONFIGS / name, [], env=env)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.use_bf16(cfg.run.precision, CPU) is False     # AVX2-only: fp32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.use_bf16(cfg.run.precision, CPU) is True
