"""The node's parameters: declared once, as plain data, and turned into a frozen dataclass.

`PARAMS` is the declaration table (name, default, description, range or choices). The node
declares each entry with a ParameterDescriptor built from it (node.py), reads the values back on
configure and calls `params_from_values`, which validates them and raises ValueError naming the
parameter. The model.* parameters become the core's LoadOptions (spatialgeo_core.load_options),
the one value the CLI builds from its options too. The default YAML
(launch/spatialgeo_params.yaml) holds the same names under `/**: ros__parameters:`; a test keeps
the two in step. No rclpy here.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spatialgeo_core.dtypes import DTYPE_NAMES
from spatialgeo_core.load_options import (
    ATTENTION_CHOICES,
    DEVICE_RE,
    QUANTIZATIONS,
    LoadOptions,
)

ParamValue = bool | int | float | str | tuple[str, ...]


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. The type is the default's type (a tuple of str = string array)."""

    name: str
    default: ParamValue
    description: str
    min: float | None = None          # numbers: inclusive range
    max: float | None = None
    choices: tuple[str, ...] = ()     # strings: allowed values (empty = any, checked elsewhere)

    @property
    def kind(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        if isinstance(self.default, str):
            return "str"
        return "str_array"

    def constraints_text(self) -> str:
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{self.min} <= value <= {self.max}"
        return ""


CAMERA_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

PARAMS: tuple[ParamSpec, ...] = (
    # model: read on configure; change them, then cleanup + configure to reload
    ParamSpec("model.path", "",
              "Local directory of the SpatialGeo checkpoint; empty = the embedded default model."),
    ParamSpec("model.device", "auto",
              "Torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N."),
    ParamSpec("model.quantization", "none",
              "Quantise the language model's linear layers: 4bit (NF4) or 8bit (LLM.int8; both "
              "need bitsandbytes); the towers and adapters stay in model.dtype.",
              choices=QUANTIZATIONS),
    ParamSpec("model.attn_implementation", "sdpa", "Attention kernel of the language model.",
              choices=ATTENTION_CHOICES),
    ParamSpec("model.dtype", "auto", "Weights dtype; auto = the pipeline's choice for the device.",
              choices=("auto", *DTYPE_NAMES)),
    ParamSpec("model.max_cached_frames", 2,
              "Frames whose features (visual tokens and image-prefix KV cache) are kept for "
              "further questions, across all cameras, least recently used dropped first (about "
              "0.6 GB each for a 7B model in fp16).", min=1, max=100),
    # cameras
    ParamSpec("cameras.names", ("camera",),
              "Camera names. With one camera its topics are `image` and `camera_info`; with "
              "several, `<name>/image` and `<name>/camera_info`. Requests name one (empty = the "
              "first)."),
    ParamSpec("cameras.transport", "raw",
              "raw: the image topics carry sensor_msgs/Image; compressed: "
              "sensor_msgs/CompressedImage (remap `image` to e.g. /camera/image_raw/compressed).",
              choices=("raw", "compressed")),
    ParamSpec("cameras.qos", "sensor_data",
              "QoS of the camera subscriptions: sensor_data (best effort, depth 5) or reliable "
              "(depth 10).", choices=("sensor_data", "reliable")),
    ParamSpec("cameras.buffer_size", 30, "Frames kept per camera for stamp lookup.",
              min=1, max=1000),
    ParamSpec("cameras.depth", False,
              "Subscribe to each camera's depth image registered to its colour image (`depth`, "
              "or `<name>/depth` with several cameras; sensor_msgs/Image 16UC1 in millimetres or "
              "32FC1 in metres) and give every region of a request its 3D position, with the "
              "camera's latest CameraInfo. A camera whose depth never arrives still answers."),
    ParamSpec("cameras.rectified", False,
              "The image and depth topics are rectified (image_rect): intrinsics from "
              "CameraInfo's P, lens distortion ignored, as depth_image_proc does. false: raw "
              "images, intrinsics from K, pixels undistorted with D."),
    # frame selection
    ParamSpec("frames.stamp_tolerance", 0.05,
              "Largest |frame stamp - requested stamp| in seconds accepted for a non-zero stamp.",
              min=0.0, max=10.0),
    ParamSpec("frames.max_age", 1.0,
              "Largest age in seconds of the latest frame for a request with stamp zero; 0 = any.",
              min=0.0, max=86400.0),
    ParamSpec("frames.depth_tolerance", 0.02,
              "Largest |depth stamp - colour frame stamp| in seconds for a depth image to be "
              "the one of a colour frame.", min=0.0, max=1.0),
    # queries
    ParamSpec("query.max_pending", 4,
              "Requests admitted at once (running + waiting); more are answered BUSY.",
              min=1, max=64),
    ParamSpec("query.request_queue_depth", 256,
              "History depth of the request queues of spatial_query and of the action's goal, "
              "cancel and result services: requests that arrive together wait there until the "
              "executor takes them (a full queue drops requests unanswered). At least "
              "query.max_pending; read at start.", min=1, max=10000),
    ParamSpec("query.timeout", 30.0,
              "Default seconds within which a request ends (for request limits.timeout_s 0).",
              min=0.1, max=3600.0),
    ParamSpec("query.max_timeout", 120.0,
              "Largest timeout in seconds a request may ask for.", min=0.1, max=3600.0),
    ParamSpec("query.max_question_chars", 2000, "Longest question accepted, in characters.",
              min=1, max=100000),
    ParamSpec("query.max_regions", 16, "Most regions one request may give.", min=0, max=256),
    ParamSpec("query.max_new_tokens", 128,
              "Default answer length in tokens (request limits.max_new_tokens = 0).",
              min=1, max=8192),
    ParamSpec("query.max_new_tokens_limit", 512,
              "Largest limits.max_new_tokens a request may ask for.", min=1, max=8192),
    # outputs
    ParamSpec("output.publish_answers", True,
              "Publish every finished request on the `answers` topic."),
    ParamSpec("output.publish_annotated", True,
              "Publish the set-of-marks image of every answered request, with its question, "
              "answer and region positions written under it, on `annotated_image`."),
    ParamSpec("output.publish_markers", True,
              "Publish a visualization_msgs/MarkerArray on `markers` for every answered request: "
              "a box per region at its 3D position, labelled with its index, and the answer."),
    ParamSpec("output.diagnostics_period", 1.0,
              "Seconds between diagnostic_msgs statuses on /diagnostics.", min=0.1, max=60.0),
)
PARAM_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMS)


def defaults() -> dict[str, ParamValue]:
    return {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class CameraParams:
    names: tuple[str, ...]
    transport: str            # raw | compressed
    qos: str                  # sensor_data | reliable
    buffer_size: int
    depth: bool               # a registered depth topic per camera
    rectified: bool           # intrinsics from P (rectified images) instead of K and D

    def __post_init__(self):
        if not self.names:
            raise ValueError("cameras.names must name at least one camera")
        for name in self.names:
            if not CAMERA_NAME_RE.match(name):
                raise ValueError(
                    f"cameras.names: {name!r} is not a valid name "
                    "(letters, digits and _, starting with a letter)")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"cameras.names has duplicates: {list(self.names)}")


@dataclass(frozen=True)
class FrameParams:
    stamp_tolerance: float    # s
    max_age: float            # s, 0 = any age
    depth_tolerance: float    # s, |depth stamp - colour stamp|


@dataclass(frozen=True)
class QueryParams:
    max_pending: int
    request_queue_depth: int  # DDS history of the request queues; read at start
    timeout: float            # s
    max_timeout: float        # s
    max_question_chars: int
    max_regions: int
    max_new_tokens: int
    max_new_tokens_limit: int

    def __post_init__(self):
        if self.request_queue_depth < self.max_pending:
            raise ValueError(
                f"query.request_queue_depth ({self.request_queue_depth}) must be at least "
                f"query.max_pending ({self.max_pending})")
        if self.timeout > self.max_timeout:
            raise ValueError(
                f"query.timeout ({self.timeout}) must not exceed query.max_timeout "
                f"({self.max_timeout})")
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"query.max_new_tokens ({self.max_new_tokens}) must not exceed "
                f"query.max_new_tokens_limit ({self.max_new_tokens_limit})")


@dataclass(frozen=True)
class OutputParams:
    publish_answers: bool
    diagnostics_period: float   # s
    publish_annotated: bool
    publish_markers: bool


@dataclass(frozen=True)
class NodeParams:
    model: LoadOptions        # path None = the embedded default model (model.path "")
    cameras: CameraParams
    frames: FrameParams
    query: QueryParams
    output: OutputParams


def _check(spec: ParamSpec, value: Any) -> ParamValue:
    """Type and range check of one value; returns it normalised (int for float params, tuple)."""
    kind = spec.kind
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise ValueError(f"parameter {spec.name} must be of type {kind}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"parameter {spec.name} must be {spec.constraints_text()}, got {value!r}")
    if spec.min is not None and value < spec.min:
        raise ValueError(f"parameter {spec.name} must be >= {spec.min}, got {value!r}")
    if spec.max is not None and value > spec.max:
        raise ValueError(f"parameter {spec.name} must be <= {spec.max}, got {value!r}")
    return value


def params_from_values(values: Mapping[str, Any]) -> NodeParams:
    """Declared-parameter values (missing ones take their default) -> NodeParams.

    Raises ValueError naming the parameter for an unknown name, a wrong type or a value out of
    range.
    """
    unknown = sorted(set(values) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    v = {p.name: _check(p, values.get(p.name, p.default)) for p in PARAMS}
    return NodeParams(
        model=_load_options(v),
        cameras=CameraParams(
            names=v["cameras.names"], transport=v["cameras.transport"], qos=v["cameras.qos"],
            buffer_size=v["cameras.buffer_size"], depth=v["cameras.depth"],
            rectified=v["cameras.rectified"]),
        frames=FrameParams(
            stamp_tolerance=v["frames.stamp_tolerance"], max_age=v["frames.max_age"],
            depth_tolerance=v["frames.depth_tolerance"]),
        query=QueryParams(
            max_pending=v["query.max_pending"],
            request_queue_depth=v["query.request_queue_depth"], timeout=v["query.timeout"],
            max_timeout=v["query.max_timeout"], max_question_chars=v["query.max_question_chars"],
            max_regions=v["query.max_regions"], max_new_tokens=v["query.max_new_tokens"],
            max_new_tokens_limit=v["query.max_new_tokens_limit"]),
        output=OutputParams(
            publish_answers=v["output.publish_answers"],
            diagnostics_period=v["output.diagnostics_period"],
            publish_annotated=v["output.publish_annotated"],
            publish_markers=v["output.publish_markers"]),
    )


def _load_options(v: Mapping[str, Any]) -> LoadOptions:
    """The model.* values as LoadOptions (its ValueError names the parameter)."""
    if not DEVICE_RE.match(v["model.device"]):
        raise ValueError(
            f"model.device must be auto, cpu, cuda or cuda:N, got {v['model.device']!r}")
    try:
        return LoadOptions(
            path=v["model.path"] or None, device=v["model.device"],
            dtype=None if v["model.dtype"] == "auto" else v["model.dtype"],
            quantization=v["model.quantization"],
            attn_implementation=v["model.attn_implementation"],
            max_cached_frames=v["model.max_cached_frames"])
    except ValueError as exc:          # LoadOptions names its field: the parameter is model.<it>
        raise ValueError(f"model.{exc}") from None


def flatten_yaml_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'path': ''}} -> {'model.path': ''} (how ROS 2 reads nested YAML parameters)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_yaml_params(value, name + "."))
        else:
            out[name] = value
    return out


def camera_topics(names: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """camera name -> (image topic, camera_info topic), relative names for remapping in launch."""
    if len(names) == 1:
        return {names[0]: ("image", "camera_info")}
    return {n: (f"{n}/image", f"{n}/camera_info") for n in names}


def depth_topics(names: tuple[str, ...]) -> dict[str, str]:
    """camera name -> its registered depth topic (cameras.depth), beside camera_topics'."""
    if len(names) == 1:
        return {names[0]: "depth"}
    return {n: f"{n}/depth" for n in names}


def parse_bool_arg(name: str, text: str) -> bool:
    """A launch argument's 'true'/'false' (any case) -> bool; ValueError naming the argument."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {text!r}")


def launch_overrides(model_path: str, load_4bit: str, device: str) -> dict[str, ParamValue]:
    """Parameter overrides from bringup.launch.py's arguments; an empty argument keeps
    params_file's value (so `ros2 launch spatialgeo_ros bringup.launch.py` alone uses the YAML
    as it is)."""
    out: dict[str, ParamValue] = {}
    if model_path.strip():
        out["model.path"] = model_path.strip()
    if load_4bit.strip():
        out["model.quantization"] = "4bit" if parse_bool_arg("load_4bit", load_4bit) else "none"
    if device.strip():
        if not DEVICE_RE.match(device.strip()):
            raise ValueError(
                f"launch argument device must be auto, cpu, cuda or cuda:N, got {device!r}")
        out["model.device"] = device.strip()
    return out
