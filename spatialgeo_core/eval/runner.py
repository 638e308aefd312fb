"""The evaluation loop shared by `spatialgeo eval-bag`, `eval-bench`, `eval-spatialscore` and the
ROS layer's `eval_live`. Every answer comes from spatialgeo_core.serving.answer_frame, the path
the node answers by.

Output directory:
    results.jsonl   one record per question, appended and flushed as soon as it is answered, so
                    a crash or Ctrl-C keeps every answer computed before it
    metrics.json    `spatialgeo_core.eval.metrics.aggregate` of the answered questions, plus
                    "num_questions", "num_answered", "errors" (counts by kind) and "run"
    report.md       `spatialgeo_core.eval.report.write_report` (tables, per-category bars, latency
                    histogram), followed by an Errors and a Run section

A record has the fields of the reference generator's answer records (question_id, question,
pred, gt, model_id, qa_info) and: status ("ok" | "error"), error and error_kind (for errors),
latency_ms, timings_ms, num_tokens, score (`ItemScore.to_dict()`), and where the question came
from (bag topic and stamps, or the bench image). Questions that could not be answered (no frame,
bad region, unreadable image, malformed line) are error records: they are counted and listed, and
left out of the scores.

Resuming (`--resume`): questions with an "ok" record are skipped; error records are tried again,
and the newer record replaces the older one. Without --resume, an output directory that already
holds results is refused rather than overwritten. eval-bag keeps what its run was made from in
run.json (run_identity.py) and refuses to resume with another bag or model, or with an answered
question that now asks something else.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from spatialgeo_core.errors import EvalRunError, InterruptedRun, SpatialGeoError
from spatialgeo_core.eval.metrics import aggregate, score_item
from spatialgeo_core.eval.questions import LineError, QuestionRecord, read_questions
from spatialgeo_core.serving import FrameAnswer, answer_frame
from spatialgeo_core.types import GenerationOptions

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
METRICS_FILE = "metrics.json"
MAX_LISTED_ERRORS = 20


# -------------------------------------------------------------------------------------------------
# Records


def result_record(qid: str, question: str, reference: str, category: str, qa_type: str,
                  model_id: str, *, pred: str | None = None,
                  error: BaseException | str | None = None, error_kind: str | None = None,
                  default_unit: str | None = None, **extra) -> dict:
    """One results.jsonl record: an answer (pred) or an error, scored when it is an answer."""
    record = {"question_id": qid, "question": question, "pred": pred, "gt": reference,
              "model_id": model_id, "qa_info": {"type": qa_type, "category": category}}
    if error is None:
        record["status"] = "ok"
        record["score"] = score_item(category, question, pred or "", reference,
                                     default_unit=default_unit).to_dict()
    else:
        record["status"] = "error"
        record["error_kind"] = error_kind or type(error).__name__
        record["error"] = str(error)
    record.update(extra)
    return record


def question_error_record(q: QuestionRecord, error: BaseException, model_id: str,
                          **extra) -> dict:
    return result_record(q.id, q.question, q.reference, q.category, q.qa_type, model_id,
                         error=error, **{"line": q.line, **extra})


def line_error_record(err: LineError, model_id: str) -> dict:
    return {"question_id": err.record_id, "question": None, "pred": None, "gt": None,
            "model_id": model_id, "qa_info": None, "status": "error",
            "error_kind": "QuestionFormatError", "error": err.message, "line": err.line}


def is_ok(record: dict) -> bool:
    return record.get("status") == "ok"


def answer_fields(result: FrameAnswer, latency_ms: float) -> dict:
    """The record fields of an answer."""
    answer = result.answer
    return {"latency_ms": round(latency_ms, 3),
            "timings_ms": {k: round(v, 3) for k, v in answer.timings_ms.items()},
            "num_tokens": answer.num_tokens, "stopped": answer.stopped}


# -------------------------------------------------------------------------------------------------
# results.jsonl


class ResultsWriter:
    """Appends records to a JSONL file, one flushed line each."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self.written = 0

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_results(path: Path) -> list[dict]:
    """The records of a results file; [] when it does not exist. A line that is not a JSON object
    (a write cut short by a crash) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or "question_id" not in record:
                logger.warning("%s:%d is not a result record; skipped", path, lineno)
                continue
            records.append(record)
    return records


def write_results(path: Path, records: Iterable[dict]) -> None:
    """Replace a results file by `records` (written to a temporary file, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def merge_results(records: Iterable[dict]) -> dict[str, dict]:
    """question_id -> its record: an "ok" record wins over an error, a later one over an earlier
    one of the same status."""
    merged: dict[str, dict] = {}
    for record in records:
        qid = str(record["question_id"])
        old = merged.get(qid)
        if old is None or is_ok(record) or not is_ok(old):
            merged[qid] = record
    return merged


def check_out_dir(out_dir: Path, resume: bool, files: Iterable[Path]) -> None:
    """Create out_dir; without resume, refuse when any of `files` already exists."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalRunError(f"--out {out_dir} is a file, not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        existing = sorted(p.name for p in files if Path(p).exists())
        if existing:
            raise EvalRunError(
                f"{out_dir} already holds {', '.join(existing)}: pass --resume to continue that "
                f"run, or choose another --out")


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm progress bar on stderr (a no-op object when disabled)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


# -------------------------------------------------------------------------------------------------
# metrics.json and the report


def _rescore(record: dict, default_unit: str | None):
    qa = record["qa_info"]
    return score_item(qa["category"], record["question"], record.get("pred") or "",
                      record["gt"], default_unit=default_unit)


def finalize(out_dir: Path, records: list[dict], title: str, run_info: dict,
             default_unit: str | None = None) -> dict:
    """Write metrics.json and report.md for `records` (one per question); returns the metrics.

    The answers are scored again here (the rules may have changed since a resumed record was
    written); `run_info` goes into metrics["run"] and the report's Run section.
    """
    from spatialgeo_core.eval.report import write_report

    answered = [r for r in records if is_ok(r)]
    metrics = aggregate(_rescore(r, default_unit) for r in answered)
    metrics["num_questions"] = len(records)
    return write_outputs(out_dir, metrics, records, run_info, title, write_report)


def write_outputs(out_dir: Path, metrics: dict, records: list[dict], run_info: dict, title: str,
                  write_report: Callable[[list[dict], dict, Path, str], Path]) -> dict:
    """Add num_answered, errors and run to the scores in `metrics`, write metrics.json, then
    the report (`write_report(answered records, metrics, out_dir, title)`) followed by its
    Errors and Run sections; returns the metrics."""
    answered = [r for r in records if is_ok(r)]
    errors = [r for r in records if not is_ok(r)]
    metrics["num_answered"] = len(answered)
    metrics["errors"] = error_counts(errors)
    metrics["run"] = run_info
    write_metrics(out_dir, metrics)
    path = write_report(answered, metrics, Path(out_dir), title)
    append_errors_and_run(path, len(records), errors, run_info)
    return metrics


def error_counts(errors: list[dict]) -> dict:
    """{"total", "by_kind"} of error records (metrics["errors"])."""
    by_kind = Counter(str(r.get("error_kind") or "error") for r in errors)
    return {"total": len(errors), "by_kind": dict(sorted(by_kind.items()))}


def write_metrics(out_dir: Path, metrics: dict) -> Path:
    path = Path(out_dir) / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


def append_errors_and_run(report: Path, num_records: int, errors: list[dict],
                          run_info: dict) -> None:
    """Append the Errors section (counts by kind, the first MAX_LISTED_ERRORS listed) and the
    Run section (`run_info` as a table) to a report."""
    by_kind = error_counts(errors)["by_kind"]
    lines = ["## Errors", ""]
    if errors:
        lines += [f"{len(errors)} of {num_records} questions were not answered (not scored):",
                  "", "| kind | count |", "|---|---|"]
        lines += [f"| {kind} | {n} |" for kind, n in by_kind.items()]
        lines += [""]
        for r in errors[:MAX_LISTED_ERRORS]:
            lines.append(f"- `{r['question_id']}`: {r.get('error', '')}")
        if len(errors) > MAX_LISTED_ERRORS:
            lines.append(f"- ... and {len(errors) - MAX_LISTED_ERRORS} more "
                         f"(status \"error\" in {RESULTS_FILE})")
        lines.append("")
    else:
        lines += ["None: every question was answered.", ""]
    lines += ["## Run", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in run_info.items()]
    with Path(report).open("a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(lines) + "\n")


def summary_line(metrics: dict, out_dir: Path) -> str:
    return (f"{metrics['num_answered']} of {metrics['num_questions']} questions answered, "
            f"{metrics['errors']['total']} errors; {Path(out_dir) / 'report.md'}")


def run_info_common(model_id: str, options: GenerationOptions, started: float) -> dict:
    return {"model": model_id, "max_new_tokens": options.max_new_tokens,
            "temperature": options.temperature,
            "elapsed_s": round(time.time() - started, 1)}


# -------------------------------------------------------------------------------------------------
# eval-bag


def evaluate_bag(bag_path: str | Path, questions_path: str | Path, out_dir: str | Path,
                 load_pipeline: Callable[[], object], *, model_id: str = "",
                 options: GenerationOptions | None = None, tolerance_ms: float = 50.0,
                 buffer_size: int = 30, topic: str | None = None,
                 resume: bool = False, default_unit: str | None = None,
                 progress: bool = True, model_dirs: Iterable[str | Path] = (),
                 depth_topic: str | None = None, depth_tolerance_ms: float = 20.0,
                 rectified: bool = False) -> dict:
    """Answer the questions of questions.jsonl about the frames of a bag; returns the metrics.
    When the bag has a depth topic, each answer also gets its regions' 3D positions
    (eval/bag_depth.py: `depth_topic` names one of several, `rectified` reads CameraInfo's P).

    load_pipeline is called once the questions, the output directory and the bag have been
    checked (a SpatialGeoPipeline, or anything with its `frame` and `answer`); model_dirs are
    the directories it loads from (the model and --clip), recorded in run.json by content
    (without them, model_id is). Raises BagError for a bag that cannot be read; when that
    happens part-way, the results computed so far stay in results.jsonl, the questions not
    reached get error records, and metrics.json / report.md describe them all. Ctrl-C raises
    InterruptedRun saying where the answers so far are.
    """
    from spatialgeo_core.eval.bag import Bag, BagError, decode_rgb, match_frames
    from spatialgeo_core.eval.bag_depth import (
        BagDepth,
        append_positions_section,
        position_metrics,
    )
    from spatialgeo_core.eval.run_identity import (
        bag_files,
        check_and_record,
        model_identity,
        question_digest,
    )
    from spatialgeo_core.frames import SelectionPolicy

    started = time.time()
    options = options or GenerationOptions()
    out_dir = Path(out_dir)
    results_path = out_dir / RESULTS_FILE
    if not tolerance_ms >= 0:
        raise EvalRunError(f"--tolerance-ms must be >= 0, got {tolerance_ms}")
    if buffer_size < 1:
        raise EvalRunError("--buffer-size must be >= 1")
    policy = SelectionPolicy(tolerance_ns=round(tolerance_ms * 1e6), max_age_ns=0)
    questions, line_errors = read_questions(questions_path)
    check_out_dir(out_dir, resume, [results_path])
    done = {qid for qid, r in merge_results(read_results(results_path)).items() if is_ok(r)}
    todo = [q for q in questions if q.id not in done]
    todo_lines = [e for e in line_errors if e.record_id not in done]
    run_info = {"bag": str(bag_path), "questions": str(questions_path),
                "tolerance_ms": tolerance_ms, "buffer_size": buffer_size}

    with Bag(bag_path) as bag:
        image_topics = bag.require_image_topics()        # before the model is loaded
        run_info["image_topics"] = ", ".join(t.name for t in image_topics)
        identity = {"bag": {**bag.identity(), "files": bag_files(bag_path)},
                    "model": model_identity(model_dirs, model_id),
                    "questions": {q.id: question_digest(q, topic) for q in questions}}
        check_and_record(out_dir, identity, done)
        depth = BagDepth.open(bag, depth_topic, depth_tolerance_ms, rectified)
        run_info["depth_topic"] = depth.depth_topic if depth is not None else "none"
        pipeline = load_pipeline() if todo else None
        model_id = model_id or str(getattr(pipeline, "model_path", "") or "")
        failure: BagError | None = None
        with ResultsWriter(results_path) as writer, \
                progress_bar(len(todo) + len(todo_lines), "eval-bag", progress) as bar:
            for err in todo_lines:
                writer.write(line_error_record(err, model_id))
                bar.update()
            try:
                for match in match_frames(bag, todo, policy, buffer_size, topic):
                    record, size = _answer_match(pipeline, match, decode_rgb, options, model_id,
                                                 default_unit)
                    if depth is not None and is_ok(record):
                        q = match.question
                        record.update(depth.record_fields(match, q.regions, q.positions, size))
                    writer.write(record)
                    bar.update()
            except BagError as exc:
                failure = exc
            except KeyboardInterrupt:
                raise InterruptedRun(
                    f"{writer.written} results of this run are kept in {results_path}; the same "
                    "command with --resume continues it") from None
        if failure is not None:
            run_info["incomplete"] = str(failure)

    records, stale = _in_question_order(read_results(results_path), questions, line_errors)
    write_results(results_path, records + stale)  # one record per question, in file order
    run_info.update(run_info_common(model_id, options, started))
    metrics = finalize(out_dir, records, "SpatialGeo rosbag evaluation", run_info, default_unit)
    if depth is not None:                         # region positions: metrics and report
        metrics["positions"] = position_metrics(records)
        write_metrics(out_dir, metrics)
        append_positions_section(out_dir / "report.md", metrics["positions"])
    if failure is not None:
        raise BagError(f"{failure}; the {metrics['num_questions']} results computed so far are "
                       f"kept in {results_path} (metrics and report describe them)")
    return metrics


def _answer_match(pipeline, match, decode_rgb, options: GenerationOptions, model_id: str,
                  default_unit: str | None) -> tuple[dict, tuple[int, int] | None]:
    """(the question's record, the (width, height) of its frame when it was answered)."""
    q = match.question
    source = {"line": q.line, "topic": match.topic, "requested_stamp_ns": q.stamp_ns,
              "frame_index": q.frame_index}
    if match.error is not None:
        return question_error_record(q, match.error, model_id, **source), None
    frame = match.frame
    payload = frame.payload                                        # a bag.BagMessage
    source.update(frame_stamp_ns=frame.stamp_ns, frame_id=frame.frame_id,
                  frame_message_index=payload.index,
                  image=f"{match.topic}@{frame.stamp_ns}")
    t0 = time.perf_counter()
    try:
        # the frame is decoded and encoded once and its features kept in the pipeline's feature
        # cache for its other questions, as the node keeps them
        result = answer_frame(pipeline, frame, lambda: decode_rgb(payload), q.question,
                              q.regions, options)               # masks decoded now
    except SpatialGeoError as exc:
        return question_error_record(q, exc, model_id, **source), None
    latency_ms = (time.perf_counter() - t0) * 1000
    return result_record(q.id, q.question, q.reference, q.category, q.qa_type, model_id,
                         pred=result.answer.text, default_unit=default_unit, **source,
                         **answer_fields(result, latency_ms)), result.frame.size


def _in_question_order(records: list[dict], questions: list[QuestionRecord],
                       line_errors: list[LineError]) -> tuple[list[dict], list[dict]]:
    """(one record per question in the order of the questions file, the records of ids the
    file no longer has)."""
    order = sorted([(q.line, q.id) for q in questions]
                   + [(e.line, e.record_id) for e in line_errors])
    return ordered_records(records, [qid for _, qid in order])


def ordered_records(records: Iterable[dict], ids: list[str]) -> tuple[list[dict], list[dict]]:
    """The merged records of `ids`, in that order, and those of other ids (stale: kept in the
    results file, but not scored)."""
    merged = merge_results(records)
    wanted = set(ids)
    stale = [r for qid, r in merged.items() if qid not in wanted]
    if stale:
        logger.warning("%d results are of questions that are no longer asked; they are kept "
                       "in %s but not scored", len(stale), RESULTS_FILE)
    return [merged[qid] for qid in ids if qid in merged], stale
