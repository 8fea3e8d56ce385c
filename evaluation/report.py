"""Tables of ALE-Bench metrics: ALE's CSV (EV = ALE's evaluate/evaluate_ale.py at b57e21e), its means per object
count, per edit type, per both and overall (EV:180-196; pandas' ``mean(numeric_only=True)``, which skips NaN and
ALE's "nan" strings), per benchmark half, and ALE-Edit's Table 1 layout like for like: the paper's row is the whole
benchmark's (both halves, 1-3 objects, the five edit types: 3,000 edits), the run's row names its subset, and where
the paper gives no figure for that subset the report says so. No ComfyUI imports.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

from .ale_metrics import METRICS
from .bench import EDIT_TYPES, OBJECT_COUNTS

# ALE-Edit (ICCV 2025) Table 1, row "ALE": ALE-Bench, 3,000 edits (both halves), 768 px, LCM, 15 steps. The paper gives
# these means for the whole benchmark only: no figure per half, object count or edit type.
PAPER_ALE = {"TELS": 16.03, "TILS": 15.28, "structure_distance": 0.0167, "editing_performance": 22.20,
             "psnr_unedit_part": 30.04, "lpips_unedit_part": 0.0361, "mse_unedit_part": 0.0014, "ssim_unedit_part": 0.9228}
HALVES = ("artificial", "natural")  # ALE-Bench's two halves: 10 images each (the image names' prefixes)
PAPER_EDITS = 3000  # 20 images x 3 object counts x 5 edit types x 10 prompts
# Table 1's column heads, with the better direction
HEADS = {"TELS": "TELS ↓", "TILS": "TILS ↓", "structure_distance": "Structure Distance ↓", "editing_performance": "Editing Performance ↑",
         "psnr_unedit_part": "PSNR ↑", "lpips_unedit_part": "LPIPS ↓", "mse_unedit_part": "MSE ↓", "ssim_unedit_part": "SSIM ↑"}
DIGITS = {"structure_distance": 4, "lpips_unedit_part": 4, "mse_unedit_part": 4, "ssim_unedit_part": 4}
CSV_HEAD = ("file_id", "target_count", "edit_type")  # EV:83-84


def mean(values: Iterable[float | None]) -> float:
    """pandas' column mean: NaN and missing values skipped; NaN when nothing is left."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def means(rows: Sequence[dict], metrics=METRICS) -> dict[str, float]:
    return {metric: mean(row.get(metric) for row in rows) for metric in metrics}


def grouped(rows: Sequence[dict], *keys: str, metrics=METRICS) -> dict[tuple, dict[str, float]]:
    """EV:182-186: the means of the rows sharing the values of ``keys``, in sorted order of those values."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return {group: means(members, metrics) for group, members in sorted(groups.items())}


def number(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{DIGITS.get(metric, 2)}f}"


def write_csv(path: Path, rows: Sequence[dict], metrics=METRICS) -> None:
    """ALE's evaluation CSV (EV:80-85, 158-178): a metric that could not be computed is an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow((*CSV_HEAD, *metrics))
        for row in rows:
            cells = ["" if row.get(m) is None else ("nan" if math.isnan(row[m]) else repr(float(row[m]))) for m in metrics]
            writer.writerow((row["file_id"], row["target_count"], row["edit_type"], *cells))


def markdown_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def span(values: Sequence[int]) -> str:
    values = sorted(values)
    return f"{values[0]}–{values[-1]}" if values == list(range(values[0], values[-1] + 1)) and len(values) > 1 else ", ".join(map(str, values))


def describe(rows: Sequence[dict]) -> str:
    """What part of ALE-Bench ``rows`` are: its halves, object counts and edit types ("artificial half, 1–3 objects,
    all 5 edit types")."""
    if not rows:
        return "no edits"
    halves = sorted({row["half"] for row in rows})
    counts = sorted({int(row["target_count"]) for row in rows})
    types = [t for t in EDIT_TYPES if t in {row["edit_type"] for row in rows}]
    half = "both halves" if halves == list(HALVES) else " and ".join(halves) + (" half" if len(halves) == 1 else " halves")
    kinds = f"all {len(EDIT_TYPES)} edit types" if len(types) == len(EDIT_TYPES) else ("edit type " if len(types) == 1 else "edit types ") + ", ".join(types)
    return f"{half}, {span(counts)} object{'s' if counts != [1] else ''}, {kinds}"


def describe_paper() -> str:
    """The part of ALE-Bench the paper's row covers: all of it."""
    return describe([{"half": h, "target_count": c, "edit_type": t} for h in HALVES for c in OBJECT_COUNTS for t in EDIT_TYPES])


def is_paper_set(rows: Sequence[dict]) -> bool:
    """Whether ``rows`` are the edits of the paper's row: both halves, every object count and edit type, all 3,000."""
    return (len({(row["file_id"], row["target_count"], row["edit_type"]) for row in rows}) == PAPER_EDITS
            and {row["half"] for row in rows} == set(HALVES) and {int(row["target_count"]) for row in rows} == set(OBJECT_COUNTS)
            and {row["edit_type"] for row in rows} == set(EDIT_TYPES))


def table_one(rows: Sequence[dict], label: str) -> str:
    """Table 1's layout like for like: the paper's row (the whole benchmark), the run's row named with its subset, and a
    sentence saying whether they compare."""
    overall = means(rows)
    body = [[f"ALE (paper, Table 1): {describe_paper()}", f"{PAPER_EDITS:,}", *(number(m, PAPER_ALE[m]) for m in METRICS)]]
    like = is_paper_set(rows)
    if not like:
        body.append([f"ALE (paper): {describe(rows)}", "–", *("not reported" for _ in METRICS)])
    body.append([f"{label}: {describe(rows)}", f"{len(rows):,}", *(number(m, overall[m]) for m in METRICS)])
    table = markdown_table(["Method", "edits", *(HEADS[m] for m in METRICS)], body)
    if like:
        return table + f"\n\nLike for like: this run scored the {PAPER_EDITS:,} edits of the paper's row."
    return table + (f"\n\nNot like for like: the paper reports ALE-Bench as a whole only ({PAPER_EDITS:,} edits); it gives no figure "
                    f"for this run's {len(rows):,} edits ({describe(rows)}), so its whole-benchmark row is no measure of them.")


def breakdown(rows: Sequence[dict], *keys: str, metrics=METRICS) -> str:
    names = {"target_count": "objects", "edit_type": "edit type", "half": "half"}
    counts: dict[tuple, int] = {}
    for row in rows:
        group = tuple(row[key] for key in keys)
        counts[group] = counts.get(group, 0) + 1
    body = [[*map(str, group), str(counts[group]), *(number(m, values[m]) for m in metrics)]
            for group, values in grouped(rows, *keys, metrics=metrics).items()]
    return markdown_table([*(names[k] for k in keys), "edits", *(HEADS.get(m, m) for m in metrics)], body)


def report(rows: Sequence[dict], label: str, notes: Sequence[str] = (), metrics=METRICS) -> str:
    """The markdown report: how the run was made, Table 1 like for like, then the means per half, per object count, per
    edit type and per both (no paper figures: the paper gives none for them)."""
    parts = ["# ALE-Bench", ""]
    if notes:
        parts += ["## This run", "", *(f"- {note}" for note in notes), ""]
    parts += ["## Table 1 (ALE-Edit, ICCV 2025), like for like", "", table_one(rows, label), ""]
    if not rows:
        return "\n".join(parts) + "\n"
    parts += ["## Per group", "", "ALE-Edit's paper gives no figure per half, object count or edit type: these are this run's means only.", "",
              "### Per half", "", breakdown(rows, "half", metrics=metrics), "",
              "### Per object count", "", breakdown(rows, "target_count", metrics=metrics), "",
              "### Per edit type", "", breakdown(rows, "edit_type", metrics=metrics), "",
              "### Per object count and edit type", "", breakdown(rows, "target_count", "edit_type", metrics=metrics)]
    return "\n".join(parts) + "\n"
