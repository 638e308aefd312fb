"""Test helpers: run `spatialgeo train` in-process or under torchrun, read what it wrote."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "training" / "configs"


def overrides(init: Path, data: Path, out: Path, json_name: str = "train.json",
              *extra: str) -> list[str]:
    """The test run's paths, in fp32 on every machine (run.precision "auto" would pick bf16 on a
    CPU with native bf16: the exact comparisons of these tests are written for fp32)."""
    return [f"init={init}", f"output_dir={out}", f"data.json_path={data / json_name}",
            f"data.image_folder={data}", "run.progress_bar=false", "run.precision=fp32", *extra]


def cli_train(config: str, sets: list[str]) -> int:
    """`spatialgeo train --config training/configs/<config> --set ...` in this process."""
    from spatialgeo_core.cli import main
    return main(["train", "--config", str(CONFIGS / config), "--set", *sets])


def losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def last_trainable(out: Path) -> dict:
    status = json.loads((out / "status.json").read_text())
    return load_file(str(Path(status["checkpoint"]) / "trainable.safetensors"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, config: str, sets: list[str], timeout: float = 150) -> None:
    """`python -m torch.distributed.run --nproc_per_node=N -m spatialgeo_core.cli train ...`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "spatialgeo_core.cli", "train", "--config", str(CONFIGS / config), "--set", *sets]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
