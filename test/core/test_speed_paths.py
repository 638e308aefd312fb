"""The speed paths give the same answers as the plain ones: CLIP stops at the layer it needs, the
prefix cache is shared rather than copied, the merge needs no device count, batched and
static-cache decoding equal one-at-a-time decoding, fixed-length answers; and the benchmark scripts
run. No timings here."""
import gc
import json
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from spatialgeo_core.clip_tower import ClipTower
from spatialgeo_core.config import ClipTowerConfig, tiny
from spatialgeo_core.errors import InvalidRequestError
from spatialgeo_core.generation import decode
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_core.pipeline import SpatialGeoPipeline
from spatialgeo_core.types import GenerationOptions

OPTS = GenerationOptions(max_new_tokens=8)
QUESTIONS = ["How far?", "Is the red box to the left of the blue cylinder on the floor?",
             "Which one is closer to the camera?"]


def _image(seed=0, h=72, w=96):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- CLIP tower ---------------------------------------------------------------------------------
@pytest.mark.parametrize("select_layer", [-2, -1, 1, 0])
def test_clip_runs_only_needed_layers_and_matches_the_full_forward(select_layer):
    cfg = ClipTowerConfig(**{**tiny().clip.__dict__, "select_layer": select_layer})
    torch.manual_seed(0)
    tower = ClipTower(cfg).eval()
    n = cfg.num_hidden_layers
    assert tower.layers_run == select_layer % (n + 1)
    assert any(k.startswith(f"vision_model.encoder.layers.{n - 1}.") for k in tower.state_dict())
    assert any(k.startswith("vision_model.post_layernorm.") for k in tower.state_dict())
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        full = tower.vision_model(pixel_values=x, output_hidden_states=True)
        assert torch.equal(tower(x), full.hidden_states[select_layer][:, 1:])


# ---- fixed-length answers -----------------------------------------------------------------------
class _EosLovingLM:
    """A stand-in causal LM whose logits always rank EOS (2) first and token 7 second."""

    def __init__(self, vocab=16, eos=2):
        self.logits = torch.zeros(vocab)
        self.logits[eos], self.logits[7] = 5.0, 1.0

    def __call__(self, input_ids, past_key_values=None, use_cache=True, **kw):
        return SimpleNamespace(logits=self.logits.expand(1, 1, -1))


def test_min_new_tokens_masks_eos_until_reached():
    lm = _EosLovingLM()
    plain = decode(lm, lm.logits, None, GenerationOptions(max_new_tokens=6), 2, 0.0)
    assert plain.ids == [2] and plain.stopped == "eos"
    held = decode(lm, lm.logits, None, GenerationOptions(max_new_tokens=6, min_new_tokens=4), 2,
                  0.0, keep_logits=True)
    assert held.ids == [7, 7, 7, 7, 2] and held.stopped == "eos"
    assert all(step[2] == 5.0 for step in held.step_logits)          # kept logits are unmasked
    fixed = decode(lm, lm.logits, None, GenerationOptions(max_new_tokens=5, min_new_tokens=5), 2,
                   0.0)
    assert fixed.ids == [7] * 5 and fixed.stopped == "max_new_tokens"


@pytest.mark.parametrize("bad", [-1, 9])
def test_min_new_tokens_is_validated(bad):
    with pytest.raises(InvalidRequestError, match="min_new_tokens"):
        GenerationOptions(max_new_tokens=8, min_new_tokens=bad)


class _EosHead(nn.Module):
    """lm_head stand-in: EOS first, token 5 second, whatever the hidden state."""

    def __init__(self, vocab, eos):
        super().__init__()
        self.vocab, self.eos = vocab, eos

    def forward(self, h):
        out = torch.zeros(*h.shape[:-1], self.vocab, dtype=h.dtype, device=h.device)
        out[..., self.eos], out[..., 5] = 3.0, 1.0
        return out


def test_pipeline_gives_fixed_length_answers_with_min_new_tokens(tiny_dir):
    pipe = SpatialGeoPipeline.from_pretrained(tiny_dir)
    eos = pipe.tokenizer.eos_id
    pipe.model.llm.lm_head = _EosHead(pipe.cfg.llm.vocab_size, eos)
    img = _image(1)
    assert pipe.answer(img, "How far?", options=OPTS).output_ids == [eos]
    fixed = GenerationOptions(max_new_tokens=20, min_new_tokens=20)
    a = pipe.answer(img, "How far?", options=fixed)
    assert a.num_tokens == 20 and a.stopped == "max_new_tokens" and eos not in a.output_ids
    [b] = pipe.answer_batch(img, ["How far?"], options=fixed)
    assert b.output_ids == a.output_ids


# ---- prefix cache and merge ---------------------------------------------------------------------
def test_prefix_cache_is_shared_between_questions_and_never_written(tiny_pipeline):
    img = _image(2)
    frame = tiny_pipeline.encode(img)
    first = tiny_pipeline.answer(frame, QUESTIONS[0], options=OPTS)
    [(kv, end)] = frame.prefix.values()
    before = [(k.clone(), v.clone()) for k, v in kv]
    for q in QUESTIONS:
        again = tiny_pipeline.answer(frame, q, options=OPTS, keep_logits=True)
        fresh = tiny_pipeline.answer(img, q, options=OPTS, keep_logits=True)
        assert again.output_ids == fresh.output_ids
        for x, y in zip(again.step_logits, fresh.step_logits, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    [(kv_after, _)] = frame.prefix.values()
    assert kv_after is kv                                            # the same tensors, not copies
    for (k, v), (k0, v0) in zip(kv, before, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    # bytes held: the visual tokens plus, per layer, keys and values of at least the prefix
    cfg = tiny_pipeline.cfg.llm
    per_pos = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (
        cfg.hidden_size // cfg.num_attention_heads) * 4
    visual = next(iter(frame.visual.values())).numel() * 4
    assert visual + end * per_pos <= frame.nbytes() <= visual + len(first.input_ids) * per_pos


def test_prompt_embeds_equal_the_training_merge(tiny_pipeline):
    pipe = tiny_pipeline
    frame = pipe.encode(_image(3))
    visual = next(iter(frame.visual.values()))                        # [1, V, D]
    ids = pipe.processor.tokenize(pipe.template.prompt("How far is it?"))
    start, end = pipe.processor.image_span(ids)
    with torch.no_grad():
        ours = pipe._prompt_embeds(ids, start, end, visual)
        ref = pipe.model.embed(torch.tensor([ids]), visual)
    assert torch.equal(ours, ref)
    short = ids[:end - 1] + ids[end:]
    n = end - start
    with pytest.raises(ValueError, match=rf"{n - 1} image placeholders .* {n} visual tokens"):
        pipe._prompt_embeds(short, start, end - 1, visual)


# ---- batched and static-cache decoding ----------------------------------------------------------
@pytest.mark.parametrize("options", [OPTS, GenerationOptions(max_new_tokens=8, temperature=1.3,
                                                             top_p=0.9, seed=3)])
def test_answer_batch_equals_answering_one_at_a_time(tiny_pipeline, options):
    img = _image(4)
    frame = tiny_pipeline.encode(img)
    batch = tiny_pipeline.answer_batch(frame, QUESTIONS, options=options, keep_logits=True)
    cached = tiny_pipeline.answer_batch(frame, QUESTIONS, options=options)  # prefix from cache
    for q, b, c in zip(QUESTIONS, batch, cached, strict=True):
        one = tiny_pipeline.answer(img, q, options=options, keep_logits=True)
        assert b.output_ids == c.output_ids == one.output_ids
        assert b.input_ids == one.input_ids and b.stopped == one.stopped
        for x, y in zip(b.step_logits, one.step_logits, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    with pytest.raises(InvalidRequestError):
        tiny_pipeline.answer_batch(frame, [], options=options)
    with pytest.raises(InvalidRequestError):
        tiny_pipeline.answer_batch(frame, ["ok", "  "], options=options)


def test_static_cache_decoding_equals_dynamic(tiny_dir):
    plain = SpatialGeoPipeline.from_pretrained(tiny_dir)
    static = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), static_cache=True))
    img = _image(5)
    frame = static.encode(img)
    caches = set()
    for q in QUESTIONS:                                   # first question, then cached prefix
        a = plain.answer(img, q, options=OPTS, keep_logits=True)
        b = static.answer(frame, q, options=OPTS, keep_logits=True)
        caches.add(id(static._static))
        assert a.output_ids == b.output_ids
        for x, y in zip(a.step_logits, b.step_logits, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert len(caches) == 1                               # one preallocated cache, reused
    llm = weakref.ref(static.model.llm)
    static.release()
    gc.collect()
    assert llm() is None                                  # nothing keeps the model alive


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled decoding pays off (and is "
                    "checked) on a GPU; compiling on a 2-core CPU takes minutes")
def test_compiled_decoding_equals_eager_on_gpu(tiny_dir):
    eager = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), device="cuda",
                                                           dtype="float32"))
    compiled = SpatialGeoPipeline.from_pretrained(LoadOptions(str(tiny_dir), device="cuda",
                                                              dtype="float32",
                                                              compile_decode=True))
    img = _image(6)
    frame = compiled.encode(img)
    for q in QUESTIONS:
        a = eager.answer(img, q, options=OPTS, keep_logits=True)
        b = compiled.answer(frame, q, options=OPTS, keep_logits=True)
        assert a.output_ids == b.output_ids
        torch.testing.assert_close(a.step_logits[-1], b.step_logits[-1], atol=1e-3, rtol=0)


# ---- the benchmark scripts ----------------------------------------------------------------------
def test_llava_baseline_is_transformers_llava_with_our_sizes():
    from transformers import LlavaForConditionalGeneration

    from bench.common import (
        LlavaBaseline,
        Setup,
        build_llava,
        llava_config,
        make_tokenizer,
        model_config,
    )
    setup = Setup(answer_tokens=5)
    tok = make_tokenizer()
    cfg = model_config(setup, tok.vocab_size)
    llava = build_llava(setup, cfg)
    ref = LlavaForConditionalGeneration(llava_config(cfg)).eval()   # transformers' own init
    ref.load_state_dict(llava.state_dict())
    base = LlavaBaseline(llava, cfg, tok)
    ids = base.prompt_ids("How far?")
    assert ids.count(cfg.image_token_id) == cfg.num_patches == cfg.num_visual_tokens // 2
    px = base.pixels(_image(7))
    t = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(llava(input_ids=t, pixel_values=px).logits,
                           ref(input_ids=t, pixel_values=px).logits)
    ans = base.answer(_image(7), "How far?", 5)
    assert len(ans.output_ids) == 5 and ans.timings_ms["first_token"] > 0
    assert [len(o) for o in base.answer_batch(QUESTIONS, 5, px)] == [5, 5, 5]


def test_bench_latency_runs_and_forces_the_answer_length(tmp_path, capsys):
    from bench import bench_latency
    out = tmp_path / "latency.json"
    assert bench_latency.main(["--reps", "1", "--warmup", "0", "--vision-reps", "1",
                               "--answer-tokens", "4", "--batch", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["setup"]["answer_lengths_seen"] == {"ours": [4], "llava": [4]}
    assert res["setup"]["visual_tokens"] == {"ours": 32, "llava": 16}
    assert {"first", "followup", "batch", "vision"} <= set(res["ratios_p50"])
    assert "| **first question, 4 tokens" in capsys.readouterr().out


def test_bench_memory_runs_and_the_estimate_matches_it(tmp_path):
    from bench import bench_memory
    out, est_out = tmp_path / "memory.json", tmp_path / "estimate.json"
    assert bench_memory.main(["--in-process", "--answer-tokens", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["models"]
    assert res["ours"]["four_cameras"]["frame_cache_mb"] == pytest.approx(
        4 * res["ours"]["one_camera"]["frame_cache_mb"], rel=0.2)
    assert res["ours"]["weights_mb"] > res["llava"]["weights_mb"] > 0
    assert bench_memory.main(["--estimate", "--out", str(est_out)]) == 0
    est = json.loads(est_out.read_text())
    ours, llava = res["ours"], res["llava"]
    assert est["ours_frame_cache_mb"] == pytest.approx(ours["one_camera"]["frame_cache_mb"])
    assert sum(est["ours_weights_mb"].values()) == pytest.approx(ours["weights_mb"], rel=0.02)
    assert sum(est["llava_weights_mb"].values()) == pytest.approx(llava["weights_mb"], rel=0.02)
