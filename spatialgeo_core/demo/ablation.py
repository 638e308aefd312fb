"""The geometry ablation as tables: fused (SpatialGeo) vs CLIP-only (LLaVA-1.5 arrangement) on
the held-out split, per run (one seed of the whole recipe) and pooled over runs, with 95 %
Wilson intervals.

    python -m spatialgeo_core.demo.ablation runs/demo-seed0 runs/demo-seed1 > ablation.md

Reads <run>/<variant>/eval/metrics.json (the bench scorer), reading.json (demo/reading.py: what
the model says of each region) and probe.json (demo/probe.py: what its visual tokens hold of it,
both streams together). Pooled: the runs that hold every variant (a run with only one is shown,
not pooled, so the pooled variants are always compared on the same seeds).
Depth-dependent questions: the behind/front group and the three distance categories (their
answers need each region's metric position); the single-region family: what the model reads of
one region (forward distance, width, height within 25 %) from its description.
After the table, each run and the pooled runs are set against issue 14's targets for the fused
model (TARGETS) and for the geometry's gain on the depth-dependent questions (DEPTH_GAIN points,
with the two 95 % intervals apart), each marked met or not met.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

VARIANTS = {"fused": "SpatialGeo (CLIP + geometry)", "clip_only": "CLIP-only (LLaVA-1.5)"}
DEPTH_GROUPS = ("behind/front",)
DEPTH_CATEGORIES = ("distance_data", "horizontal_distance_data", "vertical_distance_data")
GROUPS = ("left/right", "below/above", "behind/front", "tall/short", "wide/thin", "big/small")
SINGLE = ("ahead", "wide", "tall")
TARGETS = {"mean of groups": 85.0, "every group": 75.0, "quantitative": 55.0}   # fused, %
DEPTH_GAIN = 8.0                     # fused over CLIP-only on depth-dependent, points


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, in percent."""
    if total <= 0:
        return (float("nan"), float("nan"))
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (100 * (centre - half), 100 * (centre + half))


def counts(metrics: dict, reading: dict | None,
           probe: dict | None = None) -> dict[str, tuple[int, int]]:
    """(successes, total) of every reported family of one variant of one run."""
    q, n = metrics["qualitative"], metrics["quantitative"]
    out = {g: (b["correct"], b["total"]) for g, b in q["groups"].items()}
    out["qualitative"] = (q["overall"]["correct"], q["overall"]["total"])
    for c, b in n["categories"].items():
        out[c] = (b["successes"], b["total"])
    out["quantitative"] = (n["overall"]["successes"], n["overall"]["total"])
    out["direction"] = (metrics["direction"]["successes"], metrics["direction"]["total"])
    depth = [out[k] for k in (*DEPTH_GROUPS, *DEPTH_CATEGORIES) if k in out]
    out["depth-dependent"] = (sum(s for s, _ in depth), sum(t for _, t in depth))
    if reading is not None:
        for k in SINGLE:
            total = reading["regions"]
            out[f"read {k}"] = (round(reading[k]["within_25_pct"] * total / 100), total)
            out[f"median {k}"] = (round(reading[k]["median_prior_within_25_pct"] * total / 100),
                                  total)
    if probe is not None:
        streams, total = probe["streams"], probe["test_regions"]
        held = streams.get("both", streams["clip"])
        out["tokens side"] = (round(held["side_right_pct"] * total / 100), total)
        for k in SINGLE:
            out[f"tokens {k}"] = (round(held[k]["within_25_pct"] * total / 100), total)
    return out


def load(run: Path, variant: str) -> dict[str, tuple[int, int]] | None:
    d = Path(run) / variant / "eval"
    if not (d / "metrics.json").is_file():
        return None
    found = {name: json.loads((d / f"{name}.json").read_text())
             for name in ("reading", "probe") if (d / f"{name}.json").is_file()}
    return counts(json.loads((d / "metrics.json").read_text()), found.get("reading"),
                  found.get("probe"))


def mean_of_groups(c: dict[str, tuple[int, int]]) -> float:
    accs = [100 * s / t for g in GROUPS if g in c for s, t in (c[g],) if t]
    return sum(accs) / len(accs) if accs else float("nan")


def _cell(c: dict[str, tuple[int, int]], key: str) -> str:
    if key not in c or not c[key][1]:
        return "-"
    s, t = c[key]
    lo, hi = wilson(s, t)
    return f"{100 * s / t:.1f} ({lo:.0f}-{hi:.0f})"


def pooled(runs: list[dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    keys = set().union(*runs)
    return {k: (sum(r[k][0] for r in runs if k in r), sum(r[k][1] for r in runs if k in r))
            for k in keys}


def paired(runs: dict[str, dict[str, dict]]) -> list[str]:
    """The runs that hold every variant any run holds: the ones pooled, so that the pooled
    variants are compared on the same seeds."""
    every = set().union(*runs.values())
    return [name for name, variants in runs.items() if set(variants) == every]


def with_pooled(runs: dict[str, dict[str, dict]]) -> list[tuple[str, dict[str, dict]]]:
    """(run name, variant -> counts) for each run, then ("pooled", ...) over the paired runs
    when more than one."""
    named = list(runs.items())
    both = paired(runs)
    if len(both) > 1:
        named.append(("pooled", {v: pooled([runs[r][v] for r in both])
                                 for v in VARIANTS if v in runs[both[0]]}))
    return named


def table(runs: dict[str, dict[str, dict]]) -> str:
    """runs: run name -> variant -> counts. Markdown: one row per (run, variant), then pooled."""
    rows = [(name, v, c) for name, variants in with_pooled(runs) for v, c in variants.items()]
    cols = ["qualitative", "mean of groups", *GROUPS, "quantitative", *DEPTH_CATEGORIES,
            "width_data", "height_data", "direction", "depth-dependent",
            *(f"read {k}" for k in SINGLE), "tokens side", *(f"tokens {k}" for k in SINGLE)]
    head = "| run | model | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for name, v, c in rows:
        cells = [f"{mean_of_groups(c):.1f}" if k == "mean of groups" else _cell(c, k)
                 for k in cols]
        lines.append(f"| {name} | {VARIANTS[v]} | " + " | ".join(cells) + " |")
    medians = [c for _, v, c in rows if v == "fused"]
    if medians and all(f"median {k}" in medians[-1] for k in SINGLE):
        cells = ["-"] * len(cols)
        for k in SINGLE:
            cells[cols.index(f"read {k}")] = cells[cols.index(f"tokens {k}")] = _cell(
                medians[-1], f"median {k}")
        lines.append(f"| {rows[-1][0]} | training median (no image) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _pct(c: dict[str, tuple[int, int]], key: str) -> float:
    s, t = c.get(key, (0, 0))
    return 100 * s / t if t else float("nan")


def verdicts(runs: dict[str, dict[str, dict]]) -> str:
    """Markdown list: each run (and the pooled runs, when more than one) against TARGETS and
    DEPTH_GAIN. A family a run lacks counts as not met."""
    lines = ["", "Targets (issue 14):", ""]
    for name, variants in with_pooled(runs):
        fused, clip = variants.get("fused"), variants.get("clip_only")
        if fused is not None:
            groups = {g: _pct(fused, g) for g in GROUPS if fused.get(g, (0, 0))[1]}
            low = min(groups, key=groups.get) if groups else None
            mean, quant = mean_of_groups(fused), _pct(fused, "quantitative")
            low_txt = f"{low} {groups[low]:.1f}" if low else "none"
            lines.append(
                f"- {name}, {VARIANTS['fused']}: mean of groups {mean:.1f} (target "
                f"{TARGETS['mean of groups']:.0f}): {_met(mean >= TARGETS['mean of groups'])}; "
                f"lowest group {low_txt} (target {TARGETS['every group']:.0f} each): "
                f"{_met(len(groups) == len(GROUPS) and groups[low] >= TARGETS['every group'])}; "
                f"quantitative {_cell(fused, 'quantitative')} (target "
                f"{TARGETS['quantitative']:.0f}): {_met(quant >= TARGETS['quantitative'])}")
        if fused is not None and clip is not None:
            f_s, f_t = fused["depth-dependent"]
            c_s, c_t = clip["depth-dependent"]
            gain = _pct(fused, "depth-dependent") - _pct(clip, "depth-dependent")
            apart = f_t > 0 and c_t > 0 and wilson(f_s, f_t)[0] > wilson(c_s, c_t)[1]
            why = "" if apart else " (the intervals overlap)"
            lines.append(
                f"- {name}, depth-dependent: {VARIANTS['fused']} "
                f"{_cell(fused, 'depth-dependent')} vs {VARIANTS['clip_only']} "
                f"{_cell(clip, 'depth-dependent')}: {gain:+.1f} points (target "
                f"+{DEPTH_GAIN:.0f}, intervals apart): {_met(gain >= DEPTH_GAIN and apart)}{why}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spatialgeo_core.demo.ablation",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="reproduce output directories (one a seed)")
    args = p.parse_args(argv)
    runs = {}
    for run in args.runs:
        found = {v: c for v in VARIANTS if (c := load(run, v)) is not None}
        if not found:
            print(f"{run}: no evaluated variant (<run>/<variant>/eval/metrics.json)",
                  file=sys.stderr)
            return 2
        runs[run.name] = found
    sys.stdout.write(table(runs) + verdicts(runs))
    both = paired(runs)
    if len(runs) > 1 and (alone := [r for r in runs if r not in both]):
        print(f"\nNot pooled (they lack a variant the others have): {', '.join(alone)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
