"""Typed training configuration: YAML files (training/configs/) plus `--set key=value` overrides.

A run is one `TrainConfig`. The stage part says what trains and at which learning rate (0 =
frozen); nothing about trainability is decided anywhere else. Every field is declared here,
validated in `__post_init__` (the error names the field) and saved as `train_config.yaml` next to
the run's checkpoints.

String values may hold `${VAR}` or `${VAR:-default}`; they are expanded from the environment after
the overrides are applied, so no path of one machine has to live in a config file.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spatialgeo_core.config import check_field as _check
from spatialgeo_core.conversation import TEMPLATES
from spatialgeo_core.dtypes import DTYPE_NAMES
from spatialgeo_core.errors import ConfigError

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EXPORT_FORMATS = ("stage1_adapter", "lora", "merged")
TEMPLATE_ALIASES = {"v1": "vicuna_v1"}     # upstream's `--version v1`


@dataclass
class LoraSettings:
    """LoRA on the LLM through peft (reference §4.2: r 128, alpha 256, dropout 0.05, bias none)."""

    r: int = 128
    alpha: float = 256.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_PROJECTIONS))

    def __post_init__(self):
        _check(self.r > 0, "stage.lora.r", f"must be positive, got {self.r}")
        _check(math.isfinite(self.alpha) and self.alpha > 0, "stage.lora.alpha",
               f"must be a finite number > 0, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, "stage.lora.dropout", "must be in [0, 1)")
        _check(len(self.target_modules) > 0, "stage.lora.target_modules", "is empty")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass
class LearningRates:
    """Learning rate of each trainable component; 0 = frozen. The two towers are always frozen."""

    clip_adapter: float = 0.0      # LLaVA's mm_projector
    geo_adapter: float = 0.0       # the hierarchical adapter (moge_mm_projector_list)
    llm: float = 0.0               # every LLM weight: a full fine-tune
    lora: float = 0.0              # the LoRA matrices (needs stage.lora)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            lr = getattr(self, f.name)
            _check(math.isfinite(lr) and lr >= 0, f"stage.lr.{f.name}",
                   f"must be >= 0 and finite, got {lr}")
        _check(not (self.llm > 0 and self.lora > 0), "stage.lr",
               "llm (full fine-tune) and lora exclude each other; set one of them to 0")

    @property
    def any_trainable(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in dataclasses.fields(self))


@dataclass
class StageConfig:
    """What trains (reference §4): stage 1 = geo_adapter only; stage 2 = LoRA + both adapters."""

    name: str = "stage"
    lr: LearningRates = field(default_factory=LearningRates)
    lora: LoraSettings | None = None
    # "checkpoint": as in `init`; "normal": N(0, 0.02) weights and zero biases (upstream stage 1,
    # where the new adapters are missing keys of llava-v1.5-7b); or a path to a stage-1
    # `moge_mm_projector_list.bin` loaded over `init` (upstream --pretrain_moge_mm_mlp_adapter)
    geo_adapter_init: str = "checkpoint"
    feature_drop_prob: float = 0.0     # random feature dropping (reference §3); stage 2: 0.3

    def __post_init__(self):
        _check(bool(self.name), "stage.name", "is empty")
        _check(self.lr.any_trainable, "stage.lr", "every learning rate is 0: nothing would train")
        _check(0.0 <= self.feature_drop_prob < 1.0, "stage.feature_drop_prob", "must be in [0, 1)")
        if self.lr.lora > 0:
            _check(self.lora is not None, "stage.lora", "lr.lora > 0 needs a stage.lora section")
        else:
            _check(self.lora is None, "stage.lora",
                   "is given but lr.lora is 0; set lr.lora or remove the section")
        _check(bool(self.geo_adapter_init), "stage.geo_adapter_init", "is empty")

    @property
    def uses_lora(self) -> bool:
        return self.lr.lora > 0


@dataclass
class DataConfig:
    """LLaVA-format JSON (`id`, `image`, `conversations`) and its image folder, read lazily."""

    json_path: str = ""                # required
    image_folder: str = ""
    template: str = "vicuna_v1"        # upstream `--version v1` is vicuna_v1; stage 1 uses plain
    image_aspect_ratio: str = "pad"    # stage 1 upstream: square (centre crop); stage 2: pad
    max_length: int = 0                # tokens after image expansion; 0 = the model config's
    group_by_modality: bool = False    # image-only / text-only global batches (LLaVA's sampler)
    num_workers: int = 0               # DataLoader worker processes per rank

    def __post_init__(self):
        self.template = TEMPLATE_ALIASES.get(self.template, self.template)
        _check(self.template in TEMPLATES, "data.template",
               f"{self.template!r} is not one of {sorted(TEMPLATES)}")
        _check(self.image_aspect_ratio in ("pad", "square"), "data.image_aspect_ratio",
               f"{self.image_aspect_ratio!r} is not 'pad' or 'square'")
        _check(self.max_length >= 0, "data.max_length", "must be >= 0")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclass
class OptimConfig:
    """AdamW with per-component learning rates, cosine schedule with linear warmup."""

    global_batch_size: int = 128       # samples per optimizer step over all ranks
    per_device_batch_size: int = 16    # gradient accumulation = global / (per_device * ranks)
    epochs: int = 1
    max_steps: int = 0                 # > 0: stop after this many optimizer steps in total
    weight_decay: float = 0.0          # applied to matrices only (not biases / norms)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    schedule: str = "cosine"           # cosine | constant (both after the linear warmup)
    max_grad_norm: float = 1.0         # 0 = no clipping
    # how micro-batch losses combine into the step loss: "micro_batches" = mean of the micro-batch
    # means (HF Trainer as upstream ran it), "tokens" = mean over all supervised tokens of the step
    loss_average: str = "micro_batches"

    def __post_init__(self):
        _check(self.global_batch_size > 0, "optim.global_batch_size", "must be positive")
        _check(self.per_device_batch_size > 0, "optim.per_device_batch_size", "must be positive")
        _check(self.global_batch_size % self.per_device_batch_size == 0,
               "optim.global_batch_size",
               f"{self.global_batch_size} is not a multiple of per_device_batch_size "
               f"{self.per_device_batch_size}")
        _check(self.epochs > 0, "optim.epochs", "must be positive")
        _check(self.max_steps >= 0, "optim.max_steps", "must be >= 0")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
               "optim.weight_decay", "must be a finite number >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
               "needs two values in [0, 1)")
        _check(math.isfinite(self.eps) and self.eps > 0, "optim.eps",
               "must be a finite number > 0")
        _check(0.0 <= self.warmup_ratio < 1.0, "optim.warmup_ratio", "must be in [0, 1)")
        _check(self.schedule in ("cosine", "constant"), "optim.schedule",
               f"{self.schedule!r} is not 'cosine' or 'constant'")
        _check(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0,
               "optim.max_grad_norm", "must be a finite number >= 0 (0: no clipping)")
        _check(self.loss_average in ("micro_batches", "tokens"), "optim.loss_average",
               f"{self.loss_average!r} is not 'micro_batches' or 'tokens'")


@dataclass
class RunConfig:
    """How the run executes: device, precision, parallelism, logging, checkpoints, exports."""

    device: str = "auto"               # auto (cuda:LOCAL_RANK with CUDA, else cpu) | cpu | cuda
    precision: str = "auto"            # auto (bf16 autocast on CUDA and on CPUs with native bf16,
    #                                    else fp32: training/precision.py) | bf16 | fp32
    gradient_checkpointing: bool = True
    distributed: str = "auto"          # auto (DDP when >1 process) | ddp | fsdp (FSDP2 sharding)
    log_every: int = 1                 # steps between metric lines
    save_every: int = 500              # steps between training checkpoints (0: only at the end)
    keep_checkpoints: int = 1          # newest training checkpoints kept
    max_steps_this_run: int = 0        # > 0: checkpoint and stop after this many steps (resumable)
    resume: str = "auto"               # auto (newest checkpoint in output_dir) | never | a path
    progress_bar: bool = True
    tensorboard: bool | None = None    # true | false | null (= when installed)
    export: list[str] = field(default_factory=lambda: ["merged"])
    export_dtype: str = "float16"

    def __post_init__(self):
        _check(self.device in ("auto", "cpu", "cuda"), "run.device",
               f"{self.device!r} is not auto, cpu or cuda")
        _check(self.precision in ("auto", "bf16", "fp32"), "run.precision",
               f"{self.precision!r} is not auto, bf16 or fp32")
        _check(self.distributed in ("auto", "ddp", "fsdp"), "run.distributed",
               f"{self.distributed!r} is not auto, ddp or fsdp")
        _check(self.log_every > 0, "run.log_every", "must be positive")
        _check(self.save_every >= 0, "run.save_every", "must be >= 0")
        _check(self.keep_checkpoints > 0, "run.keep_checkpoints", "must be positive")
        _check(self.max_steps_this_run >= 0, "run.max_steps_this_run", "must be >= 0")
        _check(bool(self.resume), "run.resume", "is empty (auto, never or a path)")
        bad = [f for f in self.export if f not in EXPORT_FORMATS]
        _check(not bad, "run.export", f"unknown format(s) {bad}; known: {list(EXPORT_FORMATS)}")
        _check(self.export_dtype in DTYPE_NAMES, "run.export_dtype",
               f"{self.export_dtype!r} is not one of {list(DTYPE_NAMES)}")


@dataclass
class TrainConfig:
    init: str = ""                     # model to start from: a checkpoint directory in our format
    output_dir: str = ""               # checkpoints, metrics, exports
    seed: int = 42
    stage: StageConfig = field(default_factory=StageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        _check(bool(self.init), "init", "is empty: give a checkpoint directory in our format")
        _check(bool(self.output_dir), "output_dir", "is empty")
        _check(bool(self.data.json_path), "data.json_path", "is empty: give the LLaVA-format JSON")
        if "stage1_adapter" in self.run.export:
            _check(self.stage.lr.geo_adapter > 0, "run.export",
                   "stage1_adapter needs a trained geo_adapter (stage.lr.geo_adapter > 0)")
        if "lora" in self.run.export:
            _check(self.stage.uses_lora, "run.export", "lora needs stage.lr.lora > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---- building from plain data -----------------------------------------------------------------
def from_dict(d: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from nested plain data (YAML); unknown keys and bad types name their path."""
    return _build(TrainConfig, d, "")


def _build(cls: type, d: Any, path: str) -> Any:
    where = path or "the config"
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {names}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k) for k, v in d.items()}
    return cls(**kwargs)


def _coerce(tp: Any, v: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if v is None:
            return None
        return _coerce(args[0], v, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if v is None else v, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(v, str | int | float):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {v!r}")
        return [_coerce(item, x, f"{path}[{i}]") for i, x in enumerate(v)]
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{path}: expected true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not (isinstance(v, int)
                                       or (isinstance(v, float) and v.is_integer())):
            raise ConfigError(f"{path}: expected an integer, got {v!r}")
        return int(v)
    if tp is float:
        if isinstance(v, str):              # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(v)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{path}: expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ConfigError(f"{path}: expected a string, got {v!r}")
        return str(v)
    raise ConfigError(f"{path}: unsupported field type {tp}")


# ---- overrides and environment ----------------------------------------------------------------
def apply_override(d: dict[str, Any], assignment: str) -> None:
    """`a.b.c=value` (value parsed as YAML) set in the nested dict `d`, in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. optim.max_steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML: {e}") from e
    parts = key.split(".")
    node = d
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(v: Any, path: str = "", env: dict[str, str] | None = None) -> Any:
    """Expand `${VAR}` / `${VAR:-default}` in every string of nested data."""
    env = os.environ if env is None else env
    if isinstance(v, dict):
        return {k: expand_env(x, f"{path}.{k}" if path else str(k), env) for k, x in v.items()}
    if isinstance(v, list):
        return [expand_env(x, f"{path}[{i}]", env) for i, x in enumerate(v)]
    if not isinstance(v, str):
        return v

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set (used in {v!r})")

    return _VAR.sub(sub, v)


def load_config(path: str | Path | None, overrides: list[str] = (),
                env: dict[str, str] | None = None) -> TrainConfig:
    """Read a YAML file (or start empty), apply `key=value` overrides, expand ${VAR}, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    for a in overrides:
        apply_override(raw, a)
    return from_dict(expand_env(raw, env=env))
