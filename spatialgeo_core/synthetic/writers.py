"""Writers of the synthetic world: LLaVA training JSON, SpatialRGPT-Bench JSON, ROS 2 bags.

- `write_llava_json`: LLaVA records {id, image, conversations} (the first human turn starts with
  "<image>\\n"), plus `regions` (per region {"box": [x1, y1, x2, y2], "mask_rle": COCO RLE}, index
  k being "Region [k]") and `qa_info` (per gpt turn {category, type}). Images are PNGs without any
  region drawn: the model's processor draws the marks from `regions`.
- `write_bench_json`: SpatialRGPT-Bench items through spatialgeo_core.eval.spatialrgpt.format.
- `write_bag`: a rosbag2 (sqlite3 or mcap) of sensor_msgs/Image (rgb8) or CompressedImage (png or
  jpeg) and CameraInfo, stamped `period_ns` apart, optionally the registered depth (16UC1 or
  32FC1 Image, synthetic/depth_truth.py), and a questions.jsonl that `spatialgeo eval-bag`
  reads: one JSON per line {id, stamp_ns, frame_index, topic, question, regions
  ([{"box": [...]}] or [{"mask_rle": {...}}]), reference, category, type, positions (each
  region's 3D ground truth, depth_truth.region_truth)}.
- `write_scene_metadata`: one JSON per sample with the scene, camera and per-object ground truth.

Boxes are [x1, y1, x2, y2) in pixels, x2 and y2 exclusive (the box of a mask's pixels, as
spatialrgpt.format computes it). pycocotools (masks) and rosbags (bags) are optional dependencies,
imported when a writer needs them.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spatialgeo_core.optional import require
from spatialgeo_core.synthetic.depth_truth import DEPTH_ENCODINGS, depth_array, region_truth
from spatialgeo_core.synthetic.questions import QA
from spatialgeo_core.synthetic.world import WorldSample

logger = logging.getLogger(__name__)

DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000     # first header stamp of a bag
DEFAULT_PERIOD_NS = 100_000_000                      # 0.1 s between frames
DEFAULT_DEPTH_TOPIC = "/camera/depth_registered/image_raw"   # depth registered to the colour
REGION_FORMATS = ("mask", "box", "alternate")
_REGION_RE = re.compile(r"Region \[\d+\]")


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path, format="PNG")
    return path


def region_box(sample: WorldSample, obj: int) -> list[float]:
    box = sample.rendering.objects[obj].box2d
    if box is None:
        raise ValueError(f"{sample.id}: object {obj} is not visible and cannot be a region")
    return [float(v) for v in box]


def _encode_rle(mask: np.ndarray) -> dict:
    require("pycocotools")
    from spatialgeo_core.eval.spatialrgpt.format import encode_rle
    return encode_rle(mask, compressed=True)


def _image_name(sample: WorldSample) -> str:
    return f"{sample.id}.png"


# ------------------------------------------------------------------------------------------
# LLaVA training JSON

def region_records(sample: WorldSample, objects, with_masks: bool) -> list[dict]:
    """{"box", "mask_rle"?} of each object, in order (index k is "Region [k]")."""
    regions = []
    for obj in objects:
        region = {"box": region_box(sample, obj)}
        if with_masks:
            region["mask_rle"] = _encode_rle(sample.rendering.mask(obj))
        regions.append(region)
    return regions


def llava_record(sample: WorldSample, image: str, with_masks: bool = True) -> dict:
    """One LLaVA record of a sample whose questions share its naming (a training sample)."""
    for qa in sample.qas:
        if qa.regions != sample.regions:
            raise ValueError(f"{sample.id}: a LLaVA record needs questions that share the "
                             f"sample's regions; question {qa.question!r} names {qa.regions} "
                             f"(make training samples with split='train')")
    turns = []
    for j, qa in enumerate(sample.qas):
        turns.append({"from": "human", "value": ("<image>\n" if j == 0 else "") + qa.question})
        turns.append({"from": "gpt", "value": qa.answer})
    regions = region_records(sample, sample.regions, with_masks)
    return {"id": sample.id, "image": image, "conversations": turns, "regions": regions,
            "qa_info": [{"category": qa.category, "type": qa.qa_type} for qa in sample.qas]}


def question_records(sample: WorldSample, image: str, with_masks: bool = True) -> list[dict]:
    """One LLaVA record per question, each drawing only the regions its question names (the
    held-out naming: A = "Region [0]", B = "Region [1]"; a sample made with naming
    "per_question" or split "test"). Record ids are <sample id>-q<j>."""
    return [{"id": f"{sample.id}-q{j}", "image": image,
             "conversations": [{"from": "human", "value": "<image>\n" + qa.question},
                               {"from": "gpt", "value": qa.answer}],
             "regions": region_records(sample, qa.regions, with_masks),
             "qa_info": [{"category": qa.category, "type": qa.qa_type}]}
            for j, qa in enumerate(sample.qas)]


def write_llava_json(samples: Iterable[WorldSample], path: str | Path, image_dir: str | Path,
                     with_masks: bool = True, extra: Iterable[dict] = (),
                     per_question: bool = False) -> Path:
    """Save each sample's image as image_dir/<id>.png and write the LLaVA JSON list to path.

    "image" is the file name relative to image_dir (LLaVA's image_folder). Samples without a
    question are left out. per_question: one record per question (question_records) instead of
    one conversation per image (llava_record). `extra`: records written after the samples' ones,
    read once the samples are consumed (so a generator over `samples` may fill it). Returns the
    path.
    """
    path, image_dir = Path(path), Path(image_dir)
    records = []
    for sample in samples:
        if not sample.qas:
            logger.warning("%s has no question; left out of %s", sample.id, path)
            continue
        name = _image_name(sample)
        save_png(sample.rgb, image_dir / name)
        if per_question:
            records.extend(question_records(sample, name, with_masks=with_masks))
        else:
            records.append(llava_record(sample, name, with_masks=with_masks))
    records.extend(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    logger.info("wrote %d LLaVA records to %s (images in %s)", len(records), path, image_dir)
    return path


# ------------------------------------------------------------------------------------------
# SpatialRGPT-Bench JSON

def mask_tokens(question: str) -> str:
    """The bench's human turn: "<image>\\n" and the question with each region name as <mask>."""
    return "<image>\n" + _REGION_RE.sub("<mask>", question)


def bench_items(sample: WorldSample, file_path: str) -> list:
    """The sample's questions as spatialrgpt.format.BenchItem objects (one per question)."""
    require("pycocotools")
    from spatialgeo_core.eval.spatialrgpt.format import BenchItem, Turn
    from spatialgeo_core.types import Region

    cam = sample.rendering.camera
    items = []
    for j, qa in enumerate(sample.qas):
        mentions = [int(m[8:-1]) for m in _REGION_RE.findall(qa.question)]
        if mentions != list(range(len(qa.regions))):
            raise ValueError(f"{sample.id}: a bench question must name Region [0], [1], ... "
                             f"once each and in order, got {qa.question!r} for regions "
                             f"{qa.regions} (make test samples with split='test')")
        regions = [Region(box=tuple(region_box(sample, obj)), mask=sample.rendering.mask(obj))
                   for obj in qa.regions]
        items.append(BenchItem(
            id=f"{sample.id}-q{j}", file_path=file_path, height=cam.height, width=cam.width,
            text_q=qa.question,
            conversations=[Turn("human", mask_tokens(qa.question)), Turn("gpt", qa.answer)],
            regions=regions, qa_type=qa.qa_type, category=qa.category))
    return items


def write_bench_json(samples: Iterable[WorldSample], path: str | Path,
                     image_dir: str | Path) -> Path:
    """Save each sample's image as image_dir/<id>.png and write SpatialRGPT-Bench items to path.

    image_info.file_path is the file name relative to image_dir (pass image_dir as the image
    root to the evaluation). Returns the path.
    """
    require("pycocotools")
    from spatialgeo_core.eval.spatialrgpt.format import write_bench

    image_dir = Path(image_dir)

    def items():
        for sample in samples:
            name = _image_name(sample)
            save_png(sample.rgb, image_dir / name)
            yield from bench_items(sample, name)

    out = write_bench(items(), path)
    logger.info("wrote bench items to %s (images in %s)", out, image_dir)
    return out


# ------------------------------------------------------------------------------------------
# ROS 2 bags

@dataclass(frozen=True)
class BagSummary:
    path: Path                      # the rosbag2 directory
    questions_path: Path | None     # the questions.jsonl written next to it
    image_topic: str                # the topic the images are on
    info_topic: str
    stamps_ns: tuple[int, ...]      # header stamp of each frame
    num_questions: int
    depth_topic: str | None = None  # the registered depth images, when written


def _typestore(distro: str):
    require("rosbags")
    from rosbags.typesys import Stores, get_typestore
    stores = {"jazzy": (Stores.ROS2_JAZZY, 9), "humble": (Stores.ROS2_HUMBLE, 8)}
    if distro not in stores:
        raise ValueError(f"distro must be one of {tuple(stores)}, got {distro!r}")
    store, version = stores[distro]
    return get_typestore(store), version


def _encode_image(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(rgb).save(buf, format="PNG")
    else:
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _question_record(sample: WorldSample, qa: QA, j: int, frame_index: int, stamp_ns: int,
                     topic: str, region_format: str) -> dict:
    regions = []
    for k, obj in enumerate(qa.regions):
        use_mask = region_format == "mask" or (region_format == "alternate"
                                               and (j + k) % 2 == 0)
        if use_mask:
            regions.append({"mask_rle": _encode_rle(sample.rendering.mask(obj))})
        else:
            regions.append({"box": region_box(sample, obj)})
    return {"id": f"{sample.id}-q{j}", "stamp_ns": stamp_ns, "frame_index": frame_index,
            "topic": topic, "question": qa.question, "regions": regions,
            "reference": qa.answer, "category": qa.category, "type": qa.qa_type,
            "positions": [region_truth(sample.rendering, obj) for obj in qa.regions]}


def write_bag(path: str | Path, frames: Iterable[WorldSample],
              camera_topic: str = "/camera/image_raw",
              info_topic: str = "/camera/camera_info", storage: str = "sqlite3",
              compressed: bool = False, *, compressed_format: str = "png",
              frame_id: str = "camera_optical_frame", start_ns: int = DEFAULT_START_NS,
              period_ns: int = DEFAULT_PERIOD_NS, questions_path: str | Path | None = None,
              region_format: str = "mask", distro: str = "jazzy", depth: str | None = None,
              depth_topic: str = DEFAULT_DEPTH_TOPIC) -> BagSummary:
    """Write the frames' images and camera infos to a new rosbag2 directory at `path`, and their
    questions to questions_path (default: questions.jsonl next to the bag directory).

    Frame i is stamped start_ns + i * period_ns (header stamp and bag time). compressed: publish
    sensor_msgs/CompressedImage (compressed_format "png" or "jpeg") on camera_topic +
    "/compressed" instead of raw rgb8 Images on camera_topic. region_format: questions give
    regions as "mask" (COCO RLE), "box", or "alternate" between the two. distro: the typestore,
    "jazzy" (rosbag2 format 9) or "humble" (format 8). depth: also write each frame's registered
    depth on depth_topic, "16UC1" (mm) or "32FC1" (m), stamped as its colour image.
    """
    if storage not in ("sqlite3", "mcap"):
        raise ValueError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
    if compressed_format not in ("png", "jpeg"):
        raise ValueError(f"compressed_format must be 'png' or 'jpeg', got {compressed_format!r}")
    if region_format not in REGION_FORMATS:
        raise ValueError(f"region_format must be one of {REGION_FORMATS}, got {region_format!r}")
    if depth is not None and depth not in DEPTH_ENCODINGS:
        raise ValueError(f"depth must be None or one of {DEPTH_ENCODINGS}, got {depth!r}")
    if period_ns <= 0 or start_ns <= 0:
        raise ValueError(f"start_ns and period_ns must be > 0 (stamp 0 means 'latest'), got "
                         f"{start_ns}, {period_ns}")
    ts, version = _typestore(distro)
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    questions_path = Path(questions_path) if questions_path else path.parent / "questions.jsonl"
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    image_topic = camera_topic.rstrip("/") + "/compressed" if compressed else camera_topic
    T = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps: list[int] = []
    records: list[dict] = []
    with Writer(path, version=version, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection(image_topic, image_type, typestore=ts)
        info_conn = writer.add_connection(info_topic, "sensor_msgs/msg/CameraInfo", typestore=ts)
        depth_conn = None if depth is None else writer.add_connection(
            depth_topic, "sensor_msgs/msg/Image", typestore=ts)
        for i, sample in enumerate(frames):
            stamp = start_ns + i * period_ns
            cam = sample.rendering.camera
            rgb = np.ascontiguousarray(sample.rgb, dtype=np.uint8)
            header = T["std_msgs/msg/Header"](
                stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                       nanosec=stamp % 1_000_000_000),
                frame_id=frame_id)
            if compressed:
                msg = T[image_type](header=header,
                                    format=f"rgb8; {compressed_format} compressed bgr8",
                                    data=np.frombuffer(_encode_image(rgb, compressed_format),
                                                       dtype=np.uint8))
            else:
                msg = T[image_type](header=header, height=cam.height, width=cam.width,
                                    encoding="rgb8", is_bigendian=0, step=3 * cam.width,
                                    data=rgb.reshape(-1))                      # [H * W * 3]
            K = cam.K
            P = np.hstack([K, np.zeros((3, 1))])                               # [3, 4]
            info = T["sensor_msgs/msg/CameraInfo"](
                header=header, height=cam.height, width=cam.width, distortion_model="plumb_bob",
                d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),          # [9], [9]
                p=P.reshape(-1),                                                  # [12]
                binning_x=0, binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                          width=0, do_rectify=False))
            writer.write(info_conn, stamp, ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            writer.write(image_conn, stamp, ts.serialize_cdr(msg, image_type))
            if depth_conn is not None:
                arr = depth_array(sample.rendering, depth)                    # [H, W]
                depth_msg = T["sensor_msgs/msg/Image"](
                    header=header, height=cam.height, width=cam.width, encoding=depth,
                    is_bigendian=0, step=cam.width * arr.itemsize,
                    data=arr.astype(arr.dtype.newbyteorder("<")).view(np.uint8).reshape(-1))
                writer.write(depth_conn, stamp, ts.serialize_cdr(depth_msg,
                                                                 "sensor_msgs/msg/Image"))
            stamps.append(stamp)
            records.extend(_question_record(sample, qa, j, i, stamp, image_topic, region_format)
                           for j, qa in enumerate(sample.qas))
    tmp = questions_path.with_name(questions_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, questions_path)
    logger.info("wrote %d frames to %s (%s, %s) and %d questions to %s", len(stamps), path,
                storage, image_topic, len(records), questions_path)
    return BagSummary(path, questions_path, image_topic, info_topic, tuple(stamps), len(records),
                      None if depth is None else depth_topic)


# ------------------------------------------------------------------------------------------
# Ground truth

def sample_metadata(sample: WorldSample) -> dict:
    return {"id": sample.id, "split": sample.split, "index": sample.index,
            "image": _image_name(sample), "scene": sample.rendering.scene.to_dict(),
            "objects": [o.to_dict() for o in sample.rendering.objects],
            "regions": list(sample.regions), "qas": [qa.to_dict() for qa in sample.qas]}


def write_scene_metadata(samples: Iterable[WorldSample], path: str | Path) -> Path:
    """One JSON line of ground truth per sample (scene, camera, objects, questions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample_metadata(sample)) + "\n")
    return path
