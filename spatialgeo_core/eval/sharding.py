"""Sharding an evaluation over processes (torchrun), as eval-bench and eval-spatialscore do.

Under torchrun (RANK and WORLD_SIZE set) rank r answers the entries i with i % WORLD_SIZE == r
into results.rank{r}.jsonl. After a barrier (a gloo process group when MASTER_ADDR/MASTER_PORT
are set, as torchrun does; otherwise rank 0 polls the rank files until every entry has a record)
rank 0 merges them into results.jsonl (one record per entry, in the entries' order) and removes
the rank files. A single process writes results.jsonl directly. --resume reads results.jsonl and
every rank file, so a run can be resumed with a different number of processes.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spatialgeo_core.errors import EvalRunError
from spatialgeo_core.eval.runner import (
    RESULTS_FILE,
    ResultsWriter,
    check_out_dir,
    is_ok,
    merge_results,
    ordered_records,
    progress_bar,
    read_results,
    write_results,
)

POLL_S = 0.5
_RANK_FILE = re.compile(r"results\.rank(\d+)\.jsonl")


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


def _all_records(out_dir: Path) -> list[dict]:
    """results.jsonl, then every rank file (newer), in that order."""
    records = read_results(out_dir / RESULTS_FILE)
    for path in _rank_files(out_dir).values():
        records += read_results(path)
    return records


def _barrier(out_dir: Path, rank: int, world: int, entries: list,
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
