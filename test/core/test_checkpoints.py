"""Strict, key-for-key loading of the published layouts (reference §5), on tiny checkpoints."""
import json
import re

import pytest
import torch
from layouts import (
    reference_name,
    source_model,
    write_clip_dir,
    write_llava_base,
    write_merged,
    write_moge,
    write_release,
    write_vit_model,
)
from safetensors.torch import load_file, save_file

from spatialgeo_core.checkpoint.convert import assemble
from spatialgeo_core.checkpoint.ours import build_model, read_ours, save_ours
from spatialgeo_core.config import real_size, tiny
from spatialgeo_core.errors import CheckpointError, KeyMismatchError
from spatialgeo_core.model import SpatialGeoForCausalLM


def _logits(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    px = torch.randn(1, 3, cfg.clip.image_size, cfg.clip.image_size, generator=g)
    ids = torch.randint(3, cfg.llm.vocab_size, (1, 6 + cfg.num_visual_tokens), generator=g)
    ids[0, 2:2 + cfg.num_visual_tokens] = cfg.image_token_id
    with torch.no_grad():
        return model(ids, px)["logits"]


@pytest.fixture(scope="module")
def src():
    return source_model(tiny(vocab_size=512))


@pytest.fixture(scope="module")
def pieces(tmp_path_factory, src):
    d = tmp_path_factory.mktemp("published")
    release, base_llm = write_release(d / "spatialgeo-release", src)
    base = write_llava_base(d / "llava-v1.5-7b", base_llm,
                            # the base's CLIP adapter is LLaVA-1.5's; stage 2 retrains it
                            {k: v + 1.0 for k, v in src.clip_adapter.state_dict().items()},
                            src.cfg)
    return {"base": base, "release": release, "clip": write_clip_dir(d / "clip", src),
            "vit": write_vit_model(d / "vit_model.pt", src),
            "moge1": write_moge(d / "moge_v1.pt", src, 1),
            "moge2": write_moge(d / "moge_v2.pt", src, 2),
            "merged": write_merged(d / "merged", src), "dir": d}


def test_route_a_base_lora_release_vit_clip(pieces, src):
    asm = assemble(pieces["base"], release_dir=pieces["release"], vit_path=pieces["vit"],
                   clip_dir=pieces["clip"])
    assert asm.config.geometry.layers == [2, 3, 4, 5]
    model = build_model(asm.config, asm.tensors, "route a")
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, atol=2e-6, rtol=0, msg=k)
    torch.testing.assert_close(_logits(model), _logits(src), atol=1e-4, rtol=0)


def test_route_c_moge_v1_gives_the_same_backbone(pieces, src):
    asm = assemble(pieces["base"], release_dir=pieces["release"], moge_path=pieces["moge1"],
                   clip_dir=pieces["clip"])
    for k, v in src.geo_tower.backbone.state_dict().items():
        assert torch.equal(asm.tensors["geo_tower.backbone." + k], v)


def test_moge_v2_is_refused_with_reason(pieces):
    with pytest.raises(CheckpointError, match=r"MoGe v2.*\[5, 11, 17, 23\]"):
        assemble(pieces["base"], release_dir=pieces["release"], moge_path=pieces["moge2"],
                 clip_dir=pieces["clip"])


def test_route_b_merged_ignores_second_clip_and_says_so(pieces, src, caplog):
    with caplog.at_level("WARNING"):
        asm = assemble(pieces["merged"], clip_dir=pieces["clip"])
    assert "redundant second CLIP" in caplog.text
    model = build_model(asm.config, asm.tensors, "route b")
    torch.testing.assert_close(_logits(model), _logits(src), atol=0, rtol=0)


def test_merged_config_type_llava_llama_and_base_type_llava_both_accepted(pieces):
    assert json.loads((pieces["base"] / "config.json").read_text())["model_type"] == "llava"
    assert (json.loads((pieces["merged"] / "config.json").read_text())["model_type"]
            == "llava_llama")


def test_renamed_key_fails_naming_it(pieces, tmp_path, src):
    bad = tmp_path / "vit_renamed.pt"
    sd = torch.load(pieces["vit"], weights_only=True)
    sd["blocks.3.attn.qkv.weightX"] = sd.pop("blocks.3.attn.qkv.weight")
    torch.save(sd, bad)
    asm = assemble(pieces["base"], release_dir=pieces["release"], vit_path=bad,
                   clip_dir=pieces["clip"])
    with pytest.raises(KeyMismatchError) as e:
        build_model(asm.config, asm.tensors, "renamed")
    assert "geo_tower.backbone.blocks.3.attn.qkv.weight" in str(e.value)
    assert "blocks.3.attn.qkv.weightX" in str(e.value)


def test_missing_lora_half_and_missing_non_lora_key_fail(pieces, tmp_path):
    import shutil
    rel = tmp_path / "rel"
    shutil.copytree(pieces["release"], rel)
    sd = load_file(str(rel / "adapter_model.safetensors"))
    sd.pop("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
    save_file(sd, str(rel / "adapter_model.safetensors"))
    with pytest.raises(KeyMismatchError, match=r"model\.layers\.1\.mlp\.down_proj\.weight"):
        assemble(pieces["base"], release_dir=rel, vit_path=pieces["vit"], clip_dir=pieces["clip"])
    shutil.copy(pieces["release"] / "adapter_model.safetensors", rel)
    nl = torch.load(rel / "non_lora_trainables.bin", weights_only=True)
    nl.pop("base_model.model.model.moge_mm_projector_list.2.0.bias")
    torch.save(nl, rel / "non_lora_trainables.bin")
    asm = assemble(pieces["base"], release_dir=rel, vit_path=pieces["vit"],
                   clip_dir=pieces["clip"])
    with pytest.raises(KeyMismatchError, match=r"geo_adapter\.2\.0\.bias"):
        build_model(asm.config, asm.tensors, "missing adapter key")


def test_corrupt_and_pickled_code_files_are_clear_errors(pieces, tmp_path):
    corrupt = tmp_path / "vit.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        assemble(pieces["base"], release_dir=pieces["release"], vit_path=corrupt,
                 clip_dir=pieces["clip"])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="cannot read"):
        assemble(pieces["base"], release_dir=pieces["release"], vit_path=evil,
                 clip_dir=pieces["clip"])


def test_missing_shard_is_named(pieces, tmp_path):
    import shutil
    d = tmp_path / "merged"
    shutil.copytree(pieces["merged"], d)
    next(d.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003"):
        assemble(d, clip_dir=pieces["clip"])


def test_convert_cli_then_load_ours(pieces, src, tmp_path):
    from spatialgeo_core.cli import main
    out = tmp_path / "ours"
    rc = main(["convert", "--llava", str(pieces["base"]), "--release", str(pieces["release"]),
               "--vit", str(pieces["vit"]), "--clip", str(pieces["clip"]), "--dtype", "float32",
               "--out", str(out)])
    assert rc == 0
    cfg, tensors = read_ours(out)
    assert cfg.to_dict() == assemble(pieces["base"], pieces["release"], pieces["vit"],
                                     clip_dir=pieces["clip"]).config.to_dict()
    model = build_model(cfg, tensors, "ours")
    torch.testing.assert_close(_logits(model), _logits(src), atol=1e-4, rtol=0)
    assert (out / "tokenizer.model").is_file()


def test_convert_cli_error_is_one_line_exit_2(pieces, tmp_path, capsys):
    from spatialgeo_core.cli import main
    rc = main(["convert", "--llava", str(pieces["base"]), "--release", str(pieces["release"]),
               "--moge", str(pieces["moge2"]), "--clip", str(pieces["clip"]),
               "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "MoGe v2" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_save_is_atomic_and_keeps_the_old_checkpoint(tmp_path, src):
    d = save_ours(tmp_path / "m", src.cfg, src.state_dict(), tokenizer_dir=None)
    before = (d / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="no-such-tokenizer"):
        save_ours(tmp_path / "m", src.cfg, src.state_dict(),
                  tokenizer_dir=tmp_path / "no-such-tokenizer")
    shared = dict(src.state_dict())
    shared["extra.alias"] = shared["llm.model.norm.weight"]       # shares storage: refused
    with pytest.raises(CheckpointError, match="cannot write weights"):
        save_ours(tmp_path / "m", src.cfg, shared)
    assert (d / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# ---- real size, on the meta device --------------------------------------------------------------
def _reference_keys_real_size():
    """Reference §5.1 C (less the second CLIP copy), written out from the text."""
    keys = {"model.embed_tokens.weight": (32000, 4096), "model.norm.weight": (4096,),
            "lm_head.weight": (32000, 4096)}
    for i in range(32):
        for p, s in (("self_attn.q_proj", (4096, 4096)), ("self_attn.k_proj", (4096, 4096)),
                     ("self_attn.v_proj", (4096, 4096)), ("self_attn.o_proj", (4096, 4096)),
                     ("mlp.gate_proj", (11008, 4096)), ("mlp.up_proj", (11008, 4096)),
                     ("mlp.down_proj", (4096, 11008))):
            keys[f"model.layers.{i}.{p}.weight"] = s
        keys[f"model.layers.{i}.input_layernorm.weight"] = (4096,)
        keys[f"model.layers.{i}.post_attention_layernorm.weight"] = (4096,)
    for pre in ["model.mm_projector."] + [f"model.moge_mm_projector_list.{k}." for k in range(4)]:
        keys.update({pre + "0.weight": (4096, 1024), pre + "0.bias": (4096,),
                     pre + "2.weight": (4096, 4096), pre + "2.bias": (4096,)})
    b = "model.moge_tower.backbone."
    keys.update({b + "cls_token": (1, 1, 1024), b + "pos_embed": (1, 1370, 1024),
                 b + "mask_token": (1, 1024), b + "patch_embed.proj.weight": (1024, 3, 14, 14),
                 b + "patch_embed.proj.bias": (1024,), b + "norm.weight": (1024,),
                 b + "norm.bias": (1024,)})
    for i in range(24):
        p = f"{b}blocks.{i}."
        keys.update({p + "norm1.weight": (1024,), p + "norm1.bias": (1024,),
                     p + "attn.qkv.weight": (3072, 1024), p + "attn.qkv.bias": (3072,),
                     p + "attn.proj.weight": (1024, 1024), p + "attn.proj.bias": (1024,),
                     p + "ls1.gamma": (1024,), p + "norm2.weight": (1024,),
                     p + "norm2.bias": (1024,), p + "mlp.fc1.weight": (4096, 1024),
                     p + "mlp.fc1.bias": (4096,), p + "mlp.fc2.weight": (1024, 4096),
                     p + "mlp.fc2.bias": (1024,), p + "ls2.gamma": (1024,)})
    return keys


def test_real_size_meta_model_has_the_reference_keys_and_shapes():
    with torch.device("meta"):
        model = SpatialGeoForCausalLM(real_size())
    sd = {reference_name(k): tuple(v.shape) for k, v in model.state_dict().items()}
    clip = {k: v for k, v in sd.items() if k.startswith("model.vision_tower.vision_tower.")}
    rest = {k: v for k, v in sd.items() if k not in clip}
    assert rest == _reference_keys_real_size()
    geo = [k for k in rest if k.startswith("model.moge_tower.backbone.")]
    assert len(geo) == 343
    # CLIP ViT-L/14-336 in the transformers 4.x layout that the openai repo stores
    assert clip["model.vision_tower.vision_tower.vision_model.embeddings.position_embedding"
                ".weight"] == (577, 1024)
    assert clip["model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding"
                ".weight"] == (1024, 3, 14, 14)
    layers = {int(m[1]) for k in clip
              if (m := re.search(r"encoder\.layers\.(\d+)\.", k))}
    assert layers == set(range(24))
    n_params = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("geo_adapter"))
    assert n_params == 4 * 20_979_712          # 4 x 20.98 M (reference §1.4)
