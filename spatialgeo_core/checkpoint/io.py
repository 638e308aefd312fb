"""Reading tensors from files without ever unpickling code.

safetensors are preferred; `.bin`/`.pt` pickles are read with `torch.load(weights_only=True)`.
A sharded directory is read through its `*.index.json`. Every failure becomes a CheckpointError
naming the file.
"""
from __future__ import annotations

import json
import logging
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from spatialgeo_core.errors import CheckpointError

log = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_file(path: str | Path) -> dict:
    """Load one .safetensors or pickle file (weights only) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError,
            OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a file whose content is a state dict."""
    sd = read_file(path)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a flat {{name: tensor}} state dict")
    return sd


def find_weights(directory: str | Path) -> list[Path]:
    """The weight files of a HF-style directory: one file, or the shards listed by an index."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"not a directory: {d}")
    for name in _INDEX_FILES:
        index = d / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index} is not a valid shard index: {e}") from e
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (d / s).is_file()]
            if missing:
                raise CheckpointError(f"{index} lists shard(s) that are absent: {missing}")
            return [d / s for s in shards]
    for name in _WEIGHT_FILES:
        if (d / name).is_file():
            return [d / name]
    raise CheckpointError(
        f"no weights in {d}: expected one of {_WEIGHT_FILES + _INDEX_FILES}")


def read_directory(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) HF-style directory."""
    out: dict[str, torch.Tensor] = {}
    for f in find_weights(directory):
        part = read_state_dict(f)
        dup = set(part) & set(out)
        if dup:
            raise CheckpointError(f"{f} repeats tensors of another shard: {sorted(dup)[:5]}")
        out.update(part)
    return out


def read_json(path: str | Path) -> dict:
    """A JSON file that holds one object; CheckpointError naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"missing {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data
