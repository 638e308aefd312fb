"""End to end through `spatialgeo train` itself: the loss falls, bad records are reported, and the
exports load back through the core loaders."""
import dataclasses
import json

import pytest
import torch
from layouts import llm_llava_names, write_clip_dir, write_llava_base, write_vit_model
from safetensors.torch import load_file
from training_helpers import CONFIGS, cli_train, last_trainable, losses, overrides

from spatialgeo_core.checkpoint import keymap
from spatialgeo_core.checkpoint.convert import assemble
from spatialgeo_core.checkpoint.io import read_state_dict
from spatialgeo_core.checkpoint.llava import read_lora, read_non_lora_trainables
from spatialgeo_core.checkpoint.ours import build_model, read_ours
from spatialgeo_core.cli import main
from spatialgeo_core.conversation import get_template
from spatialgeo_core.processor import Processor
from spatialgeo_core.tokenizer import LlamaTokenizer
from spatialgeo_core.training.config import load_config
from spatialgeo_core.training.data import Collator, LlavaDataset
from spatialgeo_core.training.stages import apply_stage

PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def stage2_run(tmp_path_factory, tiny_dir, tiny_data):
    out = tmp_path_factory.mktemp("stage2") / "run"
    rc = cli_train("tiny_stage2.yaml", overrides(tiny_dir, tiny_data, out))
    return rc, out


def test_stage2_loss_falls(stage2_run):
    rc, out = stage2_run
    assert rc == 0
    ls = losses(out)
    assert len(ls) == 24                                  # 44 records / 8, 4 epochs
    first, last = sum(ls[:4]) / 4, sum(ls[-4:]) / 4
    assert last < first - 0.3, ls
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 24


def test_bad_records_are_skipped_counted_and_reported(stage2_run):
    _, out = stage2_run
    report = json.loads((out / "skipped.json").read_text())
    assert report["records"] == 44 and report["skipped"] == 4
    assert report["counts"] == {"missing_image": 1, "corrupt_image": 1, "malformed": 1,
                                "no_supervised_tokens": 1}
    ids = {r: [e["id"] for e in v] for r, v in report["by_reason"].items()}
    assert ids["no_supervised_tokens"] == ["bad-truncated"]
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["skipped"] for r in rows) == 4 * 4       # met once per epoch
    assert sum(r["samples"] for r in rows) == 40 * 4


def test_lora_export_has_the_release_layout(stage2_run):
    _, out = stage2_run
    d = out / "export" / "lora"
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["peft_type"]) == (8, 16, "LORA")
    assert sorted(cfg["target_modules"]) == sorted(p.split(".")[1] for p in PROJ)
    keys = set(load_file(str(d / "adapter_model.safetensors")))
    assert keys == {f"base_model.model.model.layers.{i}.{p}.lora_{ab}.weight"
                    for i in range(2) for p in PROJ for ab in "AB"}
    nl = read_state_dict(d / "non_lora_trainables.bin")
    assert set(nl) == ({f"base_model.model.model.mm_projector.{i}.{w}"
                        for i in (0, 2) for w in ("weight", "bias")}
                       | {f"base_model.model.model.moge_mm_projector_list.{k}.{i}.{w}"
                          for k in range(4) for i in (0, 2) for w in ("weight", "bias")})
    lora, scale = read_lora(d)
    assert scale == 2.0 and len(lora) == 14
    assert set(read_non_lora_trainables(d)) == {k for k in last_trainable(out)
                                                 if k.startswith(("clip_adapter", "geo_adapter"))}


def test_lora_export_through_the_core_loader_equals_the_merged_export(stage2_run, tiny_dir,
                                                                      tmp_path):
    """Route (a) of the core loader: a llava-v1.5-style base + our LoRA dir + geometry + CLIP."""
    _, out = stage2_run
    cfg, init = read_ours(tiny_dir)
    model = build_model(cfg, init, "init")
    base = write_llava_base(tmp_path / "llava", llm_llava_names(model),
                            model.clip_adapter.state_dict(), cfg)
    asm = assemble(base, release_dir=out / "export" / "lora",
                   vit_path=write_vit_model(tmp_path / "vit_model.pt", model),
                   clip_dir=write_clip_dir(tmp_path / "clip", model))
    mcfg, merged = read_ours(out / "export" / "merged")
    assert set(asm.tensors) == set(merged)
    for k, v in merged.items():
        torch.testing.assert_close(asm.tensors[k], v, rtol=0, atol=1e-6, msg=k)
    assert mcfg == dataclasses.replace(cfg, feature_drop_prob=0.3)


def test_merged_export_computes_what_the_trained_model_computes(stage2_run, tiny_dir,
                                                                tiny_data):
    _, out = stage2_run
    cfg, init = read_ours(tiny_dir)
    trained = build_model(cfg, init, "init")
    stage = load_config(CONFIGS / "tiny_stage2.yaml", [], env={}).stage
    apply_stage(trained, stage)
    missing, unexpected = trained.load_state_dict(last_trainable(out), strict=False)
    assert not unexpected and all(".lora_" not in k and "adapter" not in k for k in missing)
    mcfg, merged = read_ours(out / "export" / "merged")
    served = build_model(mcfg, merged, "merged")
    tok = LlamaTokenizer.from_dir(out / "export" / "merged")
    ds = LlavaDataset(tiny_data / "train.json", tiny_data, Processor(mcfg, tok),
                      get_template("vicuna_v1"))
    b = Collator(tok.pad_id, mcfg.clip.image_size, True)([ds[0], ds[3]])
    with torch.no_grad():
        a = trained.eval()(b.input_ids, b.pixel_values, b.attention_mask)["logits"]
        c = served(b.input_ids, b.pixel_values, b.attention_mask)["logits"]
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_export_command_rewrites_a_checkpoint(stage2_run, tmp_path):
    _, out = stage2_run
    assert main(["export", "--checkpoint", str(out), "--format", "lora",
                 "--out", str(tmp_path)]) == 0
    a = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    b = load_file(str(out / "export" / "lora" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_trains_only_the_adapter_and_exports_the_upstream_file(tmp_path, tiny_dir,
                                                                      tiny_data):
    out = tmp_path / "s1"
    rc = cli_train("tiny_stage1.yaml",
                   overrides(tiny_dir, tiny_data, out, "pretrain.json", "optim.epochs=1"))
    assert rc == 0
    sd = read_state_dict(out / "export" / "moge_mm_projector_list.bin")     # core reader
    assert set(sd) == {f"model.moge_mm_projector_list.{k}.{i}.{w}"
                       for k in range(4) for i in (0, 2) for w in ("weight", "bias")}
    geo = {keymap.from_llava(k): v for k, v in sd.items()}                   # core key map
    cfg, init = read_ours(tiny_dir)
    mcfg, merged = read_ours(out / "export" / "merged")
    for k, v in merged.items():
        if k.startswith("geo_adapter."):
            assert torch.equal(v, geo[k]) and not torch.equal(v, init[k]), k
        else:
            assert torch.equal(v, init[k]), k                                # nothing else moved
    assert mcfg.image_aspect_ratio == "pad"          # trained with `square`, served with `pad`
    report = json.loads((out / "skipped.json").read_text())
    assert report["counts"] == {"missing_image": 1, "corrupt_image": 1, "malformed": 1,
                                "no_supervised_tokens": 0}


def test_train_init_builds_the_stage1_start_from_the_llava_layout(tmp_path, tiny_dir):
    cfg, t = read_ours(tiny_dir)
    model = build_model(cfg, t, "tiny")
    base = write_llava_base(tmp_path / "llava", llm_llava_names(model),
                            model.clip_adapter.state_dict(), cfg)
    assert main(["train-init", "--llava", str(base),
                 "--vit", str(write_vit_model(tmp_path / "vit_model.pt", model)),
                 "--clip", str(write_clip_dir(tmp_path / "clip", model)),
                 "--dtype", "float32", "--out", str(tmp_path / "init")]) == 0
    icfg, it = read_ours(tmp_path / "init")
    assert icfg.geometry.layers == cfg.geometry.layers and set(it) == set(t)
    for k, v in t.items():
        if not k.startswith("geo_adapter."):
            assert torch.equal(it[k], v), k
    w = torch.cat([v.flatten() for k, v in it.items()
                   if k.startswith("geo_adapter.") and k.endswith("weight")])
    assert abs(w.std().item() - 0.02) < 0.002
    assert all(torch.count_nonzero(v) == 0 for k, v in it.items()
               if k.startswith("geo_adapter.") and k.endswith("bias"))


def test_the_readme_laptop_commands_chain_both_stages(tmp_path, monkeypatch):
    """`spatialgeo train-smoke`, stage 1, then stage 2 from stage 1's merged export, with the
    configs' default paths (relative to the working directory), as the README says."""
    for var in ("SPATIALGEO_INIT", "SPATIALGEO_DATA", "SPATIALGEO_OUTPUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train-smoke"]) == 0
    assert main(["train", "--config", str(CONFIGS / "tiny_stage1.yaml"),
                 "--set", "optim.epochs=1", "run.progress_bar=false"]) == 0
    assert (tmp_path / "runs/tiny-stage1/export/moge_mm_projector_list.bin").is_file()
    assert main(["train", "--config", str(CONFIGS / "tiny_stage2.yaml"),
                 "--set", "init=runs/tiny-stage1/export/merged", "optim.max_steps=3",
                 "run.progress_bar=false"]) == 0
    _, s1 = read_ours(tmp_path / "runs/tiny-stage1/export/merged")
    _, s2 = read_ours(tmp_path / "runs/tiny-stage2/export/merged")
    assert not torch.equal(s1["geo_adapter.0.0.weight"], s2["geo_adapter.0.0.weight"])
