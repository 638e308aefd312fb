"""Which training precision a device runs fast: bf16 autocast only where the hardware has it.

On CUDA, bf16 autocast is the norm (Ampere and newer). On a CPU it pays only with native bf16
instructions (x86 AVX512-BF16 or AMX, Arm's BF16 extension): there one demo step is ~1.5x faster
than fp32, while on an AVX2-only CPU the same autocast is emulated and ~8x *slower* (measured on
an AMD EPYC with AVX2 only: 4 demo steps 38 s in bf16 against 5 s in fp32). So `run.precision:
auto` asks this module instead of assuming.
"""
from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_X86_FLAGS = ("avx512_bf16", "amx_bf16")
_ARM_FLAGS = ("bf16",)


def _cpuinfo_value(keys: tuple[str, ...], path: Path = Path("/proc/cpuinfo")) -> str | None:
    """The value of the first line of /proc/cpuinfo whose key is one of `keys` (None where there
    is none or no file)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in keys:
            return value.strip()
    return None


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    return set((_cpuinfo_value(("flags", "features"), path) or "").split())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16, AMX-BF16 or Arm BF16)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)   # private, so feature-tested
    if probe is not None and probe():
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is not None and amx():
        return True
    flags = _cpuinfo_flags()
    wanted = _ARM_FLAGS if platform.machine().lower() in ("aarch64", "arm64") else _X86_FLAGS
    return any(f in flags for f in wanted)


def describe_cpu(path: Path = Path("/proc/cpuinfo")) -> str:
    """This machine's CPU in one line, for timings: model name, cores, native bf16 or not."""
    name = _cpuinfo_value(("model name",), path) or platform.processor() or platform.machine()
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{name}, {os.cpu_count()} cores, {bf16}, {torch.get_num_threads()} torch threads"


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run with `run.precision` = precision ("auto" | "bf16" | "fp32") autocasts to bf16
    on `device`: "auto" is bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()
