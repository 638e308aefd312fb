"""The embedded default model, and the README's first command (`spatialgeo demo`).

Until a trained demo checkpoint is committed under `spatialgeo_core/assets/default_model/`, the
default is a tiny randomly initialised SpatialGeo that the project builds itself in the user cache:
it runs the whole pipeline, and its answers mean nothing.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
TINY_RANDOM_NAME = "tiny-random-v1"
RANDOM_WARNING = ("the default model is a tiny RANDOMLY INITIALISED SpatialGeo built on this "
                  "machine: its answers mean nothing; pass --model-path for real weights")


def cache_dir() -> Path:
    root = os.environ.get("SPATIALGEO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spatialgeo")
    return Path(root)


def is_random_default(path: Path) -> bool:
    return path.name == TINY_RANDOM_NAME


def default_model_path() -> Path:
    """The committed demo checkpoint when present, else the tiny random model (built once)."""
    if (EMBEDDED_DIR / "config.json").is_file():
        return EMBEDDED_DIR
    path = cache_dir() / TINY_RANDOM_NAME
    if not (path / "model.safetensors").is_file():
        from spatialgeo_core.tiny import build_tiny_checkpoint
        build_tiny_checkpoint(path, seed=0)
    log.warning(RANDOM_WARNING)
    return path


def sample_scene(size: int = 224):
    """A simple synthetic picture (two boxes on a floor) and the boxes around them."""
    from PIL import Image, ImageDraw

    from spatialgeo_core.types import Region
    img = Image.new("RGB", (size, size), (170, 200, 235))
    d = ImageDraw.Draw(img)
    d.rectangle([0, size // 2, size, size], fill=(140, 120, 100))
    a = (int(size * 0.15), int(size * 0.45), int(size * 0.35), int(size * 0.7))
    b = (int(size * 0.6), int(size * 0.55), int(size * 0.9), int(size * 0.85))
    d.rectangle(a, fill=(200, 40, 40))
    d.rectangle(b, fill=(40, 60, 200))
    return img, [Region(box=tuple(float(v) for v in a)), Region(box=tuple(float(v) for v in b))]


def run_demo(device: str = "cpu") -> int:
    from spatialgeo_core.pipeline import SpatialGeoPipeline
    from spatialgeo_core.types import GenerationOptions

    path = default_model_path()
    pipe = SpatialGeoPipeline.from_pretrained(path, device=device)
    image, regions = sample_scene()
    question = "How far is Region [0] from Region [1]?"
    ans = pipe.answer(image, question, regions=regions,
                      options=GenerationOptions(max_new_tokens=24))
    print(f"model:    {path}")
    print(f"question: {question}")
    print(f"answer:   {ans.text!r}")
    print(f"tokens:   {ans.num_tokens} generated, {ans.num_visual_tokens} visual; "
          f"{ans.timings_ms['total']:.0f} ms total")
    if is_random_default(path):
        print(f"NOTE:     {RANDOM_WARNING}.")
    return 0
