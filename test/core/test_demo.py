"""The README's first command: `spatialgeo demo` on the embedded default model."""
from spatialgeo_core import default_model
from spatialgeo_core.cli import main


def test_demo_runs_and_says_when_answers_mean_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPATIALGEO_CACHE", str(tmp_path))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    if default_model.is_random_default(default_model.default_model_path()):
        assert "question: How far is Region [0] from Region [1]?" in out
        assert "RANDOMLY INITIALISED" in out and "mean nothing" in out
        assert (tmp_path / default_model.TINY_RANDOM_NAME / "model.safetensors").is_file()
    else:                          # the trained demo checkpoint: a held-out scene and its truth
        assert "(held out)" in out and "Region [0]" in out and "Region [1]" in out
        assert "answer:" in out and "ground truth:" in out and " m)" in out
        assert "RANDOMLY INITIALISED" not in out


def test_default_model_path_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SPATIALGEO_CACHE", str(tmp_path))
    if (default_model.EMBEDDED_DIR / "config.json").is_file():
        assert default_model.default_model_path() == default_model.EMBEDDED_DIR
        return
    p = default_model.default_model_path()
    stamp = (p / "model.safetensors").stat().st_mtime_ns
    assert default_model.default_model_path() == p
    assert (p / "model.safetensors").stat().st_mtime_ns == stamp
