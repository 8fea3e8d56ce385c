"""Tables of ALE-Bench metrics: ALE's CSV (EV = ALE's evaluate/evaluate_ale.py at b57e21e), its means per object
count, per edit type, per both and overall (EV:180-196; pandas' ``mean(numeric_only=True)``, which skips NaN and
ALE's "nan" strings), and ALE-Edit's Table 1 layout beside the paper's figures. No ComfyUI imports.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

from .ale_metrics import METRICS

# ALE-Edit (ICCV 2025) Table 1, row "ALE": ALE-Bench, 3,000 edits (both halves), 768 px, LCM, 15 steps.
PAPER_ALE = {"TELS": 16.03, "TILS": 15.28, "structure_distance": 0.0167, "editing_performance": 22.20,
             "psnr_unedit_part": 30.04, "lpips_unedit_part": 0.0361, "mse_unedit_part": 0.0014, "ssim_unedit_part": 0.9228}
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


def table_one(rows: Sequence[dict], label: str) -> str:
    """Table 1's layout: the paper's ALE row and this run's overall means."""
    overall = means(rows)
    body = [["ALE (paper, 3,000 edits)", *(number(m, PAPER_ALE[m]) for m in METRICS)],
            [f"{label} ({len(rows)} edits)", *(number(m, overall[m]) for m in METRICS)]]
    return markdown_table(["Method", *(HEADS[m] for m in METRICS)], body)


def breakdown(rows: Sequence[dict], *keys: str) -> str:
    names = {"target_count": "objects", "edit_type": "edit type"}
    counts: dict[tuple, int] = {}
    for row in rows:
        group = tuple(row[key] for key in keys)
        counts[group] = counts.get(group, 0) + 1
    body = [[*map(str, group), str(counts[group]), *(number(m, values[m]) for m in METRICS)]
            for group, values in grouped(rows, *keys).items()]
    return markdown_table([*(names[k] for k in keys), "edits", *(HEADS[m] for m in METRICS)], body)


def report(rows: Sequence[dict], label: str, notes: Sequence[str] = ()) -> str:
    """The markdown report: Table 1 beside the paper, then the means per object count, per edit type, per both."""
    parts = ["# ALE-Bench", "", "## Table 1 (ALE-Edit, ICCV 2025) layout", "", table_one(rows, label), "",
             "## Per object count", "", breakdown(rows, "target_count"), "",
             "## Per edit type", "", breakdown(rows, "edit_type"), "",
             "## Per object count and edit type", "", breakdown(rows, "target_count", "edit_type")]
    if notes:
        parts += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(parts) + "\n"
