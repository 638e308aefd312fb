"""Stage configs: the shipped YAML files reproduce reference §4; overrides, ${VAR}, validation."""
import pytest
from training_helpers import CONFIGS

from spatialgeo_core.errors import ConfigError
from spatialgeo_core.training.config import LLAMA_PROJECTIONS, load_config

ENV = {"SPATIALGEO_INIT": "/models/init", "SPATIALGEO_DATA": "/data", "SPATIALGEO_OUTPUT": "/out"}


def _load(name, *sets, env=ENV):
    return load_config(CONFIGS / name, list(sets), env=env)


def test_every_shipped_config_loads():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"stage1.yaml", "stage2.yaml", "tiny_stage1.yaml", "tiny_stage2.yaml"} <= set(names)
    for n in names:
        cfg = _load(n)
        assert cfg.init == "/models/init" and cfg.output_dir == "/out"


def test_stage1_is_reference_4_1():
    c = _load("stage1.yaml")
    lr = c.stage.lr
    assert (lr.clip_adapter, lr.geo_adapter, lr.llm, lr.lora) == (0.0, 1e-3, 0.0, 0.0)
    assert c.stage.lora is None and c.stage.feature_drop_prob == 0.0
    assert c.stage.geo_adapter_init == "normal"
    assert (c.data.template, c.data.image_aspect_ratio) == ("plain", "square")
    assert c.data.json_path == "/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
    assert (c.optim.global_batch_size, c.optim.epochs, c.optim.weight_decay) == (256, 1, 0.0)
    assert (c.optim.schedule, c.optim.warmup_ratio) == ("cosine", 0.03)
    assert c.run.export == ["stage1_adapter", "merged"]


def test_stage2_is_reference_4_2():
    c = _load("stage2.yaml")
    lr = c.stage.lr
    assert (lr.clip_adapter, lr.geo_adapter, lr.llm, lr.lora) == (2e-5, 2e-5, 0.0, 2e-4)
    lo = c.stage.lora
    assert (lo.r, lo.alpha, lo.dropout) == (128, 256.0, 0.05)
    assert sorted(lo.target_modules) == sorted(LLAMA_PROJECTIONS)
    assert c.stage.feature_drop_prob == 0.3
    assert (c.data.template, c.data.image_aspect_ratio) == ("vicuna_v1", "pad")
    assert c.data.group_by_modality is True
    assert (c.optim.global_batch_size, c.optim.epochs) == (128, 1)
    assert c.run.export == ["lora", "merged"]


def test_full_finetune_is_a_config_away():
    c = _load("stage2.yaml", "stage.lr.lora=0", "stage.lora=null", "stage.lr.llm=2e-5",
              "run.export=[merged]")
    assert c.stage.lr.llm == 2e-5 and not c.stage.uses_lora
    full = _load("stage2_full.yaml")
    assert full.stage.lr.llm > 0 and full.run.distributed == "fsdp"


def test_overrides_are_typed_and_checked():
    c = _load("tiny_stage2.yaml", "optim.max_steps=7", "stage.lr.lora=1e-3", "data.num_workers=2",
              "run.tensorboard=true", "run.export=merged")
    assert c.optim.max_steps == 7 and c.stage.lr.lora == 1e-3 and c.data.num_workers == 2
    assert c.run.tensorboard is True and c.run.export == ["merged"]
    assert _load("stage2.yaml", "data.template=v1").data.template == "vicuna_v1"  # upstream name
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['max_stpes'\]"):
        _load("tiny_stage2.yaml", "optim.max_stpes=7")
    with pytest.raises(ConfigError, match="optim.max_steps: expected an integer"):
        _load("tiny_stage2.yaml", "optim.max_steps=seven")
    with pytest.raises(ConfigError, match="run.progress_bar: expected true or false"):
        _load("tiny_stage2.yaml", "run.progress_bar=3")
    with pytest.raises(ConfigError, match="expected key=value"):
        _load("tiny_stage2.yaml", "optim.max_steps")


def test_environment_variables_and_defaults():
    c = _load("tiny_stage2.yaml", env={})
    assert c.init == "runs/tiny/model" and c.data.json_path == "runs/tiny/data/train.json"
    assert _load("stage2.yaml", env={"SPATIALGEO_DATA": "/d"}).init == "runs/stage1/export/merged"
    with pytest.raises(ConfigError,
                       match="data.json_path: environment variable SPATIALGEO_DATA is not set"):
        _load("stage2.yaml", env={})
    with pytest.raises(ConfigError, match="SPATIALGEO_INIT is not set"):
        _load("stage1.yaml", env={"SPATIALGEO_DATA": "/d"})


@pytest.mark.parametrize("sets, match", [
    (["stage.lr.llm=1e-5"], "llm .full fine-tune. and lora exclude each other"),
    (["stage.lr.lora=0"], "stage.lora: is given but lr.lora is 0"),
    (["stage.lr.lora=0", "stage.lora=null", "stage.lr.clip_adapter=0", "stage.lr.geo_adapter=0"],
     "every learning rate is 0"),
    (["stage.feature_drop_prob=1.0"], "stage.feature_drop_prob"),
    (["data.template=v2"], "data.template: 'v2' is not one of"),
    (["optim.global_batch_size=7"], "not a multiple of per_device_batch_size"),
    (["run.export=[stage1_adapter]", "stage.lr.geo_adapter=0"], "stage1_adapter needs"),
    (["run.export=[onnx]"], r"unknown format\(s\) \['onnx'\]"),
    (["stage.lr.lora=-1"], "stage.lr.lora: must be >= 0"),
])
def test_validation_names_the_field(sets, match):
    with pytest.raises(ConfigError, match=match):
        _load("tiny_stage2.yaml", *sets)


def test_print_config_through_the_cli(capsys, monkeypatch):
    from spatialgeo_core.cli import main
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    assert main(["train", "--config", str(CONFIGS / "stage2.yaml"), "--set",
                 "optim.max_steps=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 3" in out and "json_path: /data/llava_v1_5_mix665k.json" in out
    assert main(["train", "--config", str(CONFIGS / "stage2.yaml"), "--set", "bogus=1"]) == 2
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
