"""Our own format: `config.json` (SpatialGeoConfig) + `model.safetensors` + the tokenizer files.

Loadable from its directory alone. Written atomically: a new directory is filled beside the target
and renamed into place, so a half-written checkpoint never replaces a good one.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from spatialgeo_core.checkpoint.io import read_directory
from spatialgeo_core.config import FORMAT_NAME, SpatialGeoConfig
from spatialgeo_core.errors import CheckpointError, KeyMismatchError
from spatialgeo_core.model import SpatialGeoForCausalLM, build_empty

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def is_ours(directory: str | Path) -> bool:
    f = Path(directory) / "config.json"
    if not f.is_file():
        return False
    try:
        raw = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT_NAME


def check_keys(model: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Strict: every model key present with its shape, no extra key. Raises KeyMismatchError."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = set(expected) - set(tensors)
    unexpected = set(tensors) - set(expected)
    mismatched = [f"{k}: {tuple(tensors[k].shape)} vs {expected[k]}"
                  for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise KeyMismatchError(what, missing, unexpected, mismatched)


def load_weights(model: SpatialGeoForCausalLM, tensors: dict[str, torch.Tensor],
                 what: str) -> None:
    check_keys(model, tensors, what)
    model.load_state_dict(tensors, strict=True)


def build_model(cfg: SpatialGeoConfig, tensors: dict[str, torch.Tensor], what: str,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                attn_implementation: str = "sdpa") -> SpatialGeoForCausalLM:
    """Allocate a model for `cfg` without random init and load `tensors` strictly."""
    model = build_empty(cfg, dtype, device, attn_implementation)
    load_weights(model, tensors, what)
    return model.eval()


def read_ours(directory: str | Path) -> tuple[SpatialGeoConfig, dict[str, torch.Tensor]]:
    d = Path(directory)
    if not is_ours(d):
        raise CheckpointError(f"{d} is not a SpatialGeo checkpoint in our format "
                              f"(config.json with \"format\": \"{FORMAT_NAME}\"); "
                              "convert it with `spatialgeo convert`")
    return SpatialGeoConfig.load(d), read_directory(d)


def save_ours(directory: str | Path, cfg: SpatialGeoConfig, tensors: dict[str, torch.Tensor],
              tokenizer_dir: str | Path | None = None, extra_files: Iterable[Path] = ()) -> Path:
    """Write config + weights (+ tokenizer files) atomically into `directory`."""
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)                 # mkdtemp makes it private; use the usual mode
    try:
        cfg.save(tmp)
        flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        try:
            save_file(flat, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"cannot write weights to {target}: {e}") from e
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
            if not (tmp / "tokenizer.model").is_file():
                raise CheckpointError(f"no tokenizer.model in {tokenizer_dir}")
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s (%d tensors)", target, len(tensors))
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Put `new` at `target`; an existing target is kept until the new one is in place."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)

