"""`spatialgeo eval-spatialscore`: SpatialScore v0 answered by the pipeline, or saved predictions
scored, by upstream's rules and strictly, with metrics and a report.

Protocol (upstream's `version_0/test_*.py`): greedy decoding, 1024 new tokens at most, and the
source's instruction (data.instruction) placed before the question in the user turn, joined as
upstream joins them for its LLaVA-family model (Cambrian: instruction + question). The
question is asked as published, or with --draw-boxes the "(x1, y1, x2, y2)" boxes it writes are
drawn as set-of-marks and named "Region [i]" (data.boxes_as_regions). Single-image items are
answered; multi-image and video items are counted as skipped (the pipeline answers about one
image) and have no record. Sharding, --resume and the results file are eval-bench's
(eval/sharding.py).

A record is the item as published (its v0 fields) plus `pred_answer` (the raw output, upstream's
name, so results.jsonl can itself be scored with --score-only), `question_id` (the v0 index),
`status`, `asked` (the text given to the model), `regions` (the drawn boxes), timings and
`score` ({mode: scoring.ItemScore}). Scores are computed again when metrics are written.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from spatialgeo_core.errors import SpatialGeoError
from spatialgeo_core.eval.runner import (
    RESULTS_FILE,
    EvalRunError,
    answer_fields,
    check_out_dir,
    is_ok,
    run_info_common,
    write_outputs,
    write_results,
)
from spatialgeo_core.eval.sharding import run_sharded, shard_env
from spatialgeo_core.eval.spatialscore.data import (
    Entry,
    SpatialScoreItem,
    boxes_as_regions,
    entries,
    hard_indices,
    image_path,
    instruction,
    read_v0,
    select,
)
from spatialgeo_core.eval.spatialscore.scoring import (
    MODES,
    QUIRKS,
    ItemScore,
    aggregate,
    score_answer,
)
from spatialgeo_core.image_msgs import open_image
from spatialgeo_core.serving import answer_frame
from spatialgeo_core.types import GenerationOptions

logger = logging.getLogger(__name__)

UPSTREAM_MAX_NEW_TOKENS = 1024


def _error_record(entry: Entry, error: BaseException, model_id: str, **extra) -> dict:
    fields = dict(entry.item.raw) if entry.item is not None else {}
    return {**fields, "question_id": entry.id, "status": "error",
            "error_kind": type(error).__name__, "error": str(error), "model_id": model_id,
            "position": entry.index, **extra}


def _scores(item: SpatialScoreItem, pred: str) -> dict:
    return {mode: score_answer(item.raw["question_type"], item.source, pred, item.answer,
                               mode).to_dict() for mode in MODES}


def _ok_record(item: SpatialScoreItem, pred: str, model_id: str, position: int,
               **extra) -> dict:
    return {**item.raw, "answer": item.answer, "pred_answer": pred, "question_id": item.id,
            "status": "ok", "model_id": model_id, "position": position,
            "score": _scores(item, pred), **extra}


def _answer(entry: Entry, root: Path, pipeline, options: GenerationOptions, model_id: str,
            draw_boxes: bool, shard: dict) -> dict:
    if entry.error is not None:
        return _error_record(entry, entry.error, model_id, **shard)
    item = entry.item
    t0 = time.perf_counter()
    regions = []
    try:
        # an image's items are consecutive: its features stay in the pipeline's feature cache
        path = image_path(root, item.img_paths[0])
        question = item.question
        if draw_boxes:               # the boxes are checked against the image's size here
            frame = pipeline.frame(path, lambda: open_image(path))
            question, regions = boxes_as_regions(question, *frame.size)
        asked = instruction(item.source, item.raw["question_type"]) + question
        result = answer_frame(pipeline, path, lambda: open_image(path), asked, regions, options)
    except SpatialGeoError as exc:
        return _error_record(entry, exc, model_id, **shard)
    latency_ms = (time.perf_counter() - t0) * 1000
    return _ok_record(item, result.answer.text, model_id, entry.index, asked=asked,
                      regions=[list(r.box) for r in regions], **shard,
                      **answer_fields(result, latency_ms))


def _check_room(pipeline, options: GenerationOptions) -> None:
    positions = pipeline.cfg.llm.max_position_embeddings
    if options.max_new_tokens >= positions:
        raise EvalRunError(
            f"--max-new-tokens {options.max_new_tokens} leaves no room for the prompt in the "
            f"model's {positions} positions: pass a smaller --max-new-tokens (upstream's "
            f"{UPSTREAM_MAX_NEW_TOKENS} needs a longer context)")


def _selection(data: Path, subset: str, hard: str | Path | None, limit: int | None,
               predictions: bool) -> list[Entry]:
    raw = read_v0(data, "predictions file" if predictions else "data file")
    hard_set = hard_indices(data, hard) if subset == "hard" else None
    return entries(select(raw, subset, hard_set, limit), predictions=predictions)


def evaluate_spatialscore(data: str | Path, root: str | Path, out_dir: str | Path,
                          load_pipeline, *, subset: str = "all", hard: str | Path | None = None,
                          model_id: str = "", options: GenerationOptions | None = None,
                          limit: int | None = None, resume: bool = False,
                          draw_boxes: bool = False, progress: bool = True,
                          barrier_timeout_s: float = 6 * 3600.0) -> dict | None:
    """Answer the single-image items of a subset and score them; the metrics on rank 0 (or a
    single process), None on the other ranks."""
    started = time.time()
    options = options or GenerationOptions(max_new_tokens=UPSTREAM_MAX_NEW_TOKENS)
    shard_env()                                   # a bad RANK / WORLD_SIZE fails before reading
    data, root, out_dir = Path(data), Path(root), Path(out_dir)
    selected = _selection(data, subset, hard, limit, predictions=False)
    if not root.is_dir():
        raise EvalRunError(f"--root {root} is not a directory")
    todo = [e for e in selected if e.skip_reason is None]

    def load():
        pipeline = load_pipeline()
        _check_room(pipeline, options)
        return pipeline

    def answer(entry: Entry, pipeline, model_id: str, shard: dict) -> dict:
        return _answer(entry, root, pipeline, options, model_id, draw_boxes, shard)

    run = run_sharded(out_dir, todo, answer, load, needs_model=lambda e: e.item is not None,
                      model_id=model_id, resume=resume, progress=progress,
                      desc="eval-spatialscore", barrier_timeout_s=barrier_timeout_s)
    if run is None:
        return None
    run_info = {"data": str(data), "root": str(root), "subset": subset, "processes": run.world,
                "prompt": "upstream's per-source instruction + question",
                "boxes": ("drawn as set-of-marks, named Region [i] (--draw-boxes)" if draw_boxes
                          else "as published (coordinates in the text)")}
    run_info.update(run_info_common(run.model_id, options, started))
    skipped = [e for e in selected if e.skip_reason is not None]
    return finalize(out_dir, run.records, skipped, run_info, "SpatialGeo on SpatialScore (v0)")


def score_only(predictions: str | Path, out_dir: str | Path, *, subset: str = "all",
               hard: str | Path | None = None, limit: int | None = None) -> dict:
    """Score saved predictions (v0 items with `pred_answer`, every modality) into out_dir:
    results.jsonl with each item's scores, metrics.json and report.md."""
    started = time.time()
    predictions, out_dir = Path(predictions), Path(out_dir)
    selected = _selection(predictions, subset, hard, limit, predictions=True)
    check_out_dir(out_dir, False, [out_dir / RESULTS_FILE])
    records = [_error_record(e, e.error, "") if e.error is not None
               else _ok_record(e.item, e.item.pred_answer, "", e.index) for e in selected]
    write_results(out_dir / RESULTS_FILE, records)
    run_info = {"predictions": str(predictions), "subset": subset,
                "elapsed_s": round(time.time() - started, 1)}
    return finalize(out_dir, records, [], run_info, "Saved predictions on SpatialScore (v0)")


# -------------------------------------------------------------------------------------------------
# metrics.json and the report


def rescore(record: dict, mode: str) -> ItemScore:
    """The score of an "ok" record under `mode`, by the rules as they are now."""
    return score_answer(record["question_type"], record["source"], record["pred_answer"],
                        record["answer"], mode)


def _skipped(skipped: list[Entry]) -> dict:
    by_reason = Counter(e.item.input_modality for e in skipped)
    by_source = Counter(e.item.source for e in skipped)
    return {"total": len(skipped), "by_modality": dict(sorted(by_reason.items())),
            "by_source": dict(sorted(by_source.items()))}


def finalize(out_dir: Path, records: list[dict], skipped: list[Entry], run_info: dict,
             title: str) -> dict:
    """Write metrics.json and report.md for `records` (one per answered or failed item) and the
    skipped items; returns the metrics."""
    from spatialgeo_core.eval.spatialscore.report import write_report

    answered = [r for r in records if is_ok(r)]
    scored = {mode: [rescore(r, mode) for r in answered] for mode in MODES}
    metrics: dict = {mode: aggregate((r, s.score) for r, s in zip(answered, scored[mode],
                                                                  strict=True))
                     for mode in MODES}
    quirks = Counter(q for s in scored["upstream"] for q in s.quirks)
    metrics["quirks"] = {q: quirks.get(q, 0) for q in QUIRKS}
    metrics["modes_differ"] = sum(a.score != b.score for a, b in zip(*scored.values(),
                                                                     strict=True))
    metrics["num_items"] = len(records) + len(skipped)
    metrics["skipped"] = _skipped(skipped)
    return write_outputs(out_dir, metrics, records, run_info, title, write_report)


def summary_line(metrics: dict, out_dir: Path) -> str:
    overall = {mode: metrics[mode]["overall"]["accuracy"] for mode in MODES}
    return (f"{metrics['num_answered']} of {metrics['num_items']} items scored "
            f"({metrics['skipped']['total']} skipped, {metrics['errors']['total']} errors): "
            f"upstream {overall['upstream']:.1f} %, strict {overall['strict']:.1f} %; "
            f"{Path(out_dir) / 'report.md'}")
