"""Training checkpoints: atomic directories that make a resumed run continue exactly.

    <output_dir>/checkpoints/step-00000120/
        trainable.safetensors   the trainable parameters (full tensors, names as in the model)
        optimizer.pt            AdamW state keyed by parameter name (torch.distributed.checkpoint's
                                full optimizer state dict: DDP, FSDP2, one process read it alike)
        rng.pt                  per rank: torch CPU / CUDA generators, the feature-dropping one,
                                python `random` and numpy states
        trainer_state.json      step, scheduler state, skipped records, batch geometry
        train_config.yaml       the resolved config that wrote it

Frozen weights are not saved: they are those of `init`. Every file is written into a hidden
temporary directory beside the target, flushed, and the directory is renamed into place, so a
killed write never leaves a `step-*` directory behind and never replaces a good one; resume only
looks at `step-*`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from spatialgeo_core.checkpoint.io import read_file
from spatialgeo_core.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
RNG = "rng.pt"
STATE = "trainer_state.json"
CONFIG = "train_config.yaml"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (temporary directories start with '.': never listed)."""
    d = Path(output_dir) / CHECKPOINTS
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """run.resume: "auto" (newest in output_dir or None), "never", a checkpoint or a run dir."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    p = Path(resume)
    if (p / STATE).is_file():
        return p
    found = latest_checkpoint(p)
    if found is None:
        raise CheckpointError(f"run.resume: {p} is neither a training checkpoint nor a run "
                              "directory holding one")
    return found


# ---- atomic writes ----------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yields a temporary directory beside `target`; on success it replaces `target` (the old one
    is removed only after the new one is in place); on any error the temporary one is removed."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~umask)       # some writers create private files
                _fsync(f)
        os.chmod(tmp, 0o777 & ~umask)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `target`, renamed onto it on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- RNG states -------------------------------------------------------------------------------
def capture_rng(drop_generator: torch.Generator, device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "drop": drop_generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def restore_rng(state: dict, drop_generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    drop_generator.set_state(state["drop"])
    random.setstate(_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


# ---- write / read -----------------------------------------------------------------------------
def write_checkpoint(target: Path, trainable: dict[str, torch.Tensor], optimizer: dict,
                     rng: list[dict], state: dict, config_yaml: str) -> Path:
    """Write one training checkpoint atomically (rank 0 only; the states are already gathered)."""
    with atomic_dir(target) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in trainable.items()},
                  str(tmp / TRAINABLE), metadata={"format": "pt"})
        torch.save(optimizer, tmp / OPTIMIZER)
        torch.save({"ranks": rng}, tmp / RNG)
        (tmp / STATE).write_text(json.dumps(state, indent=1) + "\n")
        (tmp / CONFIG).write_text(config_yaml)
    log.info("checkpoint %s", target)
    return target


def read_trainable(path: Path) -> dict[str, torch.Tensor]:
    f = Path(path) / TRAINABLE
    if not f.is_file():
        raise CheckpointError(f"{path} has no {TRAINABLE}")
    try:
        return load_file(str(f), device="cpu")
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {f}: {e}") from e


def read_state(path: Path) -> dict:
    f = Path(path) / STATE
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a training checkpoint (no {STATE})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON: {e}") from e


def read_optimizer(path: Path) -> dict:
    return read_file(Path(path) / OPTIMIZER)


def read_rng(path: Path) -> list[dict]:
    return read_file(Path(path) / RNG)["ranks"]


def clean_stale(output_dir: str | Path) -> None:
    """Remove temporary directories that a killed checkpoint write left behind."""
    d = Path(output_dir) / CHECKPOINTS
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.name.startswith(".step-") and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed the unfinished checkpoint write %s", p)


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    for _, p in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed old checkpoint %s", p)
