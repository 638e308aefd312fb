"""The one place that knows which optional dependencies are installed.

Each flag is found by trying the import once; `require(name)` raises a MissingDependencyError that
names the pip extra when a feature is asked for but its package is absent.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from spatialgeo_core.errors import MissingDependencyError

# import name -> (pip extra, what it is for)
_EXTRAS = {
    "bitsandbytes": ("quant", "4-bit / 8-bit loading"),
    "flash_attn": ("flash", "flash-attention-2"),
    "peft": ("train", "LoRA training"),
    "rosbags": ("eval", "reading ROS 2 bags without ROS"),
    "rosbags.image": ("eval", "converting bag images without ROS"),
    "matplotlib": ("eval", "evaluation plots"),
    "pycocotools": ("eval", "COCO RLE region masks"),
    "torch.utils.tensorboard": ("train", "TensorBoard logging"),
    "cv2": ("eval", "decoding CompressedImage where cv_bridge is not installed"),
}


def available(name: str) -> bool:
    """True when `name` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):      # a missing parent package raises instead
        return False


def require(name: str) -> ModuleType:
    """Import `name`, or raise MissingDependencyError with the install hint."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        extra, purpose = _EXTRAS.get(name, (None, name))
        hint = f'pip install "spatialgeo[{extra}]"' if extra else f"pip install {name}"
        raise MissingDependencyError(
            f"{purpose} needs {name!r}, which is not installed: {hint}") from e
