"""Labelled mask previews (each object's mask in its own colour with its name on it) and attention heat panels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..evaluation.fonts import font as text_font
from .ops import PREVIEW_COLORS, preview_overlay

WARNING_SHARE = 0.25  # the most of a preview's height the warning strip may cover: the masks stay visible


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """``text`` broken into lines of at most ``width`` pixels, at spaces."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line] if line else lines


def label_anchor(mask: torch.Tensor) -> tuple[int, int]:
    """Top-left corner of the mask's bounding box (0, 0 for an empty mask)."""
    rows, cols = mask.nonzero(as_tuple=True)
    return (int(cols.min()), int(rows.min())) if len(rows) else (0, 0)


def fit_lines(draw: ImageDraw.ImageDraw, lines: list[str], font, width: int, count: int) -> list[str]:
    """The first ``count`` of ``lines``, the last one shown cut with "…" when lines were left out."""
    if len(lines) <= count:
        return lines
    kept, last = lines[: max(count, 1)], lines[max(count, 1) - 1]
    while last and draw.textlength(last + " …", font=font) > width:
        last = last[:-1]
    return kept[:-1] + [last.rstrip() + " …"]


def labelled_preview(image: torch.Tensor, masks: torch.Tensor, labels: list[str], warnings: list[str] = ()) -> torch.Tensor:
    """``image`` ``[H, W, 3]`` tinted by ``masks`` ``[N, H, W]``, each label on a tag in its mask's colour, and the
    warnings on a dark strip along the bottom edge, wrapped at spaces and cut to at most :data:`WARNING_SHARE` of the
    height (the node shows them in full)."""
    tinted = preview_overlay(image, masks)
    canvas = Image.fromarray((tinted * 255).round().to(torch.uint8).cpu().numpy())
    draw = ImageDraw.Draw(canvas)
    font = text_font(max(9, min(canvas.size) // 40))
    step = font.size + 3
    if warnings:
        lines = [line for warning in warnings for line in wrap(draw, "! " + warning, font, canvas.size[0] - 8)]
        lines = fit_lines(draw, lines, font, canvas.size[0] - 8, int(canvas.size[1] * WARNING_SHARE - 4) // step)
        top = canvas.size[1] - len(lines) * step - 4
        draw.rectangle((0, top, canvas.size[0], canvas.size[1]), fill=(40, 0, 0))
        for number, line in enumerate(lines):
            draw.text((4, top + 2 + number * step), line, fill=(255, 200, 120), font=font)
    taken: set[tuple[int, int]] = set()
    for index, (mask, label) in enumerate(zip(masks, labels)):
        color = tuple(round(255 * c) for c in PREVIEW_COLORS[index % len(PREVIEW_COLORS)])
        x, y = label_anchor(mask > 0.5)
        while (x, y) in taken:  # tags of masks sharing a corner (e.g. full-image masks) stack downwards
            y += font.size + 8
        taken.add((x, y))
        left, top, right, bottom = draw.textbbox((x + 3, y + 3), label, font=font)
        draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=color)
        draw.text((x + 3, y + 3), label, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0)


HEAT_STOPS = ((0.0, 0.0, 0.0), (0.34, 0.06, 0.43), (0.80, 0.20, 0.32), (0.99, 0.60, 0.08), (0.99, 1.0, 0.64))  # black to pale yellow


def heat_colors(values: torch.Tensor) -> torch.Tensor:
    """``values`` in [0, 1] (any shape) -> RGB (shape + [3]), piecewise linear through :data:`HEAT_STOPS`."""
    stops = torch.tensor(HEAT_STOPS, dtype=torch.float32)
    position = values.float().clamp(0, 1) * (len(HEAT_STOPS) - 1)
    low = position.floor().long().clamp(max=len(HEAT_STOPS) - 2)
    frac = (position - low).unsqueeze(-1)
    return stops[low] * (1 - frac) + stops[low + 1] * frac


def mask_outline(mask: torch.Tensor, thickness: int = 2) -> torch.Tensor:
    """The boundary pixels of a binary ``[H, W]`` mask (inside pixels next to the outside), ``thickness`` px wide."""
    mask = (mask > 0.5).float()[None, None]
    eroded = -F.max_pool2d(-mask, 2 * thickness + 1, stride=1, padding=thickness)
    return (mask - eroded)[0, 0] > 0


def heat_panel(image: torch.Tensor, heat: torch.Tensor, mask: torch.Tensor, label: str, alpha: float = 0.65) -> torch.Tensor:
    """``image`` [H, W, 3] under ``heat`` [h, w] (scaled by its maximum, bilinear to the image), ``mask``'s outline in white, ``label`` on top."""
    height, width = image.shape[:2]
    heat = F.interpolate(heat[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    colored = heat_colors(heat / heat.max().clamp_min(1e-12))
    out = image.float().cpu() * (1 - alpha) + colored * alpha
    outline = mask_outline(F.interpolate(mask[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0])
    out[outline] = 1.0
    canvas = Image.fromarray((out.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    draw = ImageDraw.Draw(canvas)
    font = text_font(max(10, min(canvas.size) // 22))
    left, top, right, bottom = draw.textbbox((4, 4), label, font=font)
    draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=(0, 0, 0))
    draw.text((4, 4), label, fill=(255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0)


@dataclass(frozen=True)
class MapRow:
    """One row of the Attention Map Preview: ``maps`` ``[R, N, h, w]`` of ``kind`` (target or source), a name and a leak
    ``[R, N]`` per object."""

    kind: str
    maps: torch.Tensor
    names: list[str]
    leaks: torch.Tensor


def attention_panels(image: torch.Tensor, sets: torch.Tensor, rows: list[MapRow]) -> tuple[torch.Tensor, list[str]]:
    """Per image of ``maps`` (``image`` ``[B, H, W, 3]`` and mask ``sets`` ``[I, N, H, W]`` repeat when shorter), one heat
    panel per object side by side, a strip per row; and a line per panel with its leak."""
    panels, lines = [], []
    for image_index in range(rows[0].maps.shape[0]):
        picture, regions = image[image_index % image.shape[0]], sets[image_index % sets.shape[0]]
        strips = []
        for row in rows:
            cells = []
            for index, name in enumerate(row.names):
                leak = float(row.leaks[image_index, index])
                cells.append(heat_panel(picture, row.maps[image_index, index], regions[index], f"{name}: leak {leak:.3f}"))
                lines.append(f"image {image_index}, {row.kind} {index + 1} ({name}): leak {leak:.4f} (share of its attention outside its "
                             "region, on each layer's own grid)")
            strips.append(torch.cat(cells, dim=1))
        panels.append(torch.cat(strips, dim=0))
    return torch.stack(panels), lines
