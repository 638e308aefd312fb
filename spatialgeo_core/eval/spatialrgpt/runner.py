"""`spatialgeo eval-bench`: SpatialRGPT-Bench answered by the pipeline, scored and reported.

Protocol (reference §7, §9.25-9.26): each item's regions (COCO RLE masks, or their boxes when an
RLE cannot be decoded) are drawn on the image with the core's set-of-marks rendering
(spatialgeo_core.regions) and the item's `text_q`, whose "Region [i]" names match the marks and
the reference answers, is asked with greedy decoding. No format hint is added to the prompt.

Sharded over processes under torchrun as eval/sharding.py describes; --resume reads the merged
results and any rank files.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from spatialgeo_core.errors import EvalRunError, SpatialGeoError
from spatialgeo_core.eval.runner import (
    answer_fields,
    finalize,
    result_record,
    run_info_common,
)
from spatialgeo_core.eval.sharding import run_sharded, shard_env
from spatialgeo_core.eval.spatialrgpt.format import (
    BenchFormatError,
    BenchItem,
    parse_bench_item,
)
from spatialgeo_core.image_msgs import open_image
from spatialgeo_core.serving import answer_frame
from spatialgeo_core.types import GenerationOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchEntry:
    """One item of the annotation file, parsed, or the error that kept it from parsing."""

    index: int
    id: str                                   # str of the item's id (records keep the original)
    item: BenchItem | None = None
    error: BenchFormatError | None = None


def load_bench(path: str | Path, limit: int | None = None) -> list[BenchEntry]:
    """The items of a SpatialRGPT-Bench JSON file. A malformed item becomes an entry with its
    error (recorded, not fatal); a file that is not a JSON list raises BenchFormatError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchFormatError(f"annotation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchFormatError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BenchFormatError(f"{path} must hold a JSON list of items, got "
                               f"{type(data).__name__}")
    if limit is not None:
        data = data[:max(0, limit)]
    entries: list[BenchEntry] = []
    seen: set[str] = set()
    for i, obj in enumerate(data):
        raw_id = obj.get("id") if isinstance(obj, dict) else None
        qid = str(raw_id) if isinstance(raw_id, (str, int)) else f"#{i}"
        if qid in seen:
            entries.append(BenchEntry(i, f"#{i}", error=BenchFormatError(
                f"bench item #{i}: id {raw_id!r} repeats an earlier item")))
            continue
        seen.add(qid)
        try:
            entries.append(BenchEntry(i, qid, item=parse_bench_item(obj, index=i)))
        except BenchFormatError as exc:
            entries.append(BenchEntry(i, qid, error=exc))
    return entries


# -------------------------------------------------------------------------------------------------


def _answer_entry(entry: BenchEntry, images: Path, pipeline, options: GenerationOptions,
                  model_id: str, default_unit: str | None, shard: dict) -> dict:
    if entry.error is not None:
        return {"question_id": entry.id, "question": None, "pred": None, "gt": None,
                "model_id": model_id, "qa_info": None, "status": "error",
                "error_kind": "BenchFormatError", "error": str(entry.error),
                "index": entry.index, **shard}
    item = entry.item
    fields = {"image": item.file_path, "index": entry.index,
              "region_sources": list(item.region_sources), **shard}
    t0 = time.perf_counter()
    try:
        # the items of one image are usually consecutive: its features stay in the pipeline's
        # feature cache for them
        path = images / item.file_path
        result = answer_frame(pipeline, path, lambda: open_image(path), item.text_q,
                              item.regions, options)
    except SpatialGeoError as exc:
        return result_record(item.id, item.text_q, item.reference_answer, item.category,
                             item.qa_type, model_id, error=exc, **fields)
    latency_ms = (time.perf_counter() - t0) * 1000
    return result_record(item.id, item.text_q, item.reference_answer, item.category,
                         item.qa_type, model_id, pred=result.answer.text,
                         default_unit=default_unit, **fields,
                         **answer_fields(result, latency_ms))


def evaluate_bench(annotations: str | Path, images: str | Path, out_dir: str | Path,
                   load_pipeline, *, model_id: str = "", options: GenerationOptions | None = None,
                   limit: int | None = None, resume: bool = False,
                   default_unit: str | None = None, progress: bool = True,
                   barrier_timeout_s: float = 6 * 3600.0) -> dict | None:
    """Answer and score SpatialRGPT-Bench; the metrics on rank 0 (or a single process), None on
    the other ranks."""
    started = time.time()
    options = options or GenerationOptions()
    shard_env()                                   # a bad RANK / WORLD_SIZE fails before reading
    out_dir, images = Path(out_dir), Path(images)
    entries = load_bench(annotations, limit)
    if not images.is_dir():
        raise EvalRunError(f"--images {images} is not a directory")

    def answer(entry: BenchEntry, pipeline, model_id: str, shard: dict) -> dict:
        return _answer_entry(entry, images, pipeline, options, model_id, default_unit, shard)

    run = run_sharded(out_dir, entries, answer, load_pipeline,
                      needs_model=lambda e: e.item is not None, model_id=model_id,
                      resume=resume, progress=progress, desc="eval-bench",
                      barrier_timeout_s=barrier_timeout_s)
    if run is None:
        return None
    run_info = {"annotations": str(annotations), "images": str(images),
                "processes": run.world, "regions": "set-of-marks (spatialgeo_core.regions)"}
    run_info.update(run_info_common(run.model_id, options, started))
    return finalize(out_dir, run.records, "SpatialGeo on SpatialRGPT-Bench", run_info,
                    default_unit)
