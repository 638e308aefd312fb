"""What an evaluation run was made from, kept as `run.json` in its output directory, so that
`--resume` continues only the run it started.

    {"bag":       {"start_ns", "end_ns", "messages", "topics": {name: [type, count]},
                   "files": {storage file name: {"size", "sha256"}}},
     "model":     {"id"} or {file name: {"size", "sha256"}} of its config and weights,
     "questions": {question id: digest of what the question asks}}

The bag is known by what its index says (times, counts, topics) and by its storage files, the
model by its files (config.json and the weights); a file by its size and 16 blocks spread over
it (cheap for a 14 GB model or a 100 GB bag, and two recordings or two trainings differ in every
block); a question by its text, reference, category, frame, topic and regions. A resumed run
reuses an answer only when the bag and the model are those of run.json and the answered question
has not changed; questions may be added, dropped or fixed (their errors are tried again), the
model may move, and --tolerance-ms / --buffer-size may change.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from spatialgeo_core.errors import EvalRunError
from spatialgeo_core.eval.questions import QuestionRecord

RUN_FILE = "run.json"
SAMPLED_BLOCKS = 16
BLOCK_BYTES = 4096


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_identity(path: Path) -> dict:
    """{"size", "sha256"} of a file: the whole of a small one, sampled blocks of a large one."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= SAMPLED_BLOCKS * BLOCK_BYTES:
            h.update(f.read())
        else:
            for k in range(SAMPLED_BLOCKS):
                f.seek((size - BLOCK_BYTES) * k // (SAMPLED_BLOCKS - 1))
                h.update(f.read(BLOCK_BYTES))
    return {"size": size, "sha256": h.hexdigest()}


def bag_files(path: str | Path) -> dict:
    """The storage files of a bag (a file, or a rosbag2 directory without its metadata.yaml,
    which a reindex rewrites) by content."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        f for f in path.iterdir() if f.is_file() and f.name != "metadata.yaml")
    return {f.name: file_identity(f) for f in files}


def model_identity(model_dirs: Iterable[str | Path], model_id: str) -> dict:
    """The contents of the model's directories (config.json and weight files), or {"id":
    model_id} when no directory is given."""
    from spatialgeo_core.checkpoint.io import find_weights

    out: dict[str, dict] = {}
    for i, d in enumerate(model_dirs):
        d = Path(d)
        files = [d / "config.json", *find_weights(d)] if (d / "config.json").is_file() \
            else find_weights(d)
        out.update({f"{i}/{f.name}": file_identity(f) for f in files})
    return out or {"id": model_id}


def question_digest(q: QuestionRecord, default_topic: str | None) -> str:
    """What a question asks, as a short digest (its id and line number are not part of it)."""
    asked = [q.question, q.reference, q.category, q.qa_type, q.stamp_ns, q.frame_index,
             q.topic or default_topic, [[s.box, s.mask_rle] for s in q.region_specs]]
    return _sha256(json.dumps(asked, sort_keys=True).encode())[:16]


def check_and_record(out_dir: Path, identity: dict, answered: set[str]) -> None:
    """Before a run writes into out_dir: when it would reuse `answered` results, refuse
    (EvalRunError saying what differs) unless run.json records the same bag and model and the
    same questions under those ids; then write run.json for this run."""
    path = Path(out_dir) / RUN_FILE
    recorded: dict = {}
    if answered:
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EvalRunError(
                f"--resume: {out_dir} holds {len(answered)} answers but no {RUN_FILE} saying "
                "which bag, questions and model they are of (written by an older version); "
                "choose another --out") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvalRunError(f"--resume: cannot read {path}: {exc}; choose another --out") \
                from exc
        for key, what in (("bag", "bag"), ("model", "model")):
            if recorded.get(key) != identity[key]:
                raise EvalRunError(
                    f"--resume: the {what} is not the one {out_dir} was made with "
                    f"({_difference(recorded.get(key), identity[key])}); its answers would be "
                    "reused for it: give the same --bag/--model-path, or another --out")
        old = recorded.get("questions") or {}
        changed = sorted(q for q in answered
                         if q in identity["questions"] and old.get(q) != identity["questions"][q])
        if changed:
            shown = ", ".join(changed[:3]) + (f" (+{len(changed) - 3} more)"
                                              if len(changed) > 3 else "")
            raise EvalRunError(
                f"--resume: {len(changed)} answered question(s) of {out_dir} ask something else "
                f"now: {shown}; give them new ids, or use another --out")
    questions = {**(recorded.get("questions") or {}), **identity["questions"]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**identity, "questions": questions}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def _difference(old, new) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "nothing was recorded"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "it differs in " + ", ".join(keys)
