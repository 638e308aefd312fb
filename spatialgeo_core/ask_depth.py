"""`spatialgeo ask --depth FILE --intrinsics fx,fy,cx,cy`: the regions' 3D positions beside the
answer, and `--annotate FILE`: the image the model saw, annotated.

Kept out of cli.py so that the command's depth options are one block there. Building the parser
imports nothing heavy; numpy and PIL are imported when a command runs.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DepthInput:
    depth: Any                  # float32 [H, W] metres, NaN where invalid
    intrinsics: Any             # spatialgeo_core.intrinsics.CameraIntrinsics


def add_depth_args(p: argparse.ArgumentParser) -> None:
    """--depth, --depth-scale, --intrinsics and --annotate of `spatialgeo ask`."""
    p.add_argument("--depth", default=None, metavar="FILE",
                   help="depth image registered to --image (same size): 16-bit PNG/TIFF, float "
                        "TIFF or .npy; prints each region's 3D position (needs --intrinsics)")
    p.add_argument("--depth-scale", type=float, default=None, metavar="S",
                   help="metres per unit of --depth (default: 0.001 for integer data, i.e. "
                        "millimetres; 1 for float data)")
    p.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY",
                   help="pinhole intrinsics of --image in pixels (undistorted image)")
    p.add_argument("--annotate", default=None, metavar="FILE",
                   help="write the set-of-marks image the model saw, with the question, the "
                        "answer and the region positions under it (PNG)")


def read_depth_args(args, size: tuple[int, int]) -> DepthInput | None:
    """The --depth and --intrinsics of a `spatialgeo ask`, checked against the image's (W, H)
    size; None without --depth. Raises a SpatialGeoError (exit code 2) for a bad input."""
    from spatialgeo_core.depth import InvalidDepthError, check_depth, load_depth_file
    from spatialgeo_core.intrinsics import parse_intrinsics

    if args.depth is None:
        if args.intrinsics is not None or args.depth_scale is not None:
            raise InvalidDepthError("--intrinsics and --depth-scale go with --depth")
        return None
    if args.intrinsics is None:
        raise InvalidDepthError("--depth needs --intrinsics fx,fy,cx,cy (pixels)")
    width, height = size
    intrinsics = parse_intrinsics(args.intrinsics, width, height)
    depth = load_depth_file(args.depth, args.depth_scale)
    check_depth(depth, width, height)
    return DepthInput(depth, intrinsics)


def positions_json(positions) -> list[dict]:
    """`regions_3d` of `ask --json`: one entry per region, in order."""
    return [{"region": i, **p.to_dict()} for i, p in enumerate(positions)]


def compute_positions(depth_input: DepthInput | None, regions) -> list | None:
    """The regions' positions, or None without --depth."""
    if depth_input is None:
        return None
    from spatialgeo_core.region_positions import region_positions

    return region_positions(depth_input.depth, regions, depth_input.intrinsics)


def save_annotated(path: str, image, regions, question: str, answer: str, positions) -> None:
    from spatialgeo_core.annotate import annotated_image

    annotated_image(image, regions, question, answer, positions).save(path, format="PNG")
