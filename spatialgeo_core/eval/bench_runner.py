"""`spatialgeo eval-bench`: SpatialRGPT-Bench answered by the pipeline, scored and reported.

Protocol (reference §7, §9.25-9.26): each item's regions (COCO RLE masks, or their boxes when an
RLE cannot be decoded) are drawn on the image with the core's set-of-marks rendering
(spatialgeo_core.regions) and the item's `text_q`, whose "Region [i]" names match the marks and
the reference answers, is asked with greedy decoding. No format hint is added to the prompt.

Sharding: under torchrun (RANK and WORLD_SIZE set) rank r answers the items i with
i % WORLD_SIZE == r into results.rank{r}.jsonl. After a barrier (a gloo process group when
MASTER_ADDR/MASTER_PORT are set, as torchrun does; otherwise rank 0 polls the rank files until
every item has a record) rank 0 merges them into results.jsonl (one record per item, in the
file's order), removes the rank files and writes metrics.json and report.md. A single process
writes results.jsonl directly. --resume reads results.jsonl and every rank file, so a run can be
resumed with a different number of processes.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from spatialgeo_core.errors import SpatialGeoError
from spatialgeo_core.eval.bench_format import BenchFormatError, BenchItem, parse_bench_item
from spatialgeo_core.eval.runner import (
    RESULTS_FILE,
    EvalRunError,
    ResultsWriter,
    answer_fields,
    check_out_dir,
    finalize,
    is_ok,
    merge_results,
    ordered_records,
    progress_bar,
    read_results,
    result_record,
    run_info_common,
    write_results,
)
from spatialgeo_core.serving import answer_frame
from spatialgeo_core.types import GenerationOptions

logger = logging.getLogger(__name__)

POLL_S = 0.5
_RANK_FILE = re.compile(r"results\.rank(\d+)\.jsonl")


@dataclass(frozen=True)
class BenchEntry:
    """One item of the annotation file, parsed, or the error that kept it from parsing."""

    index: int
    id: str                                   # str of the item's id (records keep the original)
    item: BenchItem | None = None
    error: BenchFormatError | None = None


def rank_file(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / f"results.rank{rank}.jsonl"


def _rank_files(out_dir: Path) -> dict[int, Path]:
    """rank -> results.rank{rank}.jsonl, for the rank files in out_dir."""
    found = {}
    for path in Path(out_dir).glob("results.rank*.jsonl"):
        m = _RANK_FILE.fullmatch(path.name)
        if m:
            found[int(m.group(1))] = path
    return dict(sorted(found.items()))


def shard_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK / WORLD_SIZE; (0, 1) without them."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise EvalRunError(f"RANK / WORLD_SIZE must be integers: {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise EvalRunError(f"RANK {rank} must lie in [0, WORLD_SIZE {world})")
    return rank, world


def shard_device(device: str) -> str:
    """'cuda' becomes 'cuda:LOCAL_RANK' under torchrun, so each rank takes its own GPU."""
    local = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(local)}"
    return device


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


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]; InvalidImageError when it is missing, unreadable or
    too large (the rules of every entry point: spatialgeo_core.image_msgs.open_image)."""
    from spatialgeo_core.image_msgs import open_image

    return open_image(path)


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
        result = answer_frame(pipeline, path, lambda: read_image(path), item.text_q,
                              item.regions, options)
    except SpatialGeoError as exc:
        return result_record(item.id, item.text_q, item.reference_answer, item.category,
                             item.qa_type, model_id, error=exc, **fields)
    latency_ms = (time.perf_counter() - t0) * 1000
    return result_record(item.id, item.text_q, item.reference_answer, item.category,
                         item.qa_type, model_id, pred=result.answer.text,
                         default_unit=default_unit, **fields,
                         **answer_fields(result, latency_ms))


def _all_records(out_dir: Path) -> list[dict]:
    """results.jsonl, then every rank file (newer), in that order."""
    records = read_results(out_dir / RESULTS_FILE)
    for path in _rank_files(out_dir).values():
        records += read_results(path)
    return records


def _barrier(out_dir: Path, rank: int, world: int, entries: list[BenchEntry],
             timeout_s: float) -> None:
    """Return on rank 0 once every rank has finished (other ranks return at once without a
    process group)."""
    if world == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        own = not dist.is_initialized()
        if own:
            dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        try:
            dist.barrier()
        finally:
            if own:
                dist.destroy_process_group()
        return
    if rank != 0:
        return
    wanted = {e.id for e in entries}
    deadline = time.monotonic() + timeout_s
    while True:
        missing = wanted - set(merge_results(_all_records(out_dir)))
        if not missing:
            return
        if time.monotonic() > deadline:
            raise EvalRunError(
                f"{len(missing)} items have no result after {timeout_s:.0f} s (did a rank "
                f"fail?); the results so far are kept in {out_dir}: rerun with --resume")
        time.sleep(POLL_S)


@dataclass
class ShardedRun:
    """What `run_sharded` leaves on rank 0 (or a single process)."""

    world: int                                # number of processes
    records: list[dict]                       # one per entry, in the entries' order
    model_id: str


def run_sharded(out_dir: Path, entries: list, answer: Callable[[object, object, str, dict], dict],
                load_pipeline: Callable[[], object], *, needs_model: Callable[[object], bool],
                model_id: str = "", resume: bool = False, progress: bool = True,
                desc: str = "eval", barrier_timeout_s: float = 6 * 3600.0) -> ShardedRun | None:
    """Answer this rank's share of `entries` (objects with `.index` and a str `.id`) that have
    no "ok" record yet, then merge on rank 0 (see the module docstring).

    answer(entry, pipeline, model_id, shard) returns the entry's record; `shard` holds the
    fields that name the rank ({} in a single process). The pipeline is loaded only when an entry
    to answer `needs_model`. Returns None on the ranks other than 0.
    """
    rank, world = shard_env()
    out_dir = Path(out_dir)
    results_path = out_dir / RESULTS_FILE
    mine_path = results_path if world == 1 else rank_file(out_dir, rank)
    # each file is checked by exactly one rank, so no rank sees another's fresh output
    own = [mine_path]
    if rank == 0:
        own.append(results_path)
        own += [p for r, p in _rank_files(out_dir).items() if world == 1 or r >= world]
    check_out_dir(out_dir, resume, own)
    done = {qid for qid, r in merge_results(_all_records(out_dir)).items() if is_ok(r)}
    mine = [e for e in entries if e.index % world == rank and e.id not in done]

    pipeline = load_pipeline() if any(needs_model(e) for e in mine) else None
    model_id = model_id or str(getattr(pipeline, "model_path", "") or "")
    shard = {"rank": rank} if world > 1 else {}
    desc = desc if world == 1 else f"{desc} rank {rank}"
    with ResultsWriter(mine_path) as writer, progress_bar(len(mine), desc, progress) as bar:
        for entry in mine:
            writer.write(answer(entry, pipeline, model_id, shard))
            bar.update()

    _barrier(out_dir, rank, world, entries, barrier_timeout_s)
    if rank != 0:
        return None
    records, stale = ordered_records(_all_records(out_dir), [e.id for e in entries])
    write_results(results_path, records + stale)
    for path in _rank_files(out_dir).values():
        path.unlink()
    return ShardedRun(world, records, model_id)


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
