"""Drop the native libraries a wheel holds for other accelerator versions, so it travels.

    python -m bench.slim_wheel .whl/bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl \
        --keep cuda130

bitsandbytes' wheel (43 MB) holds one native library per CUDA, ROCm and XPU version
(`libbitsandbytes_cuda118.so` ... `libbitsandbytes_xpu2026.so`), and it loads the one matching
torch's CUDA version. The lent GPUs run torch 2.11+cu130, so `--keep cuda130` leaves that library,
the CPU one and everything else (about 4 MB in all), and the wheel fits beside the working tree
under the device tool's 64 MiB limit. The wheel is rewritten in place (or to --out), its RECORD
without the dropped files.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

# a native library built for one accelerator version: lib<name>_cuda130.so, _rocm64, _xpu2025
VERSIONED_LIB = re.compile(r"^lib\w+?_((?:cuda|rocm|xpu)\d+)\.so$")


def slim(wheel: Path, keep: set[str], out: Path | None = None) -> list[str]:
    """Rewrite `wheel` without the versioned native libraries not in `keep`; returns the dropped
    names."""
    out = out or wheel
    with zipfile.ZipFile(wheel) as src:
        infos = src.infolist()
        dropped = [i.filename for i in infos
                   if (m := VERSIONED_LIB.match(Path(i.filename).name)) and m.group(1) not in keep]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in infos:
                if info.filename in dropped:
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(ln for ln in lines
                                   if ln.split(",", 1)[0] not in dropped).encode()
                dst.writestr(info, data)
    tmp.replace(out)
    return dropped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("--keep", nargs="+", required=True,
                   help="accelerator versions to keep, e.g. cuda130 (the CPU one always stays)")
    p.add_argument("--out", type=Path, default=None, help="default: rewrite the wheel in place")
    args = p.parse_args(argv)
    before = args.wheel.stat().st_size
    dropped = slim(args.wheel, set(args.keep), args.out)
    after = (args.out or args.wheel).stat().st_size
    print(f"dropped {len(dropped)} libraries; {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
