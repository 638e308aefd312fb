"""Serving: save/load, frame reuse, prefix cache, 4-bit, CLI, and the no-ROS rule."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from spatialgeo_core.errors import InvalidRegionError, InvalidRequestError
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_core.pipeline import SpatialGeoPipeline
from spatialgeo_core.types import GenerationOptions, Region

OPTS = GenerationOptions(max_new_tokens=6)


def _image(seed=0, h=72, w=96):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_save_then_load_gives_identical_logits(tiny_pipeline, tmp_path):
    from spatialgeo_core.checkpoint.ours import save_ours
    m = tiny_pipeline.model
    save_ours(tmp_path / "copy", m.cfg, m.state_dict(), tokenizer_dir=tiny_pipeline.model_path)
    other = SpatialGeoPipeline.from_pretrained(tmp_path / "copy")
    cfg = m.cfg
    px = torch.randn(2, 3, 56, 56)
    ids = torch.randint(3, 500, (2, 8 + cfg.num_visual_tokens))
    ids[:, 3:3 + cfg.num_visual_tokens] = cfg.image_token_id
    with torch.no_grad():
        assert torch.equal(m(ids, px)["logits"], other.model(ids, px)["logits"])


def test_reused_frame_features_give_the_same_answer(tiny_pipeline):
    img = _image(1)
    frame = tiny_pipeline.encode(img)
    q = "How far is the chair from the table?"
    first = tiny_pipeline.answer(frame, q, options=OPTS, keep_logits=True)
    again = tiny_pipeline.answer(frame, q, options=OPTS, keep_logits=True)   # cached prefix
    fresh = tiny_pipeline.answer(img, q, options=OPTS, keep_logits=True)     # fresh encode
    assert first.output_ids == again.output_ids == fresh.output_ids
    for a, b in zip(first.step_logits, fresh.step_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert first.num_visual_tokens == 32 and first.num_tokens == len(first.output_ids)


def test_prefix_cache_equals_uncached_and_single_forward(tiny_dir):
    cached = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), cache_prefix=True))
    plain = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), cache_prefix=False))
    img = _image(2)
    f = cached.encode(img)
    cached.answer(f, "What is left?", options=OPTS)                 # fills the prefix cache
    a = cached.answer(f, "Which one is taller?", options=OPTS, keep_logits=True)
    b = plain.answer(img, "Which one is taller?", options=OPTS, keep_logits=True)
    assert a.output_ids == b.output_ids
    torch.testing.assert_close(a.step_logits[0], b.step_logits[0], atol=1e-5, rtol=0)
    # the first step's logits equal one full forward over the whole prompt
    m = plain.model
    px = plain.processor.image(img)[None]
    with torch.no_grad():
        full = m(torch.tensor([b.input_ids]), px)["logits"][0, -1]
    torch.testing.assert_close(b.step_logits[0], full, atol=1e-4, rtol=0)


def test_greedy_is_reproducible_and_sampling_is_seeded(tiny_pipeline):
    img = _image(3)
    g1 = tiny_pipeline.answer(img, "Is it left?", options=OPTS)
    g2 = tiny_pipeline.answer(img, "Is it left?", options=OPTS)
    assert g1.output_ids == g2.output_ids
    s = GenerationOptions(max_new_tokens=6, temperature=1.5, seed=7)
    assert (tiny_pipeline.answer(img, "Is it left?", options=s).output_ids
            == tiny_pipeline.answer(img, "Is it left?", options=s).output_ids)


def test_regions_change_the_image_and_are_validated(tiny_pipeline):
    img = _image(4)
    f = tiny_pipeline.encode(img)
    r = [Region(box=(5, 5, 40, 30)),
         Region(mask=np.pad(np.ones((10, 10), bool), ((40, 22), (50, 36))))]
    a = tiny_pipeline.answer(f, "How far is Region [0] from Region [1]?", regions=r, options=OPTS)
    assert len(f.visual) == 2                                        # plain + marked image
    assert not torch.equal(*f.visual.values())
    assert a.num_tokens >= 1
    with pytest.raises(InvalidRegionError, match="outside"):
        tiny_pipeline.answer(f, "?", regions=[Region(box=(0, 0, 200, 10))], options=OPTS)
    with pytest.raises(InvalidRegionError, match="does not match"):
        tiny_pipeline.answer(f, "?", regions=[Region(mask=np.ones((5, 5), bool))], options=OPTS)
    with pytest.raises(InvalidRequestError):
        tiny_pipeline.answer(f, "   ", options=OPTS)


def test_cancel_and_streaming(tiny_pipeline):
    seen = []
    ans = tiny_pipeline.answer(_image(5), "Describe it.", options=GenerationOptions(
        max_new_tokens=20), on_text=seen.append, should_stop=lambda: len(seen) >= 3)
    assert ans.stopped == "cancelled" and ans.num_tokens == 3 and len(seen) == 3


def test_4bit_quantises_the_llm_only(tiny_dir):
    import bitsandbytes as bnb
    pipe = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), quantization="4bit",
                                                          dtype="bfloat16"))
    m = pipe.model
    llm_q = [n for n, mod in m.llm.named_modules() if isinstance(mod, bnb.nn.Linear4bit)]
    assert len(llm_q) == 7 * m.cfg.llm.num_hidden_layers
    assert not isinstance(m.llm.lm_head, bnb.nn.Linear4bit)
    for part in (m.clip_tower, m.geo_tower, m.clip_adapter, m.geo_adapter):
        assert not any(isinstance(x, bnb.nn.Linear4bit) for x in part.modules())
        assert all(p.dtype == torch.bfloat16 for p in part.parameters())
    w = m.llm.model.layers[0].self_attn.q_proj.weight
    assert w.dtype == torch.uint8 and w.quant_type == "nf4"
    ans = pipe.answer(_image(6), "How far?", options=OPTS)
    assert ans.num_tokens >= 1


def test_flash_attention_asked_for_but_absent_is_clear(tiny_dir):
    from spatialgeo_core.errors import MissingDependencyError
    from spatialgeo_core.optional import available
    if available("flash_attn"):
        pytest.skip("flash-attn is installed here")
    with pytest.raises(MissingDependencyError, match=r"spatialgeo\[flash\]"):
        SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir),
                                                       attn_implementation="flash_attention_2"))


def test_cli_ask_json(tiny_dir, tmp_path, capsys):
    from PIL import Image

    from spatialgeo_core.cli import main
    img = tmp_path / "img.png"
    Image.fromarray(_image(7)).save(img)
    logits = tmp_path / "logits.safetensors"
    rc = main(["ask", "--model-path", str(tiny_dir), "--image", str(img), "--question",
               "How far is Region [0]?", "--region", "1,1,30,30", "--json",
               "--max-new-tokens", "5", "--save-logits", str(logits)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"answer", "input_ids", "output_ids", "num_visual_tokens", "timings_ms"} <= set(out)
    assert out["num_visual_tokens"] == 32
    assert "<image:32>" in out["input_ids"]
    from safetensors.torch import load_file
    saved = load_file(str(logits))
    assert saved["logits"].shape[0] == len(out["output_ids"])
    assert saved["output_ids"].tolist() == out["output_ids"]


def test_cli_bad_image_is_exit_2(tiny_dir, tmp_path, capsys):
    from spatialgeo_core.cli import main
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    assert main(["ask", "--model-path", str(tiny_dir), "--image", str(bad),
                 "--question", "x"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_core_imports_without_ros():
    """spatialgeo_core must import (and run) with rclpy and every ROS package unimportable."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCK = ("rclpy", "rosidl", "sensor_msgs", "std_msgs", "geometry_msgs", "cv_bridge",
                 "launch", "launch_ros", "diagnostic_msgs", "builtin_interfaces", "rcl_interfaces",
                 "lifecycle_msgs", "visualization_msgs", "spatialgeo_ros")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.startswith(BLOCK):
                    raise ImportError("blocked ROS module " + name)
        sys.meta_path.insert(0, Block())
        import pkgutil, spatialgeo_core
        for m in pkgutil.walk_packages(spatialgeo_core.__path__, "spatialgeo_core."):
            importlib.import_module(m.name)
        print("ok", len(sys.modules))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_prefix_caches_are_limited_across_frames_least_recently_used_first(tiny_dir):
    pipe = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), max_cached_frames=2))
    frames = [pipe.encode(_image(10 + i)) for i in range(3)]
    first = pipe.answer(frames[0], "Is it left?", options=OPTS, keep_logits=True)
    pipe.answer(frames[1], "Is it left?", options=OPTS)
    pipe.answer(frames[0], "Is it big?", options=OPTS)          # frame 0 used again: most recent
    pipe.answer(frames[2], "Is it left?", options=OPTS)         # evicts frame 1, the oldest
    assert [len(f.prefix) for f in frames] == [1, 0, 1]
    assert all(len(f.visual) == 1 for f in frames)             # visual tokens are kept
    again = pipe.answer(frames[1], "Is it left?", options=OPTS)  # recomputed: evicts frame 0
    assert [len(f.prefix) for f in frames] == [0, 1, 1]
    redo = pipe.answer(frames[0], "Is it left?", options=OPTS, keep_logits=True)
    assert redo.output_ids == first.output_ids and again.num_tokens >= 1
    torch.testing.assert_close(redo.step_logits[0], first.step_logits[0], atol=1e-5, rtol=0)
    del frames[2]                                                # a dropped frame leaves the LRU
    pipe.answer(frames[0], "Is it small?", options=OPTS)
    assert pipe.cached_frames() <= 2
    with pytest.raises(ValueError, match="max_cached_frames"):
        SpatialGeoPipeline(pipe.model, pipe.tokenizer, LoadOptions(max_cached_frames=0))
