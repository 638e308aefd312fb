"""Load options: one frozen value (load_options.LoadOptions) built from the CLI's options or the
node's parameters, one dtype map, the device, and a loader that needs a path."""
from __future__ import annotations

import pytest
import torch

from spatialgeo_core import default_model
from spatialgeo_core.cli import build_parser, load_options
from spatialgeo_core.dtypes import DTYPE_NAMES, dtype_name, torch_dtype
from spatialgeo_core.errors import CheckpointError, InvalidRequestError
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_core.loading import resolve_device
from spatialgeo_core.pipeline import SpatialGeoPipeline


@pytest.mark.parametrize("field, value, match", [
    ("path", "", "path must name a model directory"),
    ("device", "gpu", "device 'gpu' is not auto, cpu, cuda or cuda:N"),
    ("dtype", "fp8", "dtype must be one of float32, float16, bfloat16"),
    ("quantization", "int4", "quantization must be one of none, 4bit, 8bit"),
    ("attn_implementation", "flash", "attn_implementation must be one of"),
    ("template", "chatml", "template must be one of"),
    ("max_cached_frames", 0, "max_cached_frames must be >= 1"),
])
def test_load_options_name_the_bad_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        LoadOptions(**{field: value})


def test_one_dtype_map():
    assert DTYPE_NAMES == ("float32", "float16", "bfloat16")
    assert torch_dtype("bf16") is torch.bfloat16 and torch_dtype("float16") is torch.float16
    assert dtype_name("fp32") == "float32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        torch_dtype("int8")


def test_devices_are_checked_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidRequestError, match="not cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidRequestError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_the_loader_needs_a_path(tmp_path):
    with pytest.raises(CheckpointError, match="no model path given"):
        SpatialGeoPipeline.from_pretrained(LoadOptions())
    with pytest.raises(CheckpointError, match="is not a directory"):
        SpatialGeoPipeline.from_pretrained(tmp_path / "missing")


def test_the_cli_builds_the_load_options_once(tiny_dir, tmp_path, monkeypatch):
    args = build_parser().parse_args([
        "ask", "--image", "x.png", "--model-path", str(tiny_dir), "--load-8bit", "--dtype",
        "bfloat16", "--attn", "eager", "--max-cached-frames", "3", "--device", "auto"])
    assert load_options(args) == LoadOptions(
        path=str(tiny_dir), device="auto", dtype="bfloat16", quantization="8bit",
        attn_implementation="eager", max_cached_frames=3)
    plain = build_parser().parse_args(["ask", "--image", "x.png"])
    monkeypatch.setattr(default_model, "EMBEDDED_DIR", tmp_path / "no-asset")
    with pytest.raises(CheckpointError, match="spatialgeo random-model"):
        load_options(plain)                  # no --model-path: the embedded model, named
    monkeypatch.setattr(default_model, "EMBEDDED_DIR", tiny_dir)
    assert load_options(plain).path == str(tiny_dir) and load_options(plain).quantization == "none"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ask", "--image", "x.png", "--max-cached-frames", "0"])
