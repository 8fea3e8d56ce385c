"""Labelled mask previews: each object's mask in its own colour with its name written on it."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .ops import PREVIEW_COLORS, preview_overlay


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


def labelled_preview(image: torch.Tensor, masks: torch.Tensor, labels: list[str], warnings: list[str] = ()) -> torch.Tensor:
    """``image`` ``[H, W, 3]`` tinted by ``masks`` ``[N, H, W]``, each label on a tag in its mask's colour, and each
    warning on a dark strip along the bottom edge."""
    tinted = preview_overlay(image, masks)
    canvas = Image.fromarray((tinted * 255).round().to(torch.uint8).cpu().numpy())
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 40))
    bottom = canvas.size[1]
    for warning in reversed(list(warnings)):
        lines = wrap(draw, "! " + warning, font, canvas.size[0] - 8)
        top = bottom - len(lines) * (font.size + 4) - 4
        draw.rectangle((0, top, canvas.size[0], bottom), fill=(40, 0, 0))
        for number, line in enumerate(lines):
            draw.text((4, top + 2 + number * (font.size + 4)), line, fill=(255, 200, 120), font=font)
        bottom = top
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
