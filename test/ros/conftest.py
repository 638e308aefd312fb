"""Fixtures of the ROS-layer tests: a test double of the core pipeline, message helpers, paths.

FakePipeline stands in for spatialgeo_core.pipeline.SpatialGeoPipeline (the methods that
spatialgeo_core.serving.answer_frame and the node use: frame, answer, cached_frames, release,
memory_stats) so that the queue, timeouts and statuses are tested in milliseconds and
deterministically; the real model is exercised by test/core, test_ros_real_pipeline.py and the
real-ROS tests.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spatialgeo_core.types import Answer, check_regions

REPO = Path(__file__).resolve().parents[2]


class FakeFeatures:
    def __init__(self, image: np.ndarray):
        self.image = image

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


class FakePipeline:
    """Test double of SpatialGeoPipeline. Answers `text` word by word (one word = one token),
    sleeping `token_delay` s per word, calling on_text with the text so far and polling
    should_stop like the real decoding loop (unless `ignore_stop`). `fail` is raised by answer.
    Frames are kept by key, as the real feature cache keeps them (`encode_calls` counts the frames
    made); regions are checked against the image as the real pipeline draws them, before anything
    runs. Records calls, and the largest number of answers that ran at once."""

    def __init__(self, text: str = "Region [0] is 2.5 meters from Region [1].",
                 token_delay: float = 0.0, fail: BaseException | None = None,
                 ignore_stop: bool = False, encode_delay: float = 0.0):
        self.text = text
        self.token_delay = token_delay
        self.fail = fail
        self.ignore_stop = ignore_stop
        self.encode_delay = encode_delay
        self.encode_calls = 0
        self.answer_calls = 0
        self.questions: list[str] = []
        self.regions_seen: list = []
        self.options_seen: list = []
        self.released = False
        self._lock = threading.Lock()
        self._running = 0
        self.max_running = 0
        self.frames: dict = {}

    def frame(self, key, load):
        if key in self.frames:
            return self.frames[key]
        image = load()
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
        assert image.shape[2] == 3
        if self.encode_delay:
            time.sleep(self.encode_delay)
        with self._lock:
            self.encode_calls += 1
        self.frames[key] = FakeFeatures(image)
        return self.frames[key]

    def cached_frames(self) -> int:
        return len(self.frames)

    def answer(self, features, question, regions=None, options=None, on_text=None,
               should_stop=None):
        assert isinstance(features, FakeFeatures)
        check_regions(list(regions or ()), *features.size)
        with self._lock:
            self.answer_calls += 1
            self._running += 1
            self.max_running = max(self.max_running, self._running)
            self.questions.append(question)
            self.regions_seen.append(regions)
            self.options_seen.append(options)
        try:
            if self.fail is not None:
                raise self.fail
            words = self.text.split()
            limit = options.max_new_tokens if options is not None else len(words)
            out: list[str] = []
            for word in words[:limit]:
                if should_stop is not None and should_stop() and not self.ignore_stop:
                    return self._answer(out, "cancelled")
                if self.token_delay:
                    time.sleep(self.token_delay)
                out.append(word)
                if on_text is not None:
                    on_text(" ".join(out))
            return self._answer(out, "eos" if len(words) <= limit else "max_new_tokens")
        finally:
            with self._lock:
                self._running -= 1

    @staticmethod
    def _answer(words: list[str], stopped: str) -> Answer:
        return Answer(text=" ".join(words), num_tokens=len(words), input_ids=[], output_ids=[],
                      image_span=(0, 0), num_visual_tokens=0, stopped=stopped)

    def release(self) -> None:
        self.released = True

    def memory_stats(self) -> dict[str, float]:
        return {}


@pytest.fixture
def fake_pipeline_cls():
    return FakePipeline


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def pack_rows(array: np.ndarray, step: int | None, bigendian: bool,
              fill: int) -> tuple[np.ndarray, int]:
    """Image rows as bytes [H, step] in the wanted byte order, padding bytes set to `fill`."""
    a = np.ascontiguousarray(array)
    if bigendian:
        a = a.astype(a.dtype.newbyteorder(">"))
    row = a.reshape(a.shape[0], -1).view(np.uint8)                # [H, row_bytes]
    step = step or row.shape[1]
    data = np.full((a.shape[0], step), fill, np.uint8)            # [H, step]
    data[:, :row.shape[1]] = row
    return data, step


def make_image_msg(array: np.ndarray, encoding: str, step: int | None = None,
                   bigendian: bool = False, stamp_ns: int = 0, frame_id: str = "cam"):
    """A duck-typed sensor_msgs/Image holding `array` ([H, W] or [H, W, C]) in `encoding`."""
    height, width = array.shape[:2]
    data, step = pack_rows(array, step, bigendian, fill=0)
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec),
                               frame_id=frame_id),
        height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=step,
        data=data.tobytes())


@pytest.fixture
def image_msg():
    return make_image_msg


def interface_sections(path: Path) -> list[str]:
    """The message definitions of a .msg, .srv (request, response) or .action (goal, result,
    feedback) file: the file split on its `---` lines."""
    text = path.read_text()
    parts, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    return parts


SECTION_NAMES = {".msg": ("",), ".srv": ("_Request", "_Response"),
                 ".action": ("_Goal", "_Result", "_Feedback")}


def parse_interfaces(repo: Path = REPO):
    """Every file under msg/, srv/ and action/, parsed by rosbags' msg parser and registered in
    a Jazzy typestore. Returns (typestore, {"Region": full type name, "SpatialQuery_Request":
    ..., ...})."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    names: dict[str, str] = {}
    types: dict = {}
    for folder in ("msg", "srv", "action"):
        for path in sorted((repo / folder).glob("*")):
            suffixes = SECTION_NAMES[path.suffix]
            sections = interface_sections(path)
            assert len(sections) == len(suffixes), f"{path}: {len(sections)} sections"
            for suffix, text in zip(suffixes, sections, strict=True):
                short = path.stem + suffix
                parsed = get_types_from_msg(text, f"spatialgeo_ros/msg/{short}")
                (full,) = parsed
                names[short] = full
                types.update(parsed)
    typestore.register(types)
    return typestore, names


@pytest.fixture(scope="session")
def interfaces():
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra: pip install -e .[test]")
    return parse_interfaces()


_NUMPY_TYPES = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8,
                "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
                "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
                "float32": np.float32, "float64": np.float64}


def _default_value(typestore, desc):
    from rosbags.interfaces import Nodetype

    kind, spec = desc
    if kind == Nodetype.BASE:
        name = spec[0]
        return "" if name == "string" else False if name == "bool" else (
            0.0 if name.startswith("float") else 0)
    if kind == Nodetype.NAME:
        return default_message(typestore, spec)
    sub, count = spec
    if kind == Nodetype.ARRAY:
        if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY_TYPES:
            return np.zeros(count, _NUMPY_TYPES[sub[1][0]])
        return [_default_value(typestore, sub) for _ in range(count)]
    if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY_TYPES:   # sequence of numbers
        return np.zeros(0, _NUMPY_TYPES[sub[1][0]])
    return []


def default_message(typestore, typename: str, **fields):
    """An instance of a rosbags message class with every field zero / empty, then `fields`."""
    msgdef = typestore.get_msgdef(typename)
    values = {name: _default_value(typestore, desc) for name, desc in msgdef.fields}
    values.update(fields)
    return msgdef.cls(**values)


def make_ros_image(typestore, array, encoding, step=None, bigendian=False, stamp_ns=0):
    """A rosbags sensor_msgs/Image of `array` ([H, W] or [H, W, C]), rows padded to `step` bytes
    with 0xAB (not zero, so a decoder that reads padding shows it), in either byte order."""
    height, width = array.shape[:2]
    data, step = pack_rows(array, step, bigendian, fill=0xAB)
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    header = default_message(typestore, "std_msgs/msg/Header", frame_id="camera_optical",
                             stamp=default_message(typestore, "builtin_interfaces/msg/Time",
                                                   sec=sec, nanosec=nanosec))
    return default_message(typestore, "sensor_msgs/msg/Image", header=header, height=height,
                           width=width, encoding=encoding, is_bigendian=int(bigendian),
                           step=step, data=data.reshape(-1))


@pytest.fixture(scope="session")
def msgs():
    """Helpers on rosbags message classes: msgs.default(typestore, type, **fields),
    msgs.image(typestore, array, encoding, step, bigendian, stamp_ns)."""
    return SimpleNamespace(default=default_message, image=make_ros_image)
