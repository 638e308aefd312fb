"""report.md of a SpatialScore run: both scoring modes side by side, per source, category and
question type, what was skipped, and plots (the shared helpers of spatialgeo_core.eval.report)."""
from __future__ import annotations

from pathlib import Path

from spatialgeo_core.eval.report import grouped_bar_plot, latency_lines
from spatialgeo_core.eval.spatialscore.scoring import MODES

SOURCE_PLOT = "spatialscore_by_source.png"
CATEGORY_PLOT = "spatialscore_by_category.png"
_QUIRK_TEXT = {
    "first_letter_fallback": "an option read as the first letter a-f anywhere in the answer",
    "right_as_yes": "\"right\" read as yes",
    "unknown_unit_as_cm": "an unknown unit read as cm",
}


def _pct(block: dict | None) -> str:
    return "n/a" if not block or not block["total"] else f"{block['accuracy']:.1f}"


def _score(block: dict | None) -> str:
    return "0 / 0" if not block else f"{block['score_sum']:g} / {block['total']}"


def _group_table(metrics: dict, key: str, label: str, out_dir: Path, plot: str | None,
                 skipped: dict | None = None) -> list[str]:
    names = list(metrics["upstream"][key])
    for name in (skipped or {}):
        if name not in names:
            names.append(name)
    if not names:
        return [f"No items by {label}.", ""]
    head = f"| {label} | upstream % | strict % | score (upstream) | score (strict) |"
    rule = "|---|---|---|---|---|"
    if skipped is not None:
        head, rule = head + " skipped |", rule + "---|"
    lines = [head, rule]
    for name in names:
        blocks = [metrics[mode][key].get(name) for mode in MODES]
        row = (f"| {name} | {_pct(blocks[0])} | {_pct(blocks[1])} | {_score(blocks[0])} | "
               f"{_score(blocks[1])} |")
        if skipped is not None:
            row += f" {skipped.get(name, 0)} |"
        lines.append(row)
    lines.append("")
    answered = [n for n in names if n in metrics["upstream"][key]]
    if plot and answered:
        grouped_bar_plot(answered, {mode: [metrics[mode][key][n]["accuracy"] for n in answered]
                                    for mode in MODES},
                         "accuracy (%)", f"SpatialScore accuracy by {label}", out_dir / plot)
        lines += [f"![accuracy by {label}]({plot})", ""]
    return lines


def write_report(answered: list[dict], metrics: dict, out_dir: Path, title: str) -> Path:
    """Write out_dir/report.md and its plots; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = metrics["skipped"]
    by_modality = ", ".join(f"{m} {n}" for m, n in skipped["by_modality"].items())
    lines = [f"# {title}", "",
             f"Items: {metrics['num_items']}; scored: {metrics['num_answered']}; skipped: "
             f"{skipped['total']}" + (f" ({by_modality})" if by_modality else "")
             + f"; errors: {metrics['errors']['total']}.", ""]
    if skipped["total"]:
        lines += ["Skipped items are multi-image or video items: the pipeline answers about one "
                  "image. Accuracies are over the scored items only, so a source with skipped "
                  "items does not compare with its published number, which counts every item.",
                  ""]
    overall = [metrics[mode]["overall"] for mode in MODES]
    lines += ["## Scores", "",
              "`upstream`: SpatialScore v0's rules, quirks included (comparable with published "
              "numbers). `strict`: the same without the first-letter fallback, \"right\" as yes "
              "and unknown units read as cm.", "",
              "| | upstream | strict |", "|---|---|---|",
              f"| accuracy % | {_pct(overall[0])} | {_pct(overall[1])} |",
              f"| score / total | {_score(overall[0])} | {_score(overall[1])} |", ""]
    quirks = [f"{_QUIRK_TEXT[q]}: {n}" for q, n in metrics["quirks"].items() if n]
    lines += [f"Items the two modes score differently: {metrics['modes_differ']}. Upstream "
              f"quirks that decided a reading: " + ("; ".join(quirks) if quirks else "none")
              + ".", ""]
    lines += ["## By source", ""]
    lines += _group_table(metrics, "by_source", "source", out_dir, SOURCE_PLOT,
                          skipped=skipped["by_source"])
    lines += ["## By category", ""]
    lines += _group_table(metrics, "by_category", "category", out_dir, CATEGORY_PLOT)
    lines += ["## By question type", ""]
    lines += _group_table(metrics, "by_question_type", "question type", out_dir, None)
    lines += latency_lines(answered, out_dir)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
