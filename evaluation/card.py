"""The Leakage Metrics node's table, as markdown and drawn as a small picture (its IMAGE output). No ComfyUI imports."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .ale_metrics import METRICS, EditScores
from .fonts import font as card_font
from .report import HEADS, markdown_table, means, number

BETTER = "lower is better: TELS, TILS, structure distance, LPIPS, MSE; higher: the others"


def table_card(rows: list[list[str]], notes: list[str] = (), font_size: int = 14, margin: int = 10, gap: int = 16) -> np.ndarray:
    """``rows`` of cells in aligned columns (the first row bold-ruled as a head), then ``notes`` lines; float32 H x W x 3."""
    font = card_font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = lambda text: probe.textbbox((0, 0), text or " ", font=font)[2]
    columns = [max(width(row[c]) for row in rows if c < len(row)) for c in range(max(map(len, rows), default=0))]
    step = font_size + 6
    table_width = sum(columns) + gap * max(0, len(columns) - 1)
    canvas_width = max([table_width, *map(width, notes)]) + 2 * margin
    canvas = Image.new("RGB", (canvas_width, step * (len(rows) + len(notes)) + 2 * margin + 4), "white")
    draw = ImageDraw.Draw(canvas)
    y = margin
    for index, row in enumerate(rows):
        x = margin
        for cell, column in zip(row, columns):
            draw.text((x, y), cell, fill=(0, 0, 0), font=font)
            x += column + gap
        y += step
        if index == 0:
            draw.line((margin, y - 3, margin + table_width, y - 3), fill=(0, 0, 0), width=1)
    y += 4
    for note in notes:
        draw.text((margin, y), note, fill=(110, 30, 30), font=font)
        y += step
    return np.asarray(canvas).astype(np.float32) / 255.0


def scores_table(scores: list[EditScores], targets: list[str], notes: list[str] = (), metrics=METRICS) -> tuple[str, np.ndarray]:
    """One row per image (and their mean when there are several): the ``metrics`` (ALE's default ones unless named),
    then each target's CLIPScore; as a markdown table with ``notes`` below it, and as a card."""
    columns = [*metrics, *(f"CLIP '{target}'" for target in targets)]
    rows = [{**s.values, **{f"CLIP '{t}'": v for t, v in s.per_object}} for s in scores]
    body = [[str(i), *(number(c, row[c]) for c in columns)] for i, row in enumerate(rows)]
    if len(rows) > 1:
        body.append(["mean", *(number(c, v) for c, v in means(rows, columns).items())])
    head = ["image", *(HEADS.get(c, c) for c in columns)]
    text = markdown_table(head, body) + "".join(f"\n\n{note}" for note in notes)
    return text, table_card([head, *body], [BETTER, *notes])
