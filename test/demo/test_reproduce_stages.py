"""demo/reproduce.py's stage chain: stages 1 and 2 in cosine cycles (--stage1-cycles,
--stage2-cycles), each from the previous one's export, and what a bad value says."""
import argparse

import pytest

from spatialgeo_core.demo import reproduce
from spatialgeo_core.demo.data import DemoWorld


def _chain(tmp_path, monkeypatch, cycles, cycles2=()):
    calls = []

    def fake_stage(stage, init, output, data, variant, overrides):
        assert data == tmp_path / "world"
        calls.append((stage, str(init.relative_to(tmp_path)),
                      output.name, list(overrides)))
        merged = output / "export" / "merged"
        merged.mkdir(parents=True)
        return merged

    monkeypatch.setattr(reproduce, "run_stage", fake_stage)
    (tmp_path / "fused" / "init").mkdir(parents=True)
    (tmp_path / "fused" / "init" / "config.json").write_text("{}")
    reproduce.train_variant(tmp_path, "fused", 768, DemoWorld(), ["a=1"], [], None, cycles,
                            cycles2)
    return calls


def test_stage1_cycles_chain_from_each_export_with_their_own_steps(tmp_path, monkeypatch):
    calls = _chain(tmp_path, monkeypatch, (900, 1800))
    assert calls == [
        (1, "fused/init", "stage1", ["a=1", "optim.max_steps=900"]),
        (1, "fused/stage1/export/merged", "stage1-cycle2", ["a=1", "optim.max_steps=1800"]),
        (2, "fused/stage1-cycle2/export/merged", "stage2", [])]
    assert (tmp_path / "fused" / "model").is_dir()


def test_stage2_cycles_chain_from_the_last_stage1_export(tmp_path, monkeypatch):
    calls = _chain(tmp_path, monkeypatch, (900,), (1500, 1500))
    assert [(c[0], c[2], c[3]) for c in calls] == [
        (1, "stage1", ["a=1", "optim.max_steps=900"]),
        (2, "stage2", ["optim.max_steps=1500"]),
        (2, "stage2-cycle2", ["optim.max_steps=1500"])]
    assert calls[1][1] == "fused/stage1/export/merged"
    assert calls[2][1] == "fused/stage2/export/merged" and (tmp_path / "fused" / "model").is_dir()


def test_without_cycles_stage1_is_one_run_of_its_config(tmp_path, monkeypatch):
    calls = _chain(tmp_path, monkeypatch, ())
    assert [c[2] for c in calls] == ["stage1", "stage2"] and calls[0][3] == ["a=1"]


def test_stage1_cycles_must_be_positive_step_counts():
    assert reproduce._steps("900,1800") == (900, 1800)
    for bad in ("900,x", "0", "", "900,-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive step counts"):
            reproduce._steps(bad)
