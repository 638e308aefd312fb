"""Markdown evaluation report with PNG plots (matplotlib Agg canvas; no pyplot, no global backend).

`write_report` takes the per-item results (dicts; a "latency_ms" field is used when present) and
the metrics dict of `spatialgeo_core.eval.metrics.aggregate`, and tolerates absent sections.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

QUALITATIVE_PLOT = "qualitative_accuracy.png"
QUANTITATIVE_PLOT = "quantitative_success.png"
LATENCY_PLOT = "latency_hist.png"


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bar_plot(labels: list[str], values: list[float], ylabel: str, title: str, path: Path) -> None:
    grouped_bar_plot(labels, {"": values}, ylabel, title, path)


def grouped_bar_plot(labels: list[str], series: dict[str, list[float]], ylabel: str, title: str,
                     path: Path) -> None:
    """Bars of percentages (0-100) per label, one bar per series side by side (a legend when
    there are several), each with its value above it."""
    colors = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(4.0, (0.6 + 0.5 * len(series)) * len(labels) + 1.5), 3.6),
                 dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for k, (name, values) in enumerate(series.items()):
        offset = (k - (len(series) - 1) / 2) * width
        bars = ax.bar([i + offset for i in range(len(labels))], values, width=width,
                      color=colors[k % len(colors)], label=name or None)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, value),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylim(0, 112)                       # headroom for the value labels above 100 % bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def _latency_plot(latencies: list[float], path: Path) -> None:
    fig = Figure(figsize=(5.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(latencies, bins=min(30, max(5, len(latencies) // 5)), color="#55a868")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("answers")
    ax.set_title("Answer latency")
    fig.tight_layout()
    fig.savefig(path)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of a sorted list (q in [0, 100])."""
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _latencies(results: list[dict]) -> list[float]:
    out = []
    for r in results:
        value = r.get("latency_ms")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out.append(float(value))
    return out


def latency_lines(results: list[dict], out_dir: Path) -> list[str]:
    """The report's Latency section (and its histogram, written to out_dir)."""
    lines = ["## Latency", ""]
    latencies = sorted(_latencies(results))
    if latencies:
        mean = sum(latencies) / len(latencies)
        lines += ["| answers | mean ms | p50 ms | p90 ms | max ms |", "|---|---|---|---|---|",
                  f"| {len(latencies)} | {mean:.1f} | {_percentile(latencies, 50):.1f} | "
                  f"{_percentile(latencies, 90):.1f} | {latencies[-1]:.1f} |", ""]
        _latency_plot(latencies, out_dir / LATENCY_PLOT)
        lines += [f"![latency histogram]({LATENCY_PLOT})", ""]
    else:
        lines += ["No latencies recorded.", ""]
    return lines


def write_report(results: list[dict], metrics: dict, out_dir: Path, title: str) -> Path:
    """Write out_dir/report.md (and its PNG plots); returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    lines.append(f"Items: {metrics.get('num_items', len(results))}; unreadable answers: "
                 f"{_fmt(metrics.get('parse_failures'))}; unreadable references: "
                 f"{_fmt(metrics.get('reference_parse_failures'))}; judge failures: "
                 f"{_fmt(metrics.get('judge_failures', 0))}.")
    lines.append("")

    qual = metrics.get("qualitative") or {}
    groups = qual.get("groups") or {}
    lines += ["## Qualitative", ""]
    if groups:
        lines += ["| group | accuracy % | correct / total | unreadable |", "|---|---|---|---|"]
        for name, block in groups.items():
            lines.append(f"| {name} | {_fmt(block.get('accuracy_pct'))} | "
                         f"{block.get('correct')} / {block.get('total')} | "
                         f"{block.get('parse_failures')} |")
        overall = qual.get("overall") or {}
        lines.append(f"| **overall** | {_fmt(overall.get('accuracy_pct'))} | "
                     f"{overall.get('correct')} / {overall.get('total')} | "
                     f"{overall.get('parse_failures')} |")
        lines += ["", f"Mean of the group accuracies: "
                      f"{_fmt(overall.get('mean_group_accuracy_pct'))} %.", ""]
        plotted = [(n, b["accuracy_pct"]) for n, b in groups.items()
                   if b.get("accuracy_pct") is not None]
        if plotted:
            _bar_plot([n for n, _ in plotted], [v for _, v in plotted], "accuracy (%)",
                      "Qualitative accuracy", out_dir / QUALITATIVE_PLOT)
            lines += [f"![qualitative accuracy]({QUALITATIVE_PLOT})", ""]
    else:
        lines += ["No qualitative items.", ""]

    quant = metrics.get("quantitative") or {}
    categories = quant.get("categories") or {}
    direction = metrics.get("direction") or {}
    has_direction = bool(direction.get("total"))
    lines += ["## Quantitative", ""]
    if categories:
        lines += ["| category | success % (±25 %) | abs rel error | δ<1.25 % | read / total |",
                  "|---|---|---|---|---|"]
        for name, block in categories.items():
            lines.append(f"| {name} | {_fmt(block.get('success_pct'))} | "
                         f"{_fmt(block.get('abs_rel'), 3)} | "
                         f"{_fmt(block.get('delta_1.25_pct'))} | "
                         f"{block.get('parsed')} / {block.get('total')} |")
        overall = quant.get("overall") or {}
        lines += [f"| **overall** | {_fmt(overall.get('success_pct'))} | "
                  f"{_fmt(overall.get('abs_rel'), 3)} | {_fmt(overall.get('delta_1.25_pct'))} | "
                  f"{overall.get('parsed')} / {overall.get('total')} |", ""]
    else:
        lines += ["No distance or size items.", ""]
    if has_direction:
        lines += ["### Direction", "",
                  "| success % (≤ 1 h) | mean error (h) | mean error (°) | read / total |",
                  "|---|---|---|---|",
                  f"| {_fmt(direction.get('success_pct'))} | "
                  f"{_fmt(direction.get('mean_error_hours'), 2)} | "
                  f"{_fmt(direction.get('mean_error_deg'))} | {direction.get('parsed')} / "
                  f"{direction.get('total')} |", ""]
    plotted = [(n, b["success_pct"]) for n, b in categories.items()
               if b.get("success_pct") is not None]
    if has_direction and direction.get("success_pct") is not None:
        plotted.append(("direction", direction["success_pct"]))
    if plotted:
        _bar_plot([n for n, _ in plotted], [v for _, v in plotted], "success (%)",
                  "Quantitative success", out_dir / QUANTITATIVE_PLOT)
        lines += [f"![quantitative success]({QUANTITATIVE_PLOT})", ""]

    lines += latency_lines(results, out_dir)

    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s", path)
    return path
