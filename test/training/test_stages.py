"""The exact trainable parameters of each stage, their learning rates, adapter initialisation."""
import warnings

import pytest
import torch
from training_helpers import CONFIGS

from spatialgeo_core.checkpoint.ours import build_model, read_ours
from spatialgeo_core.errors import ConfigError, KeyMismatchError
from spatialgeo_core.training.config import load_config
from spatialgeo_core.training.export import write_stage1_adapter
from spatialgeo_core.training.stages import (
    apply_stage,
    init_geo_adapter,
    trainable_parameter_names,
)

ENV = {"SPATIALGEO_INIT": "-", "SPATIALGEO_DATA": "-"}

# written out from reference §5.1 (A: moge_mm_projector_list, B: LoRA targets), not from the code
GEO = [f"geo_adapter.{k}.{i}.{w}" for k in range(4) for i in (0, 2) for w in ("weight", "bias")]
CLIP = [f"clip_adapter.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
LORA = [f"llm.base_model.model.model.layers.{i}.{p}.lora_{ab}.default.weight"
        for i in range(2) for p in PROJ for ab in "AB"]


@pytest.fixture
def model(tiny_dir):
    cfg, tensors = read_ours(tiny_dir)
    return build_model(cfg, tensors, "tiny")


def _stage(name, *sets):
    return load_config(CONFIGS / name, list(sets), env=ENV).stage


def test_stage1_trains_exactly_the_hierarchical_adapter(model):
    groups = apply_stage(model, _stage("stage1.yaml"))
    assert trainable_parameter_names(model) == sorted(GEO)
    assert [(g["name"], g["lr"]) for g in groups] == [("geo_adapter", 1e-3)]
    assert len(GEO) == 16


def test_stage2_trains_lora_on_seven_projections_and_both_adapters(model):
    stage = _stage("stage2.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)       # none of the libraries' deprecations
        groups = apply_stage(model, stage)
    assert trainable_parameter_names(model) == sorted(CLIP + GEO + LORA)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("clip_adapter", 2e-5), ("geo_adapter", 2e-5), ("lora", 2e-4)]
    q = model.llm.base_model.model.model.layers[0].self_attn.q_proj
    assert q.lora_A["default"].weight.shape == (128, 64)        # r 128 on the tiny width
    assert q.scaling["default"] == 2.0                          # alpha 256 / r 128
    assert not any(p.requires_grad for p in model.clip_tower.parameters())
    assert not any(p.requires_grad for p in model.geo_tower.parameters())


def test_full_finetune_trains_every_llm_weight(model):
    stage = _stage("stage2_full.yaml")
    apply_stage(model, stage, weight_decay=0.1)
    llm = sorted("llm." + n for n, _ in model.llm.named_parameters())
    assert trainable_parameter_names(model) == sorted(CLIP + GEO + llm)


def test_weight_decay_spares_biases_and_norms(model):
    groups = apply_stage(model, _stage("stage2.yaml"), weight_decay=0.1)
    by = {g["name"]: g for g in groups}
    assert by["geo_adapter"]["weight_decay"] == 0.1
    assert all(p.ndim == 2 for p in by["geo_adapter"]["params"])
    assert by["geo_adapter/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in by["geo_adapter/no_decay"]["params"])


def test_lora_targets_must_exist(model):
    with pytest.raises((ConfigError, ValueError)):
        apply_stage(model, _stage("stage2.yaml", "stage.lora.target_modules=[nothing_here]"))


def test_geo_adapter_init_normal_and_from_a_stage1_file(model, tmp_path):
    init_geo_adapter(model, "normal", seed=0)
    ws = torch.cat([p.flatten() for n, p in model.geo_adapter.named_parameters()
                    if n.endswith("weight")])
    assert abs(ws.std().item() - 0.02) < 0.002 and abs(ws.mean().item()) < 0.002
    assert all(torch.count_nonzero(p) == 0 for n, p in model.geo_adapter.named_parameters()
               if n.endswith("bias"))
    trained = {f"geo_adapter.{k}": torch.randn_like(v)
               for k, v in model.geo_adapter.state_dict().items()}
    f = write_stage1_adapter(tmp_path / "moge_mm_projector_list.bin", trained)
    init_geo_adapter(model, str(f), seed=0)
    for k, v in model.geo_adapter.state_dict().items():
        assert torch.equal(v, trained[f"geo_adapter.{k}"])
    bad = dict(torch.load(f, weights_only=True))
    bad["model.mm_projector.0.weight"] = bad.pop("model.moge_mm_projector_list.0.0.weight")
    torch.save(bad, tmp_path / "bad.bin")
    with pytest.raises(KeyMismatchError, match="mm_projector"):
        init_geo_adapter(model, str(tmp_path / "bad.bin"), seed=0)
    with pytest.raises(ConfigError, match="geo_adapter_init"):
        init_geo_adapter(model, str(tmp_path / "absent.bin"), seed=0)
